"""Cgroup source benchmarks: the kernel's files against the engine, netdata and scale.

One run, the same 50 running containers on the real engine:

- one stats read of all 50 through the cgroup source, through the Docker API
  path (one-shot calls, all in flight, after a quiet gap and back to back)
  and with ``docker stats --no-stream``: wall time, the CPU our process
  spends (``time.process_time``, worker threads included) and the engine's
  (dockerd, containerd and the shims, from /proc/<pid>/stat before and
  after; the docker CLI's own CPU from the children's rusage);
- a full poll (``Poller.poll_once``: list, inspect, stats, process
  counts) wired as the exporter wires it, through either source;
- Debian's netdata as the cgroup-reading peer, started by hand on loopback
  with ``update every = 10``: the CPU per second of its cgroups threads
  (collection and discovery, from /proc/<pid>/task/<tid>/schedstat) and of
  all its processes, over the same window as our exporter serving with the
  cgroup source at ``--poll.interval=10``;
- synthetic v1 trees of 1,000 and 5,000 containers (the recorded files of
  tests/data/cgroup/v1, copied per container into a temp dir) for scaling.
  They are plain files, cheaper for the kernel to produce than its own
  cgroup files (memory.stat is generated at each read), so they show how
  our side grows, not the kernel's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.containers import docker_stats_once, idle_containers
from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerInfo, ContainerState
from exporter.snapshot import Snapshot
from exporter.sources.base import DriverStatsSource, SourcedStats, StatsResult, StatsSource
from exporter.sources.cgroup import CgroupStatsSource
from exporter.wiring import build_driver, build_poller

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
RECORDED_V1 = ROOT / "tests" / "data" / "cgroup" / "v1"
#: Like tests/support/engine.py's IDLE_CMD (exits on SIGTERM), but wakes once an hour.
N = 50
#: The exporter's default poll interval, and netdata's "update every" here.
INTERVAL = 10
QUIET_GAP = 3.0
CGROUP_POLLS = 30
API_POLLS = 3
NETDATA_WINDOW = 60.0
IDLE_WINDOW = 20.0
SCALES = (1000, 5000)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting from /proc ------------------------------------------------


def _proc_cpu(pid: int, children: bool = False) -> float:
    """Return a process's CPU seconds so far (its reaped children's too, if asked)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _engine_pids() -> list[int]:
    """Return dockerd, containerd and every containerd shim."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            comm = _comm(int(entry))
            if comm in ("dockerd", "containerd") or comm.startswith("containerd-shim"):
                pids.append(int(entry))
    return pids


def _engine_cpu() -> dict[int, float]:
    return {pid: _proc_cpu(pid) for pid in _engine_pids()}


def _engine_delta(before: dict[int, float]) -> float:
    after = _engine_cpu()
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Row:
    """One measured way of reading the stats of the containers."""

    what: str
    containers: int
    wall: float
    ours: float
    engine: float

    @property
    def total(self) -> float:
        """Return our CPU plus the engine's per poll."""
        return self.ours + self.engine


# -- containers -----------------------------------------------------------------


async def _inspect_all(driver: DockerDriver, names: Sequence[str]) -> list[ContainerInfo]:
    infos = await asyncio.gather(*(driver.container_inspect(n) for n in names))
    assert all(i.state is ContainerState.RUNNING and i.pid for i in infos), infos
    return list(infos)


# -- one stats read, three ways -------------------------------------------------


async def _timed(
    poll: Callable[[], Awaitable[T]], check: Callable[[T], None], polls: int, gap: float
) -> tuple[T, float, float, float]:
    """Run ``poll`` ``polls`` times, ``check`` each result; return the last, and the figures.

    The figures are the median wall time, the median CPU of this process,
    and the engine's mean CPU: it is counted in 10 ms ticks, so a median
    would be 0.
    """
    walls, ours, engine = [], [], []
    result: T | None = None
    for _ in range(polls):
        if gap:
            await asyncio.sleep(gap)
        before = _engine_cpu()
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = await poll()
        walls.append(time.perf_counter() - t0)
        ours.append(time.process_time() - cpu0)
        engine.append(_engine_delta(before))
        check(result)
    assert result is not None
    return result, statistics.median(walls), statistics.median(ours), statistics.mean(engine)


def _all_sampled(results: dict[str, StatsResult]) -> None:
    bad = [r for r in results.values() if not isinstance(r, SourcedStats)]
    assert not bad, bad[:3]


async def _time_reads(
    what: str,
    source: StatsSource,
    infos: Sequence[ContainerInfo],
    polls: int,
    gap: float,
) -> Row:
    _, wall, ours, engine = await _timed(lambda: source.read_many(infos), _all_sampled, polls, gap)
    return Row(what, len(infos), wall, ours, engine)


def _docker_stats_row(names: Sequence[str]) -> Row:
    walls, cli, engine = [], [], []
    for _ in range(API_POLLS):
        time.sleep(QUIET_GAP)
        before, children = _engine_cpu(), _children_cpu()
        t0 = time.perf_counter()
        docker_stats_once(names)
        walls.append(time.perf_counter() - t0)
        cli.append(_children_cpu() - children)
        engine.append(_engine_delta(before))
    return Row(
        "`docker stats --no-stream`",
        len(names),
        statistics.median(walls),
        statistics.median(cli),
        statistics.mean(engine),
    )


async def _full_poll_row(what: str, kind: str, processes: bool, polls: int, gap: float) -> Row:
    settings = Settings(stats_source=kind, collect_processes=processes, poll_timeout=30)
    driver = build_driver(settings)
    try:
        poller = build_poller(settings, driver)
        await poller.poll_once()  # warm: inspects cached, files located

        def engine_up(snapshot: Snapshot) -> None:
            assert snapshot.engine_up, snapshot.error

        snapshot, wall, ours, engine = await _timed(poller.poll_once, engine_up, polls, gap)
        with_stats = sum(1 for s in snapshot.containers if s.stats is not None)
        return Row(what, with_stats, wall, ours, engine)
    finally:
        await driver.close()


async def real_engine_rows(names: Sequence[str]) -> list[Row]:
    """Measure one stats read and one full poll of ``names`` every way."""
    driver = DockerDriver(stats_timeout=30, max_connections=256)
    try:
        infos = await _inspect_all(driver, names)
        cgroup = CgroupStatsSource()
        await cgroup.read_many(infos)  # first read: locate and open
        rows = [
            await _time_reads("cgroup source: stats of all", cgroup, infos, CGROUP_POLLS, gap=0.0),
            await _time_reads(
                "Docker API path: stats of all, after 3 s quiet",
                DriverStatsSource(driver),
                infos,
                API_POLLS,
                gap=QUIET_GAP,
            ),
            await _time_reads(
                "Docker API path: stats of all, back to back",
                DriverStatsSource(driver),
                infos,
                API_POLLS,
                gap=0.0,
            ),
        ]
        cgroup.close()
    finally:
        await driver.close()
    rows.append(_docker_stats_row(names))
    for what, kind, processes, polls, gap in (
        ("full poll (list, inspect, stats), cgroup source", "cgroup", False, CGROUP_POLLS, 0.0),
        ("the same with process counts", "cgroup", True, CGROUP_POLLS, 0.0),
        (
            "full poll (list, inspect, stats), Docker API path",
            "docker",
            False,
            API_POLLS,
            QUIET_GAP,
        ),
    ):
        rows.append(await _full_poll_row(what, kind, processes, polls, gap))
    return rows


# -- netdata, the cgroup-reading peer ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_netdata() -> str:
    """Return netdata's path, installing Debian's package (without starting it) if needed."""
    found = shutil.which("netdata") or (
        "/usr/sbin/netdata" if os.path.exists("/usr/sbin/netdata") else None
    )
    if found:
        return found
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "netdata"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    finally:
        if made_policy:
            policy.unlink()
    return shutil.which("netdata") or "/usr/sbin/netdata"


def _netdata_conf(workdir: Path, port: int) -> Path:
    for sub in ("cache", "lib", "log", "run"):
        (workdir / sub).mkdir()
    conf = workdir / "netdata.conf"
    conf.write_text(
        f"""[global]
    run as user = root
    update every = {INTERVAL}
    hostname = bench
[db]
    mode = ram
[directories]
    cache = {workdir}/cache
    lib = {workdir}/lib
    log = {workdir}/log
    run = {workdir}/run
[logs]
    access = none
[web]
    bind to = 127.0.0.1:{port}
[registry]
    enabled = no
[health]
    script to execute on alarm = /bin/true
[cloud]
    enabled = no
[statsd]
    enabled = no
[plugin:cgroups]
    use unified cgroups = no
"""
    )
    return conf


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return json.loads(response.read())


def _netdata_sees(port: int, names: Sequence[str]) -> int:
    try:
        charts = _get_json(f"http://127.0.0.1:{port}/api/v1/charts")
    except OSError:
        return 0
    assert isinstance(charts, dict)
    seen = {key.split(".")[0] for key in charts.get("charts", {})}
    return sum(1 for n in names if f"cgroup_{n}" in seen)


def _tree(pid: int) -> list[int]:
    """Return ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(stat[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cgroups_threads_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        if "cgroup" in _comm_of_task(pid, tid).lower():
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def _comm_of_task(pid: int, tid: str) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


def _tree_cpu(pid: int) -> float:
    """Return the CPU seconds of a process tree, reaped children included."""
    return sum(_proc_cpu(p, children=(p == pid)) for p in _tree(pid))


@contextlib.contextmanager
def _process_group(argv: list[str], env: dict[str, str], log: Path) -> Iterator[int]:
    """Run ``argv`` in a session of its own; stop that whole group afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            yield proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class PeerWindow:
    """CPU per second over one window: netdata's and our exporter's, side by side."""

    seconds: float
    netdata_cgroups: float
    netdata_all: float
    ours: float
    ours_without_processes: float
    engine: float
    engine_idle: float
    netdata_containers: int


def _exporter(port: int, processes: bool) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "EXPORTER_STATS_SOURCE": "cgroup",
        "EXPORTER_POLL_INTERVAL": str(INTERVAL),
        "EXPORTER_COLLECT_PROCESSES": "true" if processes else "false",
        "EXPORTER_LOG_LEVEL": "warning",
    }
    return [sys.executable, "-m", "exporter", "serve"], env


def netdata_window(names: Sequence[str]) -> PeerWindow:
    """Run netdata and our exporter side by side at the same interval; measure CPU/s."""
    binary = _ensure_netdata()
    # What the engine spends with these containers and nobody asking it anything.
    engine0, t0 = _engine_cpu(), time.monotonic()
    time.sleep(IDLE_WINDOW)
    engine_idle = _engine_delta(engine0) / (time.monotonic() - t0)
    with tempfile.TemporaryDirectory(prefix="cgroup-bench-netdata-") as tmp:
        workdir = Path(tmp)
        nd_port, port, bare_port = _free_port(), _free_port(), _free_port()
        conf = _netdata_conf(workdir, nd_port)
        nd_env = {**os.environ, "DO_NOT_TRACK": "1"}
        nd_argv = [binary, "-D", "-c", str(conf), "-P", str(workdir / "netdata.pid")]
        with (
            _process_group(nd_argv, nd_env, workdir / "netdata.out") as nd_pid,
            _process_group(*_exporter(port, True), workdir / "exporter.out") as our_pid,
            _process_group(*_exporter(bare_port, False), workdir / "bare.out") as bare_pid,
        ):
            # netdata finds new cgroups every 100 s at this interval, names them
            # through the engine, and only then charts them.
            _wait(lambda: _netdata_sees(nd_port, names) >= len(names), 300, "netdata")
            _wait(lambda: _ready(port) and _ready(bare_port), 60, "the exporters' first poll")
            nd_cg0, nd_all0 = _cgroups_threads_ns(nd_pid), _tree_cpu(nd_pid)
            ours0, bare0, engine0 = _tree_cpu(our_pid), _tree_cpu(bare_pid), _engine_cpu()
            t0 = time.monotonic()
            time.sleep(NETDATA_WINDOW)
            seconds = time.monotonic() - t0
            window = PeerWindow(
                seconds=seconds,
                netdata_cgroups=(_cgroups_threads_ns(nd_pid) - nd_cg0) / 1e9 / seconds,
                netdata_all=(_tree_cpu(nd_pid) - nd_all0) / seconds,
                ours=(_tree_cpu(our_pid) - ours0) / seconds,
                ours_without_processes=(_tree_cpu(bare_pid) - bare0) / seconds,
                engine=_engine_delta(engine0) / seconds,
                engine_idle=engine_idle,
                netdata_containers=_netdata_sees(nd_port, names),
            )
    return window


# -- synthetic trees ------------------------------------------------------------


def _synthetic_tree(root: Path, n: int) -> list[ContainerInfo]:
    """Write a v1 tree of ``n`` containers from the recorded files; return them."""
    recorded = json.loads((RECORDED_V1 / "container.json").read_text())
    rid, rpid = recorded["id"], recorded["pid"]
    proc_files = {
        name: (RECORDED_V1 / "proc" / str(rpid) / name).read_bytes()
        for name in ("cgroup", "net/dev")
    }
    cg_files = {
        controller: {
            f.name: f.read_bytes()
            for f in (RECORDED_V1 / "sys/fs/cgroup" / controller / "docker" / rid).iterdir()
        }
        for controller in ("cpuacct", "memory", "blkio")
    }
    (root / "proc/1/ns").mkdir(parents=True)
    (root / "proc/1/ns/net").symlink_to("net:[4026531840]")
    infos = []
    for i in range(n):
        cid = hashlib.sha256(f"synthetic-{i}".encode()).hexdigest()
        pid = 100_000 + i
        proc = root / "proc" / str(pid)
        (proc / "net").mkdir(parents=True)
        (proc / "ns").mkdir()
        (proc / "ns/net").symlink_to(f"net:[{4026600000 + i}]")
        (proc / "cgroup").write_bytes(proc_files["cgroup"].replace(rid.encode(), cid.encode()))
        (proc / "net/dev").write_bytes(proc_files["net/dev"])
        for controller, files in cg_files.items():
            d = root / "sys/fs/cgroup" / controller / "docker" / cid
            d.mkdir(parents=True)
            for name, data in files.items():
                (d / name).write_bytes(data)
        infos.append(ContainerInfo(id=cid, name=f"s{i}", state=ContainerState.RUNNING, pid=pid))
    return infos


@dataclass
class ScaleRow:
    """One synthetic tree's first and steady polls."""

    containers: int
    held: int
    first_wall: float
    first_cpu: float
    wall: float
    cpu: float


def scale_rows() -> list[ScaleRow]:
    """Read synthetic trees of 1,000 and 5,000 containers."""
    rows = []
    for n in SCALES:
        with tempfile.TemporaryDirectory(prefix="cgroup-bench-tree-") as tmp:
            root = Path(tmp)
            infos = _synthetic_tree(root, n)
            source = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup")
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = source.read_blocking(infos)
            first_wall, first_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            assert all(isinstance(r, SourcedStats) for r in results.values())
            walls, cpus = [], []
            for _ in range(5):
                cpu0, t0 = time.process_time(), time.perf_counter()
                source.read_blocking(infos)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - cpu0)
            held = source.held_files // 8
            source.close()
        rows.append(
            ScaleRow(
                n,
                held,
                first_wall,
                first_cpu,
                statistics.median(walls),
                statistics.median(cpus),
            )
        )
    return rows


# -- the table ------------------------------------------------------------------


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def render(rows: Sequence[Row], peer: PeerWindow | None, scales: Sequence[ScaleRow]) -> list[str]:
    """Return the printed report: three tables and the targets."""
    base = rows[0]
    lines = [
        f"Real engine, {base.containers} running containers (median of each measurement).",
        "",
        *_table(
            [
                "stats of every container",
                "wall",
                "x cgroup wall",
                "our CPU",
                "engine CPU",
                "CPU per container",
                "x cgroup CPU",
            ],
            [
                [
                    r.what,
                    _ms(r.wall),
                    f"{r.wall / base.wall:.0f}x" if r is not base else "1x",
                    _ms(r.ours),
                    _ms(r.engine),
                    f"{r.total / r.containers * 1e6:.0f} us",
                    f"{r.total / base.total:.0f}x" if r is not base else "1x",
                ]
                for r in rows
            ],
        ),
    ]
    if peer is not None:
        cgroup_read = base.ours / INTERVAL
        lines += [
            "",
            f"CPU per second at a {INTERVAL} s interval, over the same {peer.seconds:.0f} s "
            f"(netdata charts {peer.netdata_containers} of the {base.containers} containers; "
            "1% of a core = 10 ms/s).",
            "",
            *_table(
                ["who", "CPU per second", "% of a core"],
                [
                    [
                        "our cgroup read alone (per-poll CPU above / interval)",
                        _ms(cgroup_read),
                        f"{cgroup_read * 100:.3f}%",
                    ],
                    [
                        "our exporter, whole process (serve, cgroup source)",
                        _ms(peer.ours),
                        f"{peer.ours * 100:.3f}%",
                    ],
                    [
                        "our exporter, whole process, without process counts",
                        _ms(peer.ours_without_processes),
                        f"{peer.ours_without_processes * 100:.3f}%",
                    ],
                    [
                        "netdata cgroups threads (collection + discovery)",
                        _ms(peer.netdata_cgroups),
                        f"{peer.netdata_cgroups * 100:.3f}%",
                    ],
                    [
                        "netdata, all its processes (statsd off)",
                        _ms(peer.netdata_all),
                        f"{peer.netdata_all * 100:.3f}%",
                    ],
                    [
                        "the engine meanwhile (dockerd, containerd, shims)",
                        _ms(peer.engine),
                        f"{peer.engine * 100:.3f}%",
                    ],
                    [
                        "the engine idle, nobody polling (measured before)",
                        _ms(peer.engine_idle),
                        f"{peer.engine_idle * 100:.3f}%",
                    ],
                ],
            ),
        ]
    lines += [
        "",
        "Synthetic cgroup v1 trees (plain files; the first poll locates and opens).",
        "",
        *_table(
            [
                "containers",
                "files held open for",
                "first poll wall / CPU",
                "poll wall",
                "poll CPU",
                "CPU per container",
            ],
            [
                [
                    f"{s.containers:,}",
                    f"{s.held:,}",
                    f"{_ms(s.first_wall)} / {_ms(s.first_cpu)}",
                    _ms(s.wall),
                    _ms(s.cpu),
                    f"{s.cpu / s.containers * 1e6:.0f} us",
                ]
                for s in scales
            ],
        ),
    ]
    if len(scales) == 2:
        small, large = scales
        growth = (large.cpu / small.cpu) / (large.containers / small.containers)
        lines.append(
            f"\nPoll CPU from {small.containers:,} to {large.containers:,}: "
            f"x{large.cpu / small.cpu:.1f} ({growth:.2f} of linear)."
        )
    docker_stats = next(r for r in rows if "docker stats" in r.what)
    full = next(r for r in rows if r.what.startswith("full poll") and "cgroup" in r.what)
    counted = next(r for r in rows if r.what == "the same with process counts")
    targets = [
        (
            f"stats of {base.containers} under 25 ms wall",
            base.wall < 0.025,
            _ms(base.wall),
        ),
        (
            f"full poll of {full.containers} under 25 ms wall",
            full.wall < 0.025,
            f"{_ms(full.wall)} ({_ms(counted.wall)} with process counts)",
        ),
        (
            ">= 40x faster than docker stats --no-stream",
            docker_stats.wall / base.wall >= 40,
            f"{docker_stats.wall / base.wall:.0f}x (full poll "
            f"{docker_stats.wall / full.wall:.0f}x)",
        ),
        (
            "under 1 ms CPU per container per poll",
            counted.total / counted.containers < 0.001,
            f"{base.total / base.containers * 1e6:.0f} us (full poll "
            f"{full.total / full.containers * 1e6:.0f} us, with process counts "
            f"{counted.total / counted.containers * 1e6:.0f} us)",
        ),
    ]
    if peer is not None:
        targets.append(
            (
                "less CPU/s than netdata's cgroup collection at the same interval",
                base.ours / INTERVAL < peer.netdata_cgroups,
                f"{_ms(base.ours / INTERVAL)}/s vs {_ms(peer.netdata_cgroups)}/s "
                f"(whole exporter {_ms(peer.ours)}/s)",
            )
        )
    lines += ["", "Targets:"]
    lines += [f"- {'met' if ok else 'MISSED'}: {what}: {value}" for what, ok, value in targets]
    return lines


def main() -> None:
    """Print the cgroup source benchmark tables."""
    with idle_containers(N) as names:
        rows = asyncio.run(real_engine_rows(names))
        peer = netdata_window(names)
    scales = scale_rows()
    print("\n".join(render(rows, peer, scales)), flush=True)


if __name__ == "__main__":
    main()
