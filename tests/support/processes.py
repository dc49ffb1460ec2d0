"""Child processes of the tests: a logged service, the exporter as a process, /proc samples."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.faults import run_dir
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.scraping import Scrape, parse_scrape
from tests.support.waiting import wait_until

EXPORTER_BIN = ROOT / ".venv" / "bin" / "sysinner-exporter"


@dataclass
class Service:
    """One child process, its port and its log file."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the service's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process with stdout and stderr going to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(self.argv) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
            )

    def running(self) -> bool:
        """Return True while the process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=grace)

    def tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])


# -- /proc ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """What /proc says about a process at one moment."""

    at: float
    rss_kib: int
    fds: int
    sockets: int
    threads: int
    tcp_established: int
    tcp_close_wait: int


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_states(pid: int, inodes: set[str]) -> Counter[str]:
    states: Counter[str] = Counter()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                states[cols[3]] += 1
    return states


def proc_sample(pid: int) -> ProcSample:
    """Return RSS, open fds, sockets, threads and TCP states of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    inodes = _socket_inodes(pid)
    states = _tcp_states(pid, inodes)
    return ProcSample(
        at=time.monotonic(),
        rss_kib=int(fields["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        sockets=len(inodes),
        threads=int(fields["Threads"]),
        tcp_established=states["01"],
        tcp_close_wait=states["08"],
    )


def slope_per_second(points: Sequence[tuple[float, float]]) -> float:
    """Return the least-squares slope of (t, y) points, y units per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in points) / var


class RssSampler:
    """Samples a process once per ``every`` seconds in the background."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[ProcSample] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(proc_sample(self.pid))
            await asyncio.sleep(self.every)

    def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def slope_kib_per_s(self, skip_seconds: float = 0.0) -> float:
        """Return the RSS slope in KiB/s, ignoring the first ``skip_seconds`` (warm-up)."""
        if not self.samples:
            return 0.0
        t0 = self.samples[0].at
        points = [(s.at - t0, float(s.rss_kib)) for s in self.samples if s.at - t0 >= skip_seconds]
        return slope_per_second(points)


# -- the exporter as a child process ---------------------------------------------


@dataclass
class ExporterProcess:
    """``sysinner-exporter serve`` as a child process on a free loopback port."""

    name: str
    args: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    service: Service | None = None

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Return the process id."""
        assert self.service is not None
        assert self.service.proc is not None
        return self.service.proc.pid

    def start(self) -> None:
        """Start it, logging to the run's artifacts dir."""
        argv = [
            str(EXPORTER_BIN),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            *self.args,
            "serve",
        ]
        self.service = Service(self.name, argv, self.port, run_dir() / f"{self.name}.log", self.env)
        self.service.start()

    def running(self) -> bool:
        """Return True while the process runs."""
        return self.service is not None and self.service.running()

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 30) -> None:
        """Return once /readyz answers 200 (the first poll succeeded)."""
        assert self.service is not None

        async def ready() -> bool:
            async with session.get(self.url + "/readyz") as r:
                return r.status == 200

        await wait_until(ready, within, f"{self.name} /readyz", services=[self.service])

    async def scrape(self, session: aiohttp.ClientSession) -> Scrape:
        """Return one parsed scrape (it must answer 200)."""
        async with session.get(self.url + "/metrics") as r:
            assert r.status == 200, await r.text()
            return parse_scrape(await r.text())

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        assert self.service is not None
        assert self.service.proc is not None
        self.service.proc.kill()
        self.service.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.service is not None:
            self.service.stop()

    def tail(self) -> str:
        """Return the end of its log."""
        return self.service.tail() if self.service is not None else "(not started)"


def api_exporter(
    name: str, token: str, state: Path, tmp_path: Path, *flags: str, env: Mapping[str, str] = {}
) -> ExporterProcess:
    """Return ``serve`` with the API on ``token``, its state in ``state``, pods under ``tmp_path``.

    It polls every second; ``flags`` and ``env`` are added to the command and its environment.
    """
    return ExporterProcess(
        name,
        [
            "--poll.interval",
            "1",
            "--state.dir",
            str(state),
            "--pod.base-dir",
            str(tmp_path / "pods"),
            "--host.prefix",
            str(tmp_path / "innerstack"),
            *flags,
        ],
        env={"SYSINNER_EXPORTER_API_TOKEN": token, **env},
    )
