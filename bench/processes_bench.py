"""Process counting: CPU per ``count_processes`` call on 50 idle containers.

Real engine: 50 containers of the test image running an idle loop (two
processes each: ``sh`` and its ``sleep``), started eight at a time and all
removed at the end. Each count is timed with ``time.thread_time`` (the call
runs in the calling thread) and ``time.perf_counter``; the figures are the
median and mean over ``CALLS`` rounds after one warm-up call, each round
calling every way in turn.

Measured: the cgroup stats source as the exporter wires it, counting in the
same pass as its stats read (the cost of the counts is that read less the
same source's stats-only read, both timed here, files held open as in a
steady poll); :class:`~exporter.processes.CgroupProcessCounter`, which
counts the containers whose stats come from the engine (cgroup.procs under
``/sys/fs/cgroup``, each container's directory remembered between calls),
the one-shot ``count_processes`` (every cgroup found again from its pid)
and the pid-namespace scan they fall back to
(``count_processes_by_namespace``, O(host processes)).

``EXTRA_HOST_PROCESSES=1000`` starts that many ``sleep`` processes on the
host for the run (killed at the end), to show how each way grows with them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.containers import idle_containers
from exporter import processes
from exporter.models import ContainerInfo, ContainerState
from exporter.sources.base import SourcedStats
from exporter.sources.cgroup import CgroupStatsSource

N = 50
IN_PASS = "cgroup source, stats and counts in one pass (as wired)"
STATS_ONLY = "cgroup source, stats only"
SEPARATE = "CgroupProcessCounter (engine-read containers; directories remembered)"
CALLS = 50
EXTRA = int(os.environ.get("EXTRA_HOST_PROCESSES", "0"))


def _init_pids(names: list[str]) -> dict[str, int]:
    out = subprocess.run(
        ["docker", "inspect", *names], check=True, capture_output=True, text=True, timeout=120
    )
    return {c["Id"]: int(c["State"]["Pid"]) for c in json.loads(out.stdout)}


def _check(count: Callable[[Mapping[str, int]], Any], pids: dict[str, int]) -> None:
    result = count(pids)  # also the warm-up: imports, the dentry cache, remembered directories
    assert len(result) == len(pids), f"counted {len(result)} of {len(pids)} containers"
    assert all(c.processes == 2 for c in result.values()), result


def _time(
    ways: dict[str, Callable[[Mapping[str, int]], Any]], pids: dict[str, int]
) -> dict[str, float]:
    """Time the ways in turn, round after round, so drift on a shared machine hits all alike.

    Return each way's median CPU.
    """
    cpus: dict[str, list[float]] = {label: [] for label in ways}
    walls: dict[str, list[float]] = {label: [] for label in ways}
    for _ in range(CALLS):
        for label, count in ways.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            count(pids)
            walls[label].append(time.perf_counter() - t0)
            cpus[label].append(time.thread_time() - c0)
    for label in ways:
        print(
            f"{label}: CPU {statistics.median(cpus[label]) * 1000:.2f} ms median, "
            f"{statistics.mean(cpus[label]) * 1000:.2f} ms mean; "
            f"wall {statistics.median(walls[label]) * 1000:.2f} ms median"
        )
    return {label: statistics.median(cpus[label]) for label in ways}


def main() -> None:
    """Start 50 idle containers, time each way of counting, remove the containers."""
    extra: list[subprocess.Popen[bytes]] = []
    try:
        extra.extend(subprocess.Popen(["sleep", "3600"]) for _ in range(EXTRA))
        with idle_containers(N) as names:
            _measure(names)
    finally:
        for proc in extra:
            proc.kill()
            proc.wait()


def _measure(names: list[str]) -> None:
    """Check every way agrees, then time each on the running containers."""
    pids = _init_pids(names)
    host_pids = sum(1 for e in os.listdir("/proc") if e.isdigit())
    print(f"{N} containers, {host_pids} host processes, {CALLS} calls each")
    counter = processes.CgroupProcessCounter("/proc", "/sys/fs/cgroup")
    infos = [
        ContainerInfo(id=cid, name=cid, state=ContainerState.RUNNING, pid=pid)
        for cid, pid in pids.items()
    ]
    in_pass, stats_only = CgroupStatsSource(count_processes=True), CgroupStatsSource()

    def counted_in_pass(_: Mapping[str, int]) -> dict[str, Any]:
        results = in_pass.read_blocking(infos)
        return {cid: r.processes for cid, r in results.items() if isinstance(r, SourcedStats)}

    ways: dict[str, Callable[[Mapping[str, int]], Any]] = {
        IN_PASS: counted_in_pass,
        SEPARATE: counter,
        "count_processes (one-shot; each cgroup found from its pid)": (processes.count_processes),
        "count_processes_by_namespace (the fallback)": processes.count_processes_by_namespace,
    }
    for count in ways.values():
        _check(count, pids)
    stats_only.read_blocking(infos)  # warm: files located and held
    cpu = _time({**ways, STATS_ONLY: lambda _: stats_only.read_blocking(infos)}, pids)
    counts = cpu[IN_PASS] - cpu[STATS_ONLY]
    print(
        f"counting in the cgroup source's pass: {counts * 1000:.2f} ms CPU for {N} containers, "
        f"{counts / cpu[STATS_ONLY]:.2f}x of their stats read "
        f"(a separate CgroupProcessCounter pass: {cpu[SEPARATE] / cpu[STATS_ONLY]:.2f}x)"
    )


if __name__ == "__main__":
    main()
