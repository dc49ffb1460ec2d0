"""Stats straight from the kernel: each container's cgroup files and its /proc net/dev.

The engine hands out stats once per internal tick (~1 s) and spends its own
CPU on every call; the files it reads are right here. For each container the
source reads ``<proc_root>/<pid>/net/dev`` (the container's own network
namespace, ``lo`` excluded), ``<proc_root>/<pid>/cgroup`` (where its cgroup
is, and proof that the pid is still the container's) and its cgroup files:

- CPU: v1 ``cpuacct.usage`` and ``cpuacct.stat`` (USER_HZ ticks), and the
  cpu controller's ``cpu.stat`` for CFS throttling; v2 ``cpu.stat`` (usec).
- Memory: v1 ``memory.usage_in_bytes``, ``memory.stat`` (``cache``,
  ``total_inactive_file``, ``total_rss``, ``total_swap``,
  ``total_mapped_file``), ``memory.max_usage_in_bytes``, ``memory.failcnt``
  and ``memory.oom_control`` (``oom_kill``); v2 ``memory.current``,
  ``memory.stat`` (``file``, ``inactive_file``, ``anon``, ``file_mapped``),
  ``memory.events`` (``oom_kill``) and, where the kernel has them,
  ``memory.peak`` and ``memory.swap.current``.
- Block I/O, summed over devices: v1 ``blkio.throttle.io_service_bytes_recursive``
  and ``blkio.throttle.io_serviced_recursive``; v2 ``io.stat``.

These are the very files the engine reads on v1 (it uses the throttle files
for block I/O too), so the numbers match its stats call. Files are kept open
between polls and re-read from offset 0 (see :class:`CgroupStatsSource`).
What can go wrong is classified per container and returned, never raised:
the pid is gone -> :class:`~exporter.errors.NotFoundError` (the poller
skips it); a file is missing, unreadable or garbled, or the pid is not in
the container's cgroup -> :class:`~exporter.errors.StatsUnavailableError`
(a fallback source asks the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from exporter.cgroupfs import (
    GONE,
    CgroupNotLocated,
    ContainerCgroup,
    Garbled,
    HeldFiles,
    NetDev,
    NotTheContainers,
    has_child_cgroups,
    interfaces,
    namespace,
    parse_blkio_v1,
    parse_fields,
    parse_io_stat_v2,
    parse_net_dev,
    parse_number,
    parse_optional_fields,
    parse_pids,
    pids_below,
    read_file,
)
from exporter.errors import ExporterError, NotFoundError, StatsUnavailableError
from exporter.models import ContainerInfo, ContainerStats
from exporter.processes import ProcessesUnseen, count_pids, fds_counted_by_stat, parse_tasks
from exporter.snapshot import ProcessCounts
from exporter.sources.base import SourcedStats, StatsResult

log = logging.getLogger(__name__)

_NS_PER_SECOND = 1_000_000_000
_NS_PER_USEC = 1_000
#: cpuacct.stat counts USER_HZ ticks (100 on Linux; asked, not assumed).
_CLK_TCK = os.sysconf("SC_CLK_TCK")

#: (controller, file, required). A required file missing makes the container
#: unreadable here (the engine is asked instead); an optional one (a
#: controller some hosts leave unmounted, a file newer kernels add) only
#: leaves its fields None.
_V1_FILES = (
    ("cpuacct", "cpuacct.usage", True),
    ("cpuacct", "cpuacct.stat", True),
    ("memory", "memory.usage_in_bytes", True),
    ("memory", "memory.stat", True),
    ("blkio", "blkio.throttle.io_service_bytes_recursive", True),
    ("blkio", "blkio.throttle.io_serviced_recursive", True),
    ("cpu", "cpu.stat", False),
    ("memory", "memory.max_usage_in_bytes", False),
    ("memory", "memory.failcnt", False),
    ("memory", "memory.oom_control", False),
)
#: (file, required), as for v1.
_V2_FILES = (
    ("cpu.stat", True),
    ("memory.current", True),
    ("memory.stat", True),
    ("io.stat", True),
    ("memory.events", False),
    ("memory.peak", False),  # kernels >= 5.19
    ("memory.swap.current", False),  # only with swap accounting
)
#: The optional files only a group of families needs: ``--collect.disable``
#: of the group spares reading them (required files are always read).
GROUP_FILES = {
    "cpu": frozenset({"cpu.stat"}),
    "memory": frozenset(
        {"memory.max_usage_in_bytes", "memory.failcnt", "memory.peak", "memory.swap.current"}
    ),
    "oom": frozenset({"memory.oom_control", "memory.events"}),
}
#: The first two files of every container, before its cgroup files.
_NET_DEV, _CGROUP, _FIRST_CGROUP_FILE = 0, 1, 2


def cgroup_files_readable(
    proc_root: str | os.PathLike[str], cgroup_root: str | os.PathLike[str]
) -> bool:
    """Return True when ``cgroup_root`` is a directory and ``<proc>/self/cgroup`` is readable."""
    try:
        with open(os.path.join(proc_root, "self", "cgroup"), "rb") as f:
            f.read(1)
    except OSError:
        return False
    return os.path.isdir(cgroup_root)


Contents = Sequence[bytes | None]


def _number(data: bytes | None, what: str) -> int | None:
    return None if data is None else parse_number(data, what)


def _throttling(
    cpu_stat: bytes | None, time_key: bytes, ns_per_unit: int
) -> tuple[int | None, int | None, int | None]:
    """Return (periods, throttled periods, throttled ns) from a cpu.stat; None where absent."""
    if cpu_stat is None:
        return None, None, None
    periods, throttled, throttled_time = parse_optional_fields(
        cpu_stat, "cpu.stat", b"nr_periods", b"nr_throttled", time_key
    )
    return periods, throttled, None if throttled_time is None else throttled_time * ns_per_unit


def _with_net(stats: ContainerStats, net: NetDev | None) -> ContainerStats:
    """Return ``stats`` with the network counters; bytes 0 and no packets without a network.

    A container on the host's network has none of its own to report (the
    engine shows none either); the byte counters stay 0 as they always were.
    """
    if net is None:
        return dataclasses.replace(stats, net_rx_bytes=0, net_tx_bytes=0)
    return dataclasses.replace(
        stats,
        net_rx_bytes=net.rx_bytes,
        net_tx_bytes=net.tx_bytes,
        net_rx_packets=net.rx_packets,
        net_tx_packets=net.tx_packets,
        net_rx_errors=net.rx_errors,
        net_tx_errors=net.tx_errors,
        net_rx_dropped=net.rx_dropped,
        net_tx_dropped=net.tx_dropped,
    )


def stats_v1(contents: Contents, net: NetDev | None, now: float) -> ContainerStats:
    """Return ContainerStats from the v1 files read in ``_V1_FILES`` order (None: absent)."""
    usage, cpu_stat, mem_usage, mem_stat, io_bytes, io_ops = (
        _required(contents[i], _V1_FILES[i][1]) for i in range(6)
    )
    throttle_stat, max_usage, failcnt, oom_control = contents[6:10]
    user, system = parse_fields(cpu_stat, "cpuacct.stat", b"user", b"system")
    cache, inactive = parse_fields(mem_stat, "memory.stat", b"cache", b"total_inactive_file")
    # The hierarchical figures, as cAdvisor reads them; total_swap only with swap accounting.
    rss, swap, mapped = parse_optional_fields(
        mem_stat, "memory.stat", b"total_rss", b"total_swap", b"total_mapped_file"
    )
    read_bytes, write_bytes = parse_blkio_v1(io_bytes, "blkio.throttle.io_service_bytes_recursive")
    read_ops, write_ops = parse_blkio_v1(io_ops, "blkio.throttle.io_serviced_recursive")
    oom = None
    if oom_control is not None:  # the oom_kill line came with kernel 4.13
        (oom,) = parse_optional_fields(oom_control, "memory.oom_control", b"oom_kill")
    periods, throttled, throttled_ns = _throttling(throttle_stat, b"throttled_time", 1)
    stats = ContainerStats(
        time=now,
        cpu_total_usage=parse_number(usage, "cpuacct.usage"),
        # The engine converts ticks the same way (containerd's cgroups v1 cpuacct).
        cpu_user_usage=user * _NS_PER_SECOND // _CLK_TCK,
        cpu_system_usage=system * _NS_PER_SECOND // _CLK_TCK,
        memory_usage=parse_number(mem_usage, "memory.usage_in_bytes"),
        memory_cache=cache,
        memory_inactive_file=inactive,
        blk_read_bytes=read_bytes,
        blk_write_bytes=write_bytes,
        blk_read_ops=read_ops,
        blk_write_ops=write_ops,
        memory_rss=rss,
        memory_swap=swap,
        memory_mapped_file=mapped,
        memory_failcnt=_number(failcnt, "memory.failcnt"),
        memory_max_usage=_number(max_usage, "memory.max_usage_in_bytes"),
        oom_events=oom,
        cpu_periods=periods,
        cpu_throttled_periods=throttled,
        cpu_throttled_time=throttled_ns,
    )
    return _with_net(stats, net)


def stats_v2(contents: Contents, net: NetDev | None, now: float) -> ContainerStats:
    """Return ContainerStats from the v2 files read in ``_V2_FILES`` order (None: absent)."""
    cpu_stat, mem_current, mem_stat, io_stat = (
        _required(contents[i], _V2_FILES[i][0]) for i in range(4)
    )
    events, peak, swap = contents[4:7]
    usage, user, system = parse_fields(
        cpu_stat, "cpu.stat", b"usage_usec", b"user_usec", b"system_usec"
    )
    file, inactive = parse_fields(mem_stat, "memory.stat", b"file", b"inactive_file")
    anon, mapped = parse_optional_fields(mem_stat, "memory.stat", b"anon", b"file_mapped")
    read_bytes, write_bytes, read_ops, write_ops = parse_io_stat_v2(io_stat)
    oom = None
    if events is not None:
        (oom,) = parse_optional_fields(events, "memory.events", b"oom_kill")
    periods, throttled, throttled_ns = _throttling(cpu_stat, b"throttled_usec", _NS_PER_USEC)
    stats = ContainerStats(
        time=now,
        cpu_total_usage=usage * _NS_PER_USEC,
        cpu_user_usage=user * _NS_PER_USEC,
        cpu_system_usage=system * _NS_PER_USEC,
        memory_usage=parse_number(mem_current, "memory.current"),
        memory_cache=file,
        memory_inactive_file=inactive,
        blk_read_bytes=read_bytes,
        blk_write_bytes=write_bytes,
        blk_read_ops=read_ops,
        blk_write_ops=write_ops,
        memory_rss=anon,
        memory_swap=_number(swap, "memory.swap.current"),
        memory_mapped_file=mapped,
        # v2 has no failcnt (memory.events' "max" counts something else).
        memory_max_usage=_number(peak, "memory.peak"),
        oom_events=oom,
        cpu_periods=periods,
        cpu_throttled_periods=throttled,
        cpu_throttled_time=throttled_ns,
    )
    return _with_net(stats, net)


def _required(data: bytes | None, what: str) -> bytes:
    if data is None:
        raise Garbled(f"{what} was not located")
    return data


class _Files(HeldFiles):
    """One container's files, and what was learnt locating them."""

    __slots__ = ("cgroup_text", "host_network", "present", "procs", "version")

    def __init__(
        self,
        cgroup_text: bytes,
        version: int,
        paths: tuple[str, ...],
        host_network: bool,
        present: tuple[bool, ...],
        procs: _ProcsFiles | None = None,
    ) -> None:
        # paths: net/dev, the pid's cgroup file, the cgroup files in
        # _V1_FILES/_V2_FILES order (those not present left out), then
        # cgroup.procs and pids.current when processes are counted.
        super().__init__(paths)
        self.cgroup_text = cgroup_text
        self.version = version
        self.host_network = host_network
        #: Per row of _V1_FILES/_V2_FILES: whether its file is among the paths.
        self.present = present
        #: Where the process counts are read from, None when they are not counted.
        self.procs = procs

    def contents(self) -> list[bytes | None]:
        """Return the cgroup files' contents in table order, None for those not present."""
        read = iter(range(_FIRST_CGROUP_FILE, len(self.paths)))
        return [self.read(next(read)) if here else None for here in self.present]


class _ProcsFiles(NamedTuple):
    """Where a container's processes are listed: the directory, its files' places in the paths."""

    directory: str
    directory_at: int  # the directory itself: its links say whether cgroups nest below
    procs_at: int  # cgroup.procs
    tasks_at: int | None  # pids.current, where the kernel has it


class CgroupStatsSource:
    """A :class:`~exporter.sources.base.StatsSource` on the kernel's cgroup and /proc files.

    ``proc_root`` is the host's ``/proc`` and ``cgroup_root`` its
    ``/sys/fs/cgroup``; both are settings so tests can point them at a
    recorded tree. A container's files are located once per (id, pid) and
    then kept open and re-read from offset 0 at every poll, as netdata does:
    a poll costs one read per file and no open() or close(). A held
    ``/proc/<pid>/cgroup`` names the process it was opened on, not whoever
    has the pid now, so reading it proves the container is still alive
    (ESRCH once it is gone). Descriptors of containers a poll no longer
    lists are closed at the end of that poll.

    With ``count_processes`` it also counts each container's processes in
    the same pass (:mod:`exporter.processes` says which figure each count
    is), from its ``cgroup.procs`` and ``pids.current`` held open beside the
    stats files, and returns them with the sample (``counted``), so a steady
    poll walks the containers once.

    Holding costs up to twelve descriptors per container (nine on v2), three
    more when processes are counted. The entry
    point raises the soft ``RLIMIT_NOFILE`` to the hard limit at start
    (:func:`raise_open_files_limit`), and the source holds at most
    ``max_held_files`` (default :func:`held_files_budget`: the soft limit
    less :data:`RESERVED_FDS`); containers past that are read with an
    open/read/close per file, which costs about twice the CPU.
    """

    def __init__(
        self,
        proc_root: str | os.PathLike[str] = "/proc",
        cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
        *,
        max_held_files: int | None = None,
        fallback: str | None = None,
        disabled_groups: Sequence[str] = (),
        count_processes: bool = False,
    ) -> None:
        self._proc = os.fspath(proc_root).rstrip("/") or "/"
        #: Count each container's processes in the same pass as its stats.
        self._count = count_processes
        self._fds_by_stat = count_processes and fds_counted_by_stat(self._proc)
        #: Who reads what this source cannot (named in the log), or None when nobody does.
        self._fallback = fallback
        self._skip = frozenset().union(*(GROUP_FILES.get(g, frozenset()) for g in disabled_groups))
        self._cgroup = os.fspath(cgroup_root).rstrip("/") or "/"
        self._files: dict[tuple[str, int], _Files] = {}
        self._host_netns: str | None = None
        self._host_interfaces: frozenset[bytes] | None = None
        self._held = 0
        self._max_held = held_files_budget() if max_held_files is None else max_held_files
        # Polls may overlap (a timed-out one keeps running in its thread); held
        # descriptors must never be closed under a read, nor their numbers reused.
        self._lock = threading.Lock()
        self._warned_blind = False

    @property
    def name(self) -> str:
        """Return ``cgroup``."""
        return "cgroup"

    @property
    def held_files(self) -> int:
        """Return how many descriptors the source holds open between polls."""
        return self._held

    @property
    def held_files_budget(self) -> int:
        """Return how many descriptors the source may hold open at most."""
        return self._max_held

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return one kernel sample per container, every file read in one worker thread."""
        if not containers:
            return {}
        return await asyncio.to_thread(self.read_blocking, list(containers))

    def read_blocking(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return one sample (or its error) per container id; blocks on file I/O, never raises."""
        with self._lock:
            self._host_netns = self._netns(1)
            self._host_interfaces = None
            previous = self._files
            kept: dict[tuple[str, int], _Files] = {}
            results: dict[str, StatsResult] = {}
            for c in containers:
                try:
                    results[c.id] = self._read_one(c, previous, kept)
                except (NotFoundError, StatsUnavailableError) as e:
                    results[c.id] = e
                except Exception as e:  # noqa: BLE001 - one odd container must not fail the rest
                    self._drop(kept, (c.id, c.pid))
                    results[c.id] = _unavailable(c, f"unexpected {type(e).__name__}: {e}", e)
            # Containers this poll did not list are gone or stopped: let their files go.
            for files in previous.values():
                self._held -= files.release()
            self._files = kept
            self._warn_if_blind(containers, results)
            return results

    def _warn_if_blind(
        self, containers: Sequence[ContainerInfo], results: dict[str, StatsResult]
    ) -> None:
        """Say once if no container's pid is under proc_root: likely not the host's /proc."""
        with_pid = [c for c in containers if c.pid > 0]
        if self._warned_blind or not with_pid:
            return
        if all(isinstance(results[c.id], NotFoundError) for c in with_pid):
            self._warned_blind = True
            log.warning(
                "none of %d running containers' pids is under %s, which is not the host's "
                "/proc (a container needs pid: host and the host's /proc mounted): %s",
                len(with_pid),
                self._proc,
                f"their stats come from {self._fallback} instead, slower"
                if self._fallback
                else "their stats are missing",
            )
        else:
            self._warned_blind = True  # the pids are visible: nothing to say, ever

    def __del__(self) -> None:
        # Raw descriptors are not closed by the garbage collector on their own.
        with contextlib.suppress(Exception):  # late in interpreter shutdown, anything goes
            for files in self._files.values():
                files.release()

    def close(self) -> None:
        """Close every held descriptor; the source stays usable and reopens on the next read."""
        with self._lock:
            for files in self._files.values():
                self._held -= files.release()
            self._files = {}

    def _read_one(
        self,
        c: ContainerInfo,
        previous: dict[tuple[str, int], _Files],
        kept: dict[tuple[str, int], _Files],
    ) -> SourcedStats:
        if c.pid <= 0:
            raise StatsUnavailableError(
                f"container {c.id[:12]}: no pid (not inspected or not running)"
            )
        key = (c.id, c.pid)
        files = previous.pop(key, None)
        if files is not None:
            kept[key] = files
            try:
                # net/dev first: the cgroup read after it proves that namespace was the container's.
                net_dev = files.read(_NET_DEV)
                cgroup_text = files.read(_CGROUP)
            except OSError as e:
                self._drop(kept, key)
                raise self._proc_error(c, e) from e
            if cgroup_text != files.cgroup_text:
                # Moved to another cgroup, or (files not held) the pid was reused: start over.
                self._drop(kept, key)
                files = None
        if files is None:
            proc = f"{self._proc}/{c.pid}"
            try:
                net_dev = read_file(f"{proc}/net/dev")
                cgroup_text = read_file(f"{proc}/cgroup")
            except OSError as e:
                raise self._proc_error(c, e) from e
            files = self._locate(c, cgroup_text, net_dev, proc)
            kept[key] = files
            self._try_hold(files)

        try:
            contents = files.contents()
        except OSError as e:
            self._drop(kept, key)
            # The cgroup goes (ENOENT, or ENODEV through a held descriptor) when the container does.
            if e.errno in (*GONE, errno.ENODEV) and not os.path.exists(f"{self._proc}/{c.pid}"):
                raise NotFoundError(None, f"container {c.id[:12]}: pid {c.pid} is gone") from e
            where = e.filename or "a cgroup file"
            raise _unavailable(c, f"cannot read {where}: {e.strerror}", e) from e
        now = time.time()
        try:
            net = None if files.host_network else parse_net_dev(net_dev)
            build = stats_v1 if files.version == 1 else stats_v2
            stats = build(contents, net, now)
        except Garbled as e:
            raise _unavailable(c, str(e), e) from e
        if files.procs is None:
            return SourcedStats(stats, "cgroup")
        return SourcedStats(stats, "cgroup", self._processes(files.procs, files), counted=True)

    def _processes(self, procs: _ProcsFiles, files: _Files) -> ProcessCounts | None:
        """Count the container's processes from its cgroup.procs; None when they cannot be."""
        try:
            pids = parse_pids(files.read(procs.procs_at))
            if has_child_cgroups(files.stat(procs.directory_at)):
                pids |= pids_below(procs.directory)
            tasks = None if procs.tasks_at is None else parse_tasks(files.read(procs.tasks_at))
            return count_pids(self._proc, pids, tasks, self._fds_by_stat)
        except (ProcessesUnseen, OSError, Garbled):
            return None  # gone mid-read, or not ours to read: none rather than a short count

    def _try_hold(self, files: _Files) -> None:
        """Keep the files open for later polls, if the budget allows and they still match."""
        if self._held + len(files.paths) > self._max_held:
            return
        try:
            files.hold()
        except OSError:
            return  # read by path this time; the next poll tries again
        self._held += len(files.paths)
        try:
            # Opened after the check by path: make sure it is still the same process.
            same = files.read(_CGROUP) == files.cgroup_text
        except OSError:
            same = False
        if not same:
            self._held -= files.release()

    def _drop(self, kept: dict[tuple[str, int], _Files], key: tuple[str, int]) -> None:
        files = kept.pop(key, None)
        if files is not None:
            self._held -= files.release()

    def _proc_error(self, c: ContainerInfo, e: OSError) -> ExporterError:
        if e.errno in GONE:
            return NotFoundError(None, f"container {c.id[:12]}: pid {c.pid} is gone")
        return _unavailable(c, f"cannot read {self._proc}/{c.pid}: {e.strerror}", e)

    def _locate(self, c: ContainerInfo, cgroup_text: bytes, net_dev: bytes, proc: str) -> _Files:
        """Resolve the container's cgroup directories from its pid's ``cgroup`` file."""
        try:
            where = ContainerCgroup(self._cgroup, c.id, c.pid, cgroup_text)
            paths = [f"{proc}/net/dev", f"{proc}/cgroup"]
            present: list[bool] = []
            if "cpuacct" in where.v1 or "memory" in where.v1:
                version = 1
                dirs: dict[str, str | None] = {}
                for controller, file, required in _V1_FILES:
                    if controller not in dirs:
                        try:
                            dirs[controller] = where.v1_dir(controller)
                        except NotTheContainers:
                            raise
                        except CgroupNotLocated:
                            if required:
                                raise
                            dirs[controller] = None  # e.g. no cpu controller: no throttling
                    path = f"{dirs[controller]}/{file}"
                    here = dirs[controller] is not None and (
                        required or (file not in self._skip and os.path.exists(path))
                    )
                    present.append(here)
                    if here:
                        paths.append(path)
            else:
                version = 2
                directory = where.v2_dir()
                for file, required in _V2_FILES:
                    path = f"{directory}/{file}"
                    here = required or (file not in self._skip and os.path.exists(path))
                    present.append(here)
                    if here:
                        paths.append(path)
        except CgroupNotLocated as e:
            raise StatsUnavailableError(str(e)) from e
        procs = self._procs_files(where, paths) if self._count else None
        host_network = self._host_network(c.pid, net_dev)
        return _Files(cgroup_text, version, tuple(paths), host_network, tuple(present), procs)

    @staticmethod
    def _procs_files(where: ContainerCgroup, paths: list[str]) -> _ProcsFiles | None:
        """Add the files that list the container's processes to ``paths``; None if not located."""
        try:
            directory = where.procs_dir()
        except CgroupNotLocated:
            return None  # the stats stand; the poller's counter has its own ways
        paths += (directory, f"{directory}/cgroup.procs")
        directory_at, procs_at, tasks_at = len(paths) - 2, len(paths) - 1, None
        if os.path.exists(f"{directory}/pids.current"):
            paths.append(f"{directory}/pids.current")
            tasks_at = len(paths) - 1
        return _ProcsFiles(directory, directory_at, procs_at, tasks_at)

    def _host_network(self, pid: int, net_dev: bytes) -> bool:
        """Return whether ``pid`` shares the host's network namespace (the engine shows none)."""
        netns = self._netns(pid)
        if netns is not None and self._host_netns is not None:
            return netns == self._host_netns
        # The ns links need ptrace rights (not ours as a non-root user, nor for pid 1
        # in some sandboxes); net/dev is world-readable. The host's namespace has
        # the engine's bridge and the containers' veth peers, a bridged container
        # only lo and its own eth*: compare interface names, veths aside (they churn).
        if self._host_interfaces is None:
            try:
                self._host_interfaces = interfaces(read_file(f"{self._proc}/1/net/dev"))
            except (OSError, Garbled):
                self._host_interfaces = frozenset()
        try:
            mine = interfaces(net_dev)
        except Garbled:
            return False
        return bool(self._host_interfaces) and mine == self._host_interfaces

    def _netns(self, pid: int | str) -> str | None:
        return namespace(self._proc, pid, "net")


#: Descriptors the held files leave for the rest (HTTP and engine connections, state, logs):
#: above --web.max-connections and --poll.concurrency at their defaults, with room to spare.
RESERVED_FDS = 2048


def _soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Prometheus and dockerd do).

    Returns (soft, hard) as they then are; an infinite hard limit counts as
    2**20 (Linux's default ``fs.nr_open``). The hard limit is the operator's
    (``LimitNOFILE=``, ``ulimits:``) and is never raised.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as e:  # a hard limit above fs.nr_open
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, e)
    return _soft_limit(), (1 << 20 if hard == resource.RLIM_INFINITY else int(hard))


def held_files_budget() -> int:
    """Return how many descriptors may be held between polls: the soft limit less a reserve."""
    soft = _soft_limit()
    return soft - min(soft // 2, RESERVED_FDS)


def _unavailable(c: ContainerInfo, why: str, cause: BaseException) -> StatsUnavailableError:
    error = StatsUnavailableError(f"container {c.id[:12]}: {why}")
    error.__cause__ = cause
    return error
