"""Process counting: CPU per ``count_processes`` call on 50 idle containers.

Real engine: 50 containers of the test image running an idle loop (two
processes each: ``sh`` and its ``sleep``), started eight at a time and all
removed at the end. Each count is timed with ``time.thread_time`` (the call
runs in the calling thread) and ``time.perf_counter``; the figures are the
median and mean over ``CALLS`` rounds after one warm-up call, each round
calling every way in turn.

Measured: :class:`~exporter.processes.CgroupProcessCounter` as the exporter
wires it (cgroup.procs under ``/sys/fs/cgroup``, each container's directory
remembered between calls), the one-shot ``count_processes`` (every cgroup
found again from its pid) and the pid-namespace scan they fall back to
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

N = 50
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


def _time(ways: dict[str, Callable[[Mapping[str, int]], Any]], pids: dict[str, int]) -> None:
    """Time the ways in turn, round after round, so drift on a shared machine hits all alike."""
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
    ways: dict[str, Callable[[Mapping[str, int]], Any]] = {
        "CgroupProcessCounter (as wired; directories remembered)": counter,
        "count_processes (one-shot; each cgroup found from its pid)": (processes.count_processes),
        "count_processes_by_namespace (the fallback)": processes.count_processes_by_namespace,
    }
    for count in ways.values():
        _check(count, pids)
    _time(ways, pids)


if __name__ == "__main__":
    main()
