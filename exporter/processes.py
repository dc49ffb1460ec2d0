"""Per-container process, thread and open-fd counts, read from the host's /proc.

A container's processes are those in its init's pid namespace, so processes
started by ``docker exec`` (children of the shim, not of init) count too.
Counting needs the host's processes to be visible (the exporter runs on the
host, or with ``pid: host``); where they are not, nothing is returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import psutil


class ProcessCounts(NamedTuple):
    """How many processes, threads and open file descriptors a container has."""

    processes: int
    threads: int
    fds: int


def _pid_namespace(proc_root: str, pid: int) -> str | None:
    try:
        return os.readlink(f"{proc_root}/{pid}/ns/pid")
    except OSError:
        return None


def count_processes(
    init_pids: Mapping[str, int], proc_root: str = "/proc"
) -> dict[str, ProcessCounts]:
    """Return counts per container id, given each container's init pid on the host."""
    by_namespace: dict[str, str] = {}
    for cid, pid in init_pids.items():
        ns = _pid_namespace(proc_root, pid) if pid > 0 else None
        if ns is not None:
            by_namespace[ns] = cid
    host_ns = _pid_namespace(proc_root, 1)
    # A container sharing the host's pid namespace would claim every process.
    if host_ns is not None:
        by_namespace.pop(host_ns, None)
    totals: dict[str, list[int]] = {cid: [0, 0, 0] for cid in by_namespace.values()}
    if not totals:
        return {}
    for pid in psutil.pids():
        owner = by_namespace.get(_pid_namespace(proc_root, pid) or "")
        if owner is None:
            continue
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                threads, fds = proc.num_threads(), proc.num_fds()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # exited between the listing and the read, or not ours to see
        row = totals[owner]
        row[0] += 1
        row[1] += threads
        row[2] += fds
    return {cid: ProcessCounts(*row) for cid, row in totals.items()}
