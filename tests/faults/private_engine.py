"""A private dockerd for tests that kill the engine: its own socket, data, exec root and cgroups.

The main engine on /var/run/docker.sock is shared with every other test that
runs concurrently, so a test that SIGKILLs an engine needs one of its own.
This one lives entirely under one temp dir on the same disk (``docker.sock``,
``data/``, ``exec/`` with its containerd state, ``docker.pid``, ``dockerd.log``),
has no bridge, no iptables rules and no IP forwarding, its containers run
with ``--network none`` under a cgroup parent of its own, and a
``daemon.json`` of its own keeps any host-wide config out.

It runs in a network namespace of its own (``unshare --net``): a dockerd
started with ``--bridge=none`` and no running containers *deletes the host's
docker0* (libnetwork's removeDefaultBridgeInterface), which is the main
engine's bridge. Its API is a unix socket on the filesystem, reachable from
every namespace. :meth:`PrivateEngine.start` checks that docker0 survived.

:meth:`PrivateEngine.teardown` undoes everything, even after a failed test or
a half-started daemon: containers, the daemon, containerd and its shims
(found by their command line naming this engine's dir), processes left in the
engine's cgroups, every mount under the dir, the cgroup dirs, the dir itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.engine import TEST_IMAGE

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: How long a start may take before the fixture gives up (the notes saw ~0.5-2 s).
START_TIMEOUT = 60.0


def _pid_runs(pid: int, name: str) -> bool:
    """Return True when ``pid`` is alive, not a zombie, and its command is ``name``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state != "Z" and comm == name


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class PrivateEngine:
    """One dockerd under a temp dir; start, SIGKILL, restart, and remove without a trace."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="sysinner-faults-engine-", dir="/tmp"))
        self.cgroup_parent = f"sysinner-faults-{self.root.name.rsplit('-', 1)[-1]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        (self.root / "daemon.json").write_text("{}\n")

    # -- paths ---------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """Return the engine's API socket."""
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        """Return the DOCKER_HOST value of this engine."""
        return f"unix://{self.socket_path}"

    @property
    def pidfile(self) -> Path:
        """Return dockerd's pid file."""
        return self.root / "docker.pid"

    @property
    def containerd_pidfile(self) -> Path:
        """Return the pid file of the containerd this dockerd supervises."""
        return self.root / "exec" / "containerd" / "containerd.pid"

    @property
    def log_path(self) -> Path:
        """Return dockerd's log (containerd logs into it too)."""
        return self.root / "dockerd.log"

    def argv(self) -> list[str]:
        """Return dockerd's command line (unshare execs dockerd: the pid is dockerd's)."""
        return [
            "unshare",
            "--net",
            "--",
            "dockerd",
            "--host",
            self.host,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.pidfile),
            "--config-file",
            str(self.root / "daemon.json"),
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--cgroup-parent",
            f"/{self.cgroup_parent}",
        ]

    # -- life cycle ----------------------------------------------------------

    def answers(self) -> bool:
        """Return True when the engine answers ``/_ping`` on its socket."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket_path))
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def clear_stale_pidfiles(self) -> list[str]:
        """Remove pid files whose pid is gone, a zombie, or another program; return them."""
        removed = []
        for path, name in ((self.pidfile, "dockerd"), (self.containerd_pidfile, "containerd")):
            pid = _read_pid(path)
            if path.exists() and (pid is None or not _pid_runs(pid, name)):
                path.unlink()
                removed.append(str(path))
        return removed

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start dockerd detached and return the monotonic time it first answered."""
        assert self.proc is None or self.proc.poll() is not None, "dockerd is already running"
        self.clear_stale_pidfiles()
        host_bridge = Path("/sys/class/net/docker0").exists()
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1}: {' '.join(self.argv())}\n".encode())
            log.flush()
            # Its own session, and no fd of ours but the log: dockerd must not hold
            # a pipe or lock of pytest's for its life (close_fds is the default).
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"private dockerd exited during start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"private dockerd did not answer within {timeout:g}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        answered = time.monotonic()
        if host_bridge and not Path("/sys/class/net/docker0").exists():
            raise RuntimeError("starting the private dockerd removed the main engine's docker0")
        return answered

    def kill(self, timeout: float = 20.0) -> None:
        """SIGKILL dockerd (containerd dies with it); return once both are gone."""
        assert self.proc is not None, "dockerd was never started"
        assert self.proc.poll() is None, "dockerd is not running"
        containerd = _read_pid(self.containerd_pidfile)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while containerd is not None and _pid_runs(containerd, "containerd"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd {containerd} outlived its dockerd")
            time.sleep(0.05)

    def docker(self, *args: str, timeout: float = 60.0, stdin: bytes | None = None) -> str:
        """Run the docker CLI against this engine; return stdout; raise on failure."""
        done = subprocess.run(
            ["docker", "-H", self.host, *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}"
            )
        return done.stdout.decode()

    def load_image(self, image: str = TEST_IMAGE) -> None:
        """Copy ``image`` from the main engine into this one (no registry involved)."""
        saved = subprocess.run(
            ["docker", "save", image], capture_output=True, timeout=120, check=True
        ).stdout
        self.docker("load", stdin=saved, timeout=120)

    def run_idle(self, name: str, *extra: str) -> str:
        """Start an idle container named ``name`` with no network; return its id."""
        return self.docker(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            *extra,
            TEST_IMAGE,
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
        ).strip()

    def inspect(self, name: str) -> dict[str, object]:
        """Return the engine's inspect document of a container."""
        doc: list[dict[str, object]] = json.loads(self.docker("inspect", name))
        return doc[0]

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of dockerd's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    # -- teardown ------------------------------------------------------------

    def _own_processes(self) -> list[int]:
        """Return pids of processes whose command line names this engine's dir (shims)."""
        marker = str(self.root).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
        return pids

    def _cgroup_dirs(self) -> list[Path]:
        """Return this engine's cgroup dirs in every hierarchy, deepest first."""
        dirs: list[Path] = []
        for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
            top = hierarchy / self.cgroup_parent
            if top.is_dir():
                dirs.extend(sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True))
                dirs.append(top)
        return sorted(dirs, key=lambda p: len(p.parts), reverse=True)

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for d in self._cgroup_dirs():
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return pids

    def _mounts(self) -> list[str]:
        """Return mount points at or under the engine's dir, deepest first."""
        prefix = str(self.root)
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
        return sorted(set(points), key=lambda p: p.count("/"), reverse=True)

    def _stop_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                ids = self.docker("ps", "-aq", timeout=20).split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        # A dockerd not started by this object (a crashed earlier start) by its pid file.
        pid = _read_pid(self.pidfile)
        if pid is not None and _pid_runs(pid, "dockerd"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def teardown(self) -> list[str]:
        """Remove every trace of the engine; return what could not be removed (empty: all)."""
        problems: list[str] = []
        try:
            self._stop_daemon()
        except Exception as e:  # noqa: BLE001 - keep tearing down whatever failed
            problems.append(f"stopping dockerd: {e!r}")
        deadline = time.monotonic() + 20
        while True:
            leftovers = set(self._own_processes()) | self._cgroup_pids()
            if not leftovers or time.monotonic() > deadline:
                break
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if leftovers:
            problems.append(f"processes still alive: {sorted(leftovers)}")
        for point in self._mounts():
            done = subprocess.run(["umount", point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        if self._mounts():
            problems.append(f"mounts left: {self._mounts()}")
        for d in self._cgroup_dirs():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        if self._cgroup_dirs():
            problems.append(f"cgroup dirs left: {self._cgroup_dirs()}")
        if not self._mounts():
            shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            problems.append(f"{self.root} left")
        return problems
