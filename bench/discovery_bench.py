"""Event discovery benchmarks: a steady poll reading the kernel's files, asking the engine nothing.

Every figure is a ratio against a peer measured in the same run:

- the steady poll (``--discovery.mode=events``, cgroup source, process
  counts on: stats and counts of the containers the stream told of, no list,
  no inspect) against the cgroup source's bare read of the same files
  (``CgroupStatsSource.read_many``), on the same 50 idle containers; the
  full poll of ``--discovery.mode=poll`` (list, inspect, stats, counts) beside them;
- the engine's CPU (dockerd, containerd, the shims, from /proc) while a real
  ``sysinner-exporter serve`` polls those 50 every second, against the same
  engine with the exporter frozen (SIGSTOP): alternating windows, so drift
  and the other users of a shared engine fall on both sides alike; the
  exporter's RSS read from its own /proc/<pid>/status at the end;
- the CPU per container of a steady read of synthetic v1 trees of 1,000 and
  5,000 containers (bench/cgroup_bench.py's), with the open files limit as
  the exporter sets it at start (soft raised to hard), and with the hard
  limit a service gets from systemd (``LimitNOFILE=infinity``, dockerd's own);
- wall and CPU (ours plus the engine's) of one stats read of 10 to 50
  containers through each source, and of ``docker stats --no-stream``:
  plotted to bench-poll.png next to the README.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cgroup_bench import (
    _children_cpu,
    _engine_cpu,
    _engine_delta,
    _inspect_all,
    _proc_cpu,
    _process_group,
    _ready,
    _synthetic_tree,
    _wait,
)
from bench.containers import docker_stats_once, idle_containers
from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerInfo
from exporter.poller import Poller
from exporter.sources.base import DriverStatsSource, SourcedStats, StatsSource
from exporter.sources.cgroup import (
    CgroupStatsSource,
    held_files_budget,
    raise_open_files_limit,
)
from exporter.wiring import build_driver, build_poller

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "bench-poll.png"
N = 50
POLLS = 30
#: Engine CPU: windows of this many seconds, exporter polling and frozen in turn.
WINDOW = 10.0
WINDOWS = 6  # of each kind: 60 s polling, 60 s frozen
#: Synthetic tree sizes compared; between them, the most whose files all fit
#: the held-files budget (found at run time), for the ratio with every file held.
SMALL, LARGE = 1000, 5000
PLOT_SIZES = (10, 20, 30, 40, 50)
QUIET_GAP = 3.0


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


@dataclass
class Timed:
    """Median wall and CPU of one thing done many times, and the engine's mean CPU."""

    what: str
    containers: int
    wall: float
    cpu: float
    engine: float


async def _time(what: str, n: int, call: object, times: int, gap: float = 0.0) -> Timed:
    walls, cpus, engine = [], [], []
    for _ in range(times):
        if gap:
            await asyncio.sleep(gap)
        before = _engine_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        await call()  # type: ignore[operator]
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        engine.append(_engine_delta(before))
    return Timed(
        what, n, statistics.median(walls), statistics.median(cpus), statistics.mean(engine)
    )


def _settings(names: Sequence[str], mode: str) -> Settings:
    app = names[0].split("-")[1]
    # Only this run's containers: others' on a shared engine would skew the poll.
    return Settings(
        stats_source="cgroup",
        collect_processes=True,
        discovery_mode=mode,
        poll_interval=3600,
        poll_timeout=30,
        naming_pattern=rf"app-(?P<app>{app})-(?P<replica>[0-9a-f]{{4}})",
    )


async def poll_rows(names: Sequence[str]) -> list[Timed]:
    """Time the bare read, the steady events poll and the full poll on the same containers."""
    driver = DockerDriver(stats_timeout=30)
    try:
        infos = await _inspect_all(driver, names)
    finally:
        await driver.close()
    source = CgroupStatsSource()
    await source.read_many(infos)  # located and held, as in a steady poll
    bare = await _time(
        "cgroup source's bare read of the files (stats of all)",
        len(infos),
        lambda: source.read_many(infos),
        POLLS,
    )
    source.close()
    rows = [bare]
    for mode, what in (
        ("events", "steady poll, events discovery (stats + process counts)"),
        ("poll", "full poll, poll discovery (list, inspect, stats + process counts)"),
    ):
        settings = _settings(names, mode)
        driver = build_driver(settings)
        poller = build_poller(settings, driver)
        try:
            async with poller.running():
                deadline = time.monotonic() + 60
                while not (
                    poller.snapshot.engine_up and len(poller.snapshot.containers) == len(names)
                ):
                    assert time.monotonic() < deadline, poller.snapshot.error
                    await asyncio.sleep(0.05)
                await poller.poll_once()  # warm: files located and held

                async def poll(poller: Poller = poller) -> None:
                    snapshot = await poller.poll_once()
                    assert snapshot.engine_up, snapshot.error
                    counted = [s for s in snapshot.containers if s.processes is not None]
                    assert len(counted) == len(names), "process counts missing"

                rows.append(await _time(what, len(names), poll, POLLS))
        finally:
            await driver.close()
    return rows


@dataclass
class EngineWindow:
    """Engine CPU per second with the exporter polling and frozen, and the exporter's RSS."""

    polling: float
    frozen: float
    ours: float
    rss_kib: int
    hwm_kib: int


def _status_kib(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def engine_window(names: Sequence[str]) -> EngineWindow:
    """Alternate windows of the exporter polling every second and frozen; sum the engine's CPU."""
    port = _free_port()
    env = {
        **os.environ,
        "EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "EXPORTER_POLL_INTERVAL": "1",
        "EXPORTER_LOG_LEVEL": "warning",
        "EXPORTER_NAMING_PATTERN": _settings(names, "events").naming_pattern,
    }
    with tempfile.TemporaryDirectory(prefix="discovery-bench-") as tmp:
        argv = [sys.executable, "-m", "exporter", "serve"]
        with _process_group(argv, env, Path(tmp) / "exporter.log") as pid:
            _wait(lambda: _ready(port), 60, "the exporter's /readyz")
            polling = frozen = ours = 0.0
            for _ in range(WINDOWS):
                for frozen_now in (False, True):
                    os.kill(pid, signal.SIGSTOP if frozen_now else signal.SIGCONT)
                    before, ours0 = _engine_cpu(), _proc_cpu(pid)
                    time.sleep(WINDOW)  # the measured window itself
                    spent = _engine_delta(before)
                    if frozen_now:
                        frozen += spent
                    else:
                        polling += spent
                        ours += _proc_cpu(pid) - ours0
            os.kill(pid, signal.SIGCONT)
            rss, hwm = _status_kib(pid, "VmRSS"), _status_kib(pid, "VmHWM")
    seconds = WINDOW * WINDOWS
    return EngineWindow(polling / seconds, frozen / seconds, ours / seconds, rss, hwm)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScaleRow:
    """Steady CPU per container of a synthetic tree, and how many containers' files were held."""

    containers: int
    held: int
    cpu_per_container: float


def _files_per_container(infos: list[ContainerInfo], root: Path) -> int:
    """Return how many files the source holds for one synthetic container."""
    source = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=1 << 20)
    source.read_blocking(infos[:1])
    held = source.held_files
    source.close()
    return held


def _scale(
    infos: list[ContainerInfo], root: Path, per_container: int, max_held: int | None = None
) -> ScaleRow:
    source = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=max_held)
    results = source.read_blocking(infos)
    assert all(isinstance(r, SourcedStats) for r in results.values())
    cpus = []
    for _ in range(5):
        c0 = time.process_time()
        source.read_blocking(infos)
        cpus.append(time.process_time() - c0)
    held = source.held_files // per_container
    source.close()
    return ScaleRow(len(infos), held, statistics.median(cpus) / len(infos))


def scale_rows() -> dict[str, list[ScaleRow]]:
    """Steady reads of synthetic trees: every file opened per read, and at two hard limits."""
    rows: dict[str, list[ScaleRow]] = {}
    with tempfile.TemporaryDirectory(prefix="discovery-bench-tree-") as tmp:
        root = Path(tmp)
        infos = _synthetic_tree(root, LARGE)
        soft, hard = raise_open_files_limit()
        per = _files_per_container(infos, root)
        fit = min(LARGE - 100, max(SMALL + 100, held_files_budget() // per // 100 * 100))
        sizes = (SMALL, fit, LARGE)
        # The code's own growth, apart from how many files fit the limit: every
        # file opened and closed at every poll, at every size.
        rows["no file held (open, read, close at every poll)"] = [
            _scale(infos[:n], root, per, max_held=0) for n in sizes
        ]
        rows[f"hard limit {hard:,} (this machine)"] = [_scale(infos[:n], root, per) for n in sizes]
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
        except (OSError, ValueError) as e:
            print(f"(cannot raise the hard open files limit: {e})")
        else:
            rows["hard limit 1,048,576 (systemd LimitNOFILE=infinity)"] = [
                _scale(infos[:n], root, per) for n in sizes
            ]
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return rows


@dataclass
class PlotPoint:
    """One size's stats read through one way: wall, and CPU (ours plus the engine's)."""

    way: str
    containers: int
    wall: float
    cpu: float


async def plot_points(names: Sequence[str]) -> list[PlotPoint]:
    """Time one stats read of the first n containers through each source, and docker stats."""
    driver = DockerDriver(stats_timeout=30)
    points = []
    try:
        infos = await _inspect_all(driver, names)
        cgroup = CgroupStatsSource()
        engine = DriverStatsSource(driver)
        for n in PLOT_SIZES:
            subset = infos[:n]
            ways: tuple[tuple[str, StatsSource, int, float], ...] = (
                ("cgroup source", cgroup, 30, 0.0),
                ("Docker API source", engine, 2, QUIET_GAP),
            )
            for way, source, times, gap in ways:
                await source.read_many(subset)
                t = await _time(way, n, lambda s=source, c=subset: s.read_many(c), times, gap)
                points.append(PlotPoint(way, n, t.wall, t.cpu + t.engine))
            walls, cpus = [], []
            for _ in range(2):
                await asyncio.sleep(QUIET_GAP)
                before, children = _engine_cpu(), _children_cpu()
                t0 = time.perf_counter()
                docker_stats_once([i.name for i in subset])
                walls.append(time.perf_counter() - t0)
                cpus.append(_children_cpu() - children + _engine_delta(before))
            points.append(
                PlotPoint(
                    "docker stats --no-stream", n, statistics.median(walls), statistics.mean(cpus)
                )
            )
        cgroup.close()
    finally:
        await driver.close()
    return points


def plot(points: Sequence[PlotPoint], path: Path = PLOT) -> None:
    """Draw wall and CPU against the number of containers, every way on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (wall_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for way in dict.fromkeys(p.way for p in points):
        mine = [p for p in points if p.way == way]
        xs = [p.containers for p in mine]
        wall_ax.plot(xs, [p.wall * 1000 for p in mine], marker="o", label=way)
        cpu_ax.plot(xs, [p.cpu * 1000 for p in mine], marker="o", label=way)
    for ax, what in ((wall_ax, "wall"), (cpu_ax, "CPU, ours + the engine's")):
        ax.set_yscale("log")
        ax.set_xlabel("running containers")
        ax.set_ylabel(f"ms per stats read ({what})")
        ax.grid(True, which="both", alpha=0.3)
    wall_ax.legend()
    fig.suptitle("One stats read of every container: cgroup files, the Engine API, docker stats")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(
    rows: Sequence[Timed], window: EngineWindow, scales: dict[str, list[ScaleRow]]
) -> list[str]:
    """Return the printed report and the figures' ratios."""
    bare, steady, full = rows
    lines = [
        f"Real engine, {bare.containers} idle containers (median of {POLLS} each).",
        "",
        "| | wall | our CPU | engine CPU | wall / bare read |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {_ms(r.wall)} | {_ms(r.cpu)} | {_ms(r.engine)} | "
            f"{r.wall / bare.wall:.2f}x |"
        )
    engine_ratio = window.polling / window.frozen if window.frozen else float("inf")
    lines += [
        "",
        f"Engine CPU, exporter polling every 1 s: {_ms(window.polling)}/s; frozen: "
        f"{_ms(window.frozen)}/s ({engine_ratio:.2f}x; {WINDOWS} windows of {WINDOW:g} s each); "
        f"the exporter's own CPU {_ms(window.ours)}/s, RSS {window.rss_kib / 1024:.1f} MiB "
        f"(peak {window.hwm_kib / 1024:.1f} MiB, its own /proc/<pid>/status).",
        "",
    ]
    for limit, scale in scales.items():
        small, large = scale[0], scale[-1]
        lines.append(
            f"Synthetic trees, {limit}: "
            + ", ".join(
                f"{r.containers:,}: {r.cpu_per_container * 1e6:.1f} us/container ({r.held:,} held)"
                for r in scale
            )
            + f"; {large.cpu_per_container / small.cpu_per_container:.2f}x"
        )
    unheld, first = list(scales.values())[:2]
    best = list(scales.values())[-1]
    small, large = best[0], best[-1]
    targets = [
        (
            "steady poll with process counts <= 1.5x the bare read",
            steady.wall / bare.wall <= 1.5,
            f"{steady.wall / bare.wall:.2f}x (full poll {full.wall / bare.wall:.2f}x)",
        ),
        (
            "engine CPU with the exporter within 10% of without",
            engine_ratio <= 1.10,
            f"{engine_ratio:.2f}x",
        ),
        (
            "5,000 containers' CPU per container within 1.2x of 1,000's",
            large.cpu_per_container / small.cpu_per_container <= 1.2,
            f"{large.cpu_per_container / small.cpu_per_container:.2f}x "
            f"({first[-1].cpu_per_container / first[0].cpu_per_container:.2f}x at this "
            f"machine's hard limit; {first[1].containers:,}, all held: "
            f"{first[1].cpu_per_container / first[0].cpu_per_container:.2f}x; none held: "
            f"{unheld[-1].cpu_per_container / unheld[0].cpu_per_container:.2f}x)",
        ),
    ]
    lines += ["", "Targets:"]
    lines += [f"- {'met' if ok else 'MISSED'}: {what}: {value}" for what, ok, value in targets]
    return lines


def main() -> None:
    """Run every measurement, print the table and draw bench-poll.png.

    ``DISCOVERY_BENCH_PLOT=0`` leaves the plot (and its ~2 minutes) out.
    """
    raise_open_files_limit()  # as the exporter does at start
    draw = os.environ.get("DISCOVERY_BENCH_PLOT", "1") != "0"
    points: list[PlotPoint] = []
    with idle_containers(N) as names:
        rows = asyncio.run(poll_rows(names))
        window = engine_window(names)
        if draw:
            points = asyncio.run(plot_points(names))
    scales = scale_rows()
    print("\n".join(render(rows, window, scales)), flush=True)
    if draw:
        plot(points)
        print(f"plot: {PLOT.relative_to(ROOT)}")
    for p in points:
        print(f"  {p.way}, {p.containers}: wall {_ms(p.wall)}, CPU {_ms(p.cpu)}")


if __name__ == "__main__":
    main()
