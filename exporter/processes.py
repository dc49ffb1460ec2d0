"""Per-container process, thread and open-fd counts, read from the host's cgroups and /proc.

A container's processes are the pids in its cgroup's ``cgroup.procs`` (and
in the cgroups below it, where a container nests its own): v1 the ``pids``
hierarchy, else ``cpuacct`` or ``memory``; v2 the unified directory. The
cgroup is found from the init pid's ``/proc/<pid>/cgroup`` exactly as the
cgroup stats source finds it (:class:`~exporter.cgroupfs.ContainerCgroup`),
so processes started by ``docker exec`` (put in the container's cgroup, not
under its init) count too. A poll costs O(containers + their processes), not
O(host processes); :class:`CgroupProcessCounter` remembers each directory.

Which figure each number is:

- processes: the pids in ``cgroup.procs`` (thread group leaders, not threads).
- threads: the cgroup's own ``pids.current`` where the kernel has it (v2 with
  the pids controller, v1's ``pids`` hierarchy): the tasks in the cgroup and
  those below it, every thread of every process counted, as ``pids.max``
  limits them. Without it, the sum of each process's ``Threads:`` in
  ``/proc/<pid>/status`` (the same figure, read per process).
- fds: each process's open descriptors, from one ``stat()`` of
  ``/proc/<pid>/fd`` (Linux >= 6.2 reports the count as its size), else by
  listing the directory.

So a container costs one read of ``cgroup.procs``, one of ``pids.current``
and one ``stat()`` per process: less than its stats read, where reading
each process's status and listing its fds cost more. A container with a
process whose fds may not be counted (a non-root exporter, another user's
process) gets no counts rather than short ones.

The cgroup stats source counts with these same functions in its own pass
over the files it holds open (``count_processes``); this counter takes the
containers it did not count (those whose stats come from the engine).

Where a container's cgroup files cannot be read (the exporter in a container
without the host's cgroup tree), its processes are found the old way: every
host pid whose pid namespace is its init's (:func:`count_processes_by_namespace`).
Either way the host's processes must be visible (on the host, or ``pid: host``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping

from exporter.cgroupfs import (
    GONE,
    CgroupNotLocated,
    ContainerCgroup,
    NotTheContainers,
    cgroup_pids,
    namespace,
    read_file,
)
from exporter.snapshot import ProcessCounts


class ProcessesUnseen(Exception):
    """A process is there but not ours to read (no ptrace rights on its fd directory)."""


def fds_counted_by_stat(proc_root: str) -> bool:
    """Return whether ``stat()`` of a ``<proc_root>/<pid>/fd`` gives its open fds (Linux >= 6.2).

    Older kernels (and a recorded tree, a plain directory) give a size that is
    not the count: then the directory is listed.
    """
    where = f"{proc_root}/self/fd"
    try:
        size = os.stat(where).st_size
        listed = len(os.listdir(where))
    except OSError:
        return False
    # The listing's own descriptor is in it; another thread may open or close one meanwhile.
    return size > 0 and abs(listed - 1 - size) <= 2


def _threads_and_fds(
    proc_root: str, pid: int, *, threads_too: bool = True, fds_by_stat: bool = False
) -> tuple[int, int] | None:
    """Return (threads, open fds) of ``pid``, or None if it has exited; ProcessesUnseen if not ours.

    Threads are 0 unless ``threads_too``; fds come from one stat() when
    ``fds_by_stat`` (a 0 is checked by listing: an old kernel, or no rights).
    """
    try:
        threads = 0
        if threads_too:
            status = read_file(f"{proc_root}/{pid}/status")
            start = status.index(b"\nThreads:") + 9
            threads = int(status[start : status.index(b"\n", start)])
        fds = os.stat(f"{proc_root}/{pid}/fd").st_size if fds_by_stat else 0
        if not fds:
            fds = len(os.listdir(f"{proc_root}/{pid}/fd"))
    except PermissionError as e:
        raise ProcessesUnseen(pid) from e
    except OSError as e:
        if e.errno in GONE:
            return None  # exited since it was listed
        raise
    except ValueError:
        return None  # no Threads: line (cut short while exiting)
    return threads, fds


def count_pids(
    proc_root: str, pids: Iterable[int], tasks: int | None = None, fds_by_stat: bool = False
) -> ProcessCounts:
    """Return the counts of ``pids``; threads are ``tasks`` when the cgroup counted them.

    Raises ProcessesUnseen when one of them is not ours to read (a partial
    count would pass for a real one), OSError when /proc cannot be read.
    """
    processes = threads = fds = 0
    for pid in pids:
        counts = _threads_and_fds(
            proc_root, pid, threads_too=tasks is None, fds_by_stat=fds_by_stat
        )
        if counts is not None:
            processes += 1
            threads += counts[0]
            fds += counts[1]
    return ProcessCounts(processes, threads if tasks is None else tasks, fds)


def parse_tasks(data: bytes) -> int | None:
    """Return a ``pids.current``'s count (tasks, threads included), None if it is not a number."""
    try:
        return int(data)
    except ValueError:
        return None


def _tasks(directory: str) -> int | None:
    """Return the cgroup's ``pids.current`` (tasks, threads included), or None without one."""
    try:
        return parse_tasks(read_file(f"{directory}/pids.current"))
    except OSError:
        return None


def _locate(proc_root: str, cgroup_root: str, cid: str, pid: int) -> str | None:
    """Return the container's cgroup directory; None if its init is gone or not its own.

    Raises CgroupNotLocated or OSError when the cgroup files cannot be read.
    """
    try:
        cgroup_text = read_file(f"{proc_root}/{pid}/cgroup")
    except OSError as e:
        if e.errno in GONE:
            return None
        raise
    try:
        return ContainerCgroup(cgroup_root, cid, pid, cgroup_text).procs_dir()
    except NotTheContainers:
        # The pid was reused: the ns scan would count a stranger's processes too.
        return None


class CgroupProcessCounter:
    """Counts processes, threads and fds per container; the poller calls it at every poll.

    A container's cgroup directory is found once, from its init pid, and
    remembered: its path names the container's id, so it is the container's
    for as long as it exists, and later calls go straight to its
    ``cgroup.procs`` (finding it is most of the cost of a container with
    few processes). A directory that has gone is looked for again from the
    pid; those of containers a call does not list are forgotten. Overlapping
    calls are safe: each builds its own map, and the last one kept is as
    good as any.
    """

    def __init__(self, proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> None:
        self._proc = proc_root.rstrip("/") or "/"
        self._cgroup = cgroup_root.rstrip("/") or "/"
        self._dirs: dict[str, str] = {}
        self._fds_by_stat = fds_counted_by_stat(self._proc)

    def __call__(self, init_pids: Mapping[str, int]) -> dict[str, ProcessCounts]:
        """Return counts per container id, given each container's init pid on the host."""
        known = self._dirs
        found: dict[str, str] = {}
        counts: dict[str, ProcessCounts] = {}
        unreadable: dict[str, int] = {}
        for cid, pid in init_pids.items():
            if pid <= 0:
                continue
            try:
                located = self._find(cid, pid, known)
            except (CgroupNotLocated, OSError):
                unreadable[cid] = pid
                continue
            if located is None:
                continue
            directory, pids = located
            found[cid] = directory
            try:
                counts[cid] = count_pids(self._proc, pids, _tasks(directory), self._fds_by_stat)
            except (ProcessesUnseen, OSError):
                continue  # a partial count would pass for a real one: give none
        self._dirs = found
        if unreadable:
            counts.update(count_processes_by_namespace(unreadable, self._proc))
        return counts

    def _find(self, cid: str, pid: int, known: dict[str, str]) -> tuple[str, set[int]] | None:
        """Return the container's cgroup directory and pids; None if its init is gone or reused.

        Raises CgroupNotLocated or OSError when the cgroup files cannot be read.
        """
        directory = known.get(cid)
        if directory is not None:
            # The cgroup went (a restart may make another): ask the pid below.
            with contextlib.suppress(OSError):
                return directory, cgroup_pids(directory)
        directory = _locate(self._proc, self._cgroup, cid, pid)
        if directory is None:
            return None
        return directory, cgroup_pids(directory)


def count_processes(
    init_pids: Mapping[str, int], proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup"
) -> dict[str, ProcessCounts]:
    """Return counts per container id, given each container's init pid on the host (one-shot)."""
    return CgroupProcessCounter(proc_root, cgroup_root)(init_pids)


def count_processes_by_namespace(
    init_pids: Mapping[str, int], proc_root: str = "/proc"
) -> dict[str, ProcessCounts]:
    """Return counts per container id by scanning every host pid's namespace: O(host processes)."""
    proc_root = proc_root.rstrip("/") or "/"
    by_namespace: dict[str, str] = {}
    for cid, pid in init_pids.items():
        ns = namespace(proc_root, pid, "pid") if pid > 0 else None
        if ns is not None:
            by_namespace[ns] = cid
    host_ns = namespace(proc_root, 1, "pid")
    # A container sharing the host's pid namespace would claim every process.
    if host_ns is not None:
        by_namespace.pop(host_ns, None)
    if not by_namespace:
        return {}
    members: dict[str, list[int]] = {cid: [] for cid in by_namespace.values()}
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            owner = by_namespace.get(namespace(proc_root, entry, "pid") or "")
            if owner is not None:
                members[owner].append(int(entry))
    counts: dict[str, ProcessCounts] = {}
    for cid, pids in members.items():
        try:
            counts[cid] = count_pids(proc_root, pids)
        except (ProcessesUnseen, OSError):
            continue  # a partial count would pass for a real one: give none
    return counts
