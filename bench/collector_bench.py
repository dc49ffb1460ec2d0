"""Poller benchmarks: a full poll against `docker stats --no-stream`, and scale.

Real engine, N = 10 and 50 running containers: wall time of one full poll
(list, inspect, stats of every container, process counts) through the
Docker API path against `docker stats --no-stream` on the same containers,
the CPU seconds our process spends per poll, and its peak RSS.

Simulated engine (bench/simengine.py, a simulation, not an engine), N = 1,000
and 5,000: poll time, /metrics render time and size, peak RSS, and how each
grows with N.

Each measurement runs in a child process of its own (so RSS is ours alone)
after a quiet gap, because the engine answers one-shot stats at once after
~2 s of quiet and once per ~1 s tick when called back to back; the exporter
polls every 10 s by default, so the quiet case is the real one.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.containers import docker_stats_once, idle_containers

ROOT = Path(__file__).resolve().parent.parent
QUIET_GAP_SECONDS = 3.0
RUNS = 3


def _child(socket_path: str, polls: int, gap: float, processes: bool) -> None:
    """Poll ``polls`` times through the real wiring and print one JSON line of figures."""
    os.environ["DOCKER_HOST"] = f"unix://{socket_path}"
    from exporter.config import Settings
    from exporter.exposition import Exposition
    from exporter.metrics import build_registry
    from exporter.wiring import build_driver, build_poller

    settings = Settings(stats_source="docker", collect_processes=processes, poll_timeout=30)

    async def run() -> dict[str, object]:
        driver = build_driver(settings)
        poller = build_poller(settings, driver)
        walls, cpus = [], []
        try:
            for i in range(polls):
                if i or gap:
                    await asyncio.sleep(gap)
                c0, t0 = time.process_time(), time.perf_counter()
                snapshot = await poller.poll_once()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                assert snapshot.engine_up, snapshot.error
            exposition = Exposition(poller, build_registry(poller))
            # A scrape of a new snapshot renders the container block and gzips it;
            # every later scrape of the same snapshot reuses both.
            t0 = time.perf_counter()
            gzipped = exposition.body(gzip=True)
            render = time.perf_counter() - t0
            t0 = time.perf_counter()
            exposition.body(gzip=True)
            cached = time.perf_counter() - t0
            plain = exposition.body()
            return {
                "containers": len(snapshot.containers),
                "with_stats": sum(1 for s in snapshot.containers if s.stats is not None),
                "poll_wall": statistics.median(walls),
                "poll_cpu": statistics.median(cpus),
                "render": render,
                "cached": cached,
                "bytes": len(plain),
                "gzip_bytes": len(gzipped),
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        finally:
            await driver.close()

    print(json.dumps(asyncio.run(run())), flush=True)


def _measure(socket_path: str, polls: int, gap: float, processes: bool) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.collector_bench",
            "child",
            socket_path,
            str(polls),
            str(gap),
            "1" if processes else "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _docker_stats_wall(names: list[str]) -> float:
    walls = []
    for _ in range(RUNS):
        time.sleep(QUIET_GAP_SECONDS)
        t0 = time.perf_counter()
        docker_stats_once(names)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def _ours(ours: dict[str, float]) -> list[str]:
    size = f"{ours['bytes'] / 1024:.0f} KiB ({ours['gzip_bytes'] / 1024:.0f} KiB gzip)"
    return [
        _ms(ours["poll_cpu"]),
        f"{ours['rss_mib']:.0f} MiB",
        _ms(ours["render"]),
        _ms(ours["cached"]),
        size,
    ]


def real_engine_rows() -> list[str]:
    """Measure N = 10 and 50 on the real engine; return table rows."""
    rows = []
    for n in (10, 50):
        with idle_containers(n) as names:
            ours = _measure("/var/run/docker.sock", RUNS, QUIET_GAP_SECONDS, processes=True)
            assert ours["with_stats"] >= n, ours
            theirs = _docker_stats_wall(names)
            ratio = f"{ours['poll_wall'] / theirs:.2f}x"
            rows.append(
                _row(
                    [
                        "real engine",
                        str(n),
                        _ms(ours["poll_wall"]),
                        _ms(theirs),
                        ratio,
                        *_ours(ours),
                    ]
                )
            )
    return rows


def _simulated(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "sim.sock")
        sim = subprocess.Popen(
            [sys.executable, "-m", "bench.simengine", "--containers", str(n), "--socket", sock],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sim.stdout is not None
            assert sim.stdout.readline().strip() == "ready"
            return _measure(sock, RUNS, 0.0, processes=False)
        finally:
            sim.terminate()
            sim.wait(timeout=10)


def simulated_rows() -> list[str]:
    """Measure N = 1,000 and 5,000 on the simulated engine; return table rows and growth."""
    small, large = _simulated(1000), _simulated(5000)
    rows = []
    for n, ours in ((1000, small), (5000, large)):
        assert ours["with_stats"] == n, ours
        rows.append(
            _row(["simulated engine", str(n), _ms(ours["poll_wall"]), "-", "-", *_ours(ours)])
        )
    growth = ", ".join(
        f"{what} x{large[key] / small[key]:.1f}"
        for what, key in (("poll", "poll_wall"), ("render", "render"), ("RSS", "rss_mib"))
    )
    rows.append(f"\nFrom 1,000 to 5,000 simulated containers (x5): {growth}.")
    return rows


HEADER = [
    "engine",
    "containers",
    "our poll (wall)",
    "docker stats --no-stream",
    "ratio",
    "our CPU per poll",
    "peak RSS",
    "first scrape of a poll (render+gzip)",
    "later scrapes",
    "/metrics size",
]


def main() -> None:
    """Print the poller benchmark table."""
    lines = [_row(HEADER), _row(["---"] * len(HEADER)), *real_engine_rows(), *simulated_rows()]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        _child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
