"""One measurement of the full cgroup poll, run by bench/cadvisor_bench.py in a child process.

Uses only what the exporter had before issue 14 too (``build_poller``,
``render_container_families``), so the same file measures main's code and
this branch's: the child imports whichever tree is on PYTHONPATH. Prints one
JSON line: median wall and CPU of a poll, and /metrics bytes per container.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

from exporter.config import Settings
from exporter.exposition import render_container_families
from exporter.wiring import build_driver, build_poller


async def measure(app: str, polls: int) -> dict[str, float]:
    """Return the median poll wall/CPU seconds and the container block's bytes per container."""
    settings = Settings(
        stats_source="cgroup",
        poll_timeout=30,
        naming_pattern=rf"app-(?P<app>{app})-(?P<replica>[0-9a-f]{{4}})",
    )
    driver = build_driver(settings)
    try:
        poller = build_poller(settings, driver)
        await poller.poll_once()  # warm: inspects cached, files located and held
        walls, cpus = [], []
        for _ in range(polls):
            cpu0, t0 = time.process_time(), time.perf_counter()
            snapshot = await poller.poll_once()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - cpu0)
        assert snapshot.engine_up, snapshot.error
        options = {}
        disabled = getattr(settings, "collect_disable", [])
        if disabled:
            from exporter.metrics import enabled_rows

            options["table"] = enabled_rows(disabled)
        body = b"".join(render_container_families(snapshot, **options))
        n = len(snapshot.containers)
        return {
            "containers": n,
            "with_stats": sum(1 for s in snapshot.containers if s.stats is not None),
            "wall": statistics.median(walls),
            "cpu": statistics.median(cpus),
            "bytes_per_container": len(body) / n,
        }
    finally:
        await driver.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(sys.argv[1], int(sys.argv[2])))))
    sys.stdout.flush()
    os._exit(0)
