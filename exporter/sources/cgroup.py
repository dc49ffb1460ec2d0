"""Stats straight from the kernel: each container's cgroup files and its /proc net/dev.

The engine hands out stats once per internal tick (~1 s) and spends its own
CPU on every call; the files it reads are right here. For each container the
source reads ``<proc_root>/<pid>/net/dev`` (the container's own network
namespace, ``lo`` excluded), ``<proc_root>/<pid>/cgroup`` (where its cgroup
is, and proof that the pid is still the container's) and its cgroup files:

- CPU: v1 ``cpuacct.usage`` and ``cpuacct.stat`` (USER_HZ ticks); v2
  ``cpu.stat`` (usec).
- Memory: v1 ``memory.usage_in_bytes`` and ``memory.stat`` (``cache``,
  ``total_inactive_file``); v2 ``memory.current`` and ``memory.stat``
  (``file``, ``inactive_file``).
- Block I/O, summed over devices: v1 ``blkio.throttle.io_service_bytes_recursive``
  and ``blkio.throttle.io_serviced_recursive``; v2 ``io.stat``.

These are the very files the engine reads on v1 (it uses the throttle files
for block I/O too), so the numbers match its stats call. Files are kept open
between polls and re-read from offset 0 (see :class:`CgroupStatsSource`).
What can go wrong is classified per container and returned, never raised:
the pid is gone -> :class:`~exporter.errors.NotFoundError` (the collector
skips it); a file is missing, unreadable or garbled, or the pid is not in
the container's cgroup -> :class:`~exporter.errors.StatsUnavailableError`
(a fallback source asks the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Sequence

from exporter.errors import ExporterError, NotFoundError, StatsUnavailableError
from exporter.models import ContainerInfo, ContainerStats
from exporter.sources.base import SourcedStats, StatsResult

log = logging.getLogger(__name__)

#: One read of this size returns a whole cgroup or /proc seq file; larger ones loop.
_READ_SIZE = 32 * 1024
_NS_PER_SECOND = 1_000_000_000
_NS_PER_USEC = 1_000
#: cpuacct.stat counts USER_HZ ticks (100 on Linux; asked, not assumed).
_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The error numbers that mean "this process no longer exists".
_GONE = (errno.ENOENT, errno.ESRCH)

_V1_FILES = (
    ("cpuacct", "cpuacct.usage"),
    ("cpuacct", "cpuacct.stat"),
    ("memory", "memory.usage_in_bytes"),
    ("memory", "memory.stat"),
    ("blkio", "blkio.throttle.io_service_bytes_recursive"),
    ("blkio", "blkio.throttle.io_serviced_recursive"),
)
_V2_FILES = ("cpu.stat", "memory.current", "memory.stat", "io.stat")
#: The first two files of every container, before its cgroup files.
_NET_DEV, _CGROUP, _FIRST_CGROUP_FILE = 0, 1, 2


class _Garbled(ValueError):
    """A file's content is not what the kernel writes (cut short, or not a number)."""


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


def _read_path(path: str) -> bytes:
    """Return a file's bytes with one open and, for any file under 32 KiB, one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _pread_all(fd)
    finally:
        os.close(fd)


def _pread_all(fd: int) -> bytes:
    """Return the whole file behind ``fd``, read from offset 0.

    Reading a kernel seq file from offset 0 regenerates it, so a descriptor
    kept open gives fresh numbers at every poll without open() and close().
    """
    data = os.pread(fd, _READ_SIZE, 0)
    if len(data) == _READ_SIZE:
        chunks = [data]
        while chunk := os.pread(fd, _READ_SIZE, _READ_SIZE * len(chunks)):
            chunks.append(chunk)
        data = b"".join(chunks)
    return data


def _complete(data: bytes, what: str) -> bytes:
    """Return ``data`` if it ends as every kernel file does, with a newline."""
    if not data.endswith(b"\n"):
        raise _Garbled(f"{what} is empty or cut short")
    return data


def _int(token: bytes, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise _Garbled(f"{what}: {token[:40]!r} is not a number") from None


def _fields(data: bytes, what: str, *keys: bytes) -> list[int]:
    """Return the values of ``keys`` in a ``key value`` per line file (memory.stat, cpu.stat)."""
    text = b"\n" + _complete(data, what)
    values = []
    for key in keys:
        # "\ncache " cannot match "total_cache ": keys are found at line starts only.
        start = text.find(b"\n" + key + b" ")
        if start < 0:
            raise _Garbled(f"{what} has no {key.decode()!r} line")
        start += len(key) + 2
        values.append(_int(text[start : text.index(b"\n", start)], f"{what} {key.decode()}"))
    return values


def parse_net_dev(data: bytes) -> tuple[int, int]:
    """Return (rx bytes, tx bytes) summed over every interface but ``lo``."""
    lines = _complete(data, "net/dev").splitlines()
    if len(lines) < 2 or b"|" not in lines[0]:
        raise _Garbled("net/dev has no header")
    rx = tx = 0
    for line in lines[2:]:
        name, sep, rest = line.partition(b":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            raise _Garbled(f"net/dev: bad line {line[:60]!r}")
        if name.strip() == b"lo":
            continue
        rx += _int(fields[0], "net/dev rx_bytes")
        tx += _int(fields[8], "net/dev tx_bytes")
    return rx, tx


def parse_blkio_v1(data: bytes, what: str) -> tuple[int, int]:
    """Return (read, write) summed over devices from a v1 blkio ``..._recursive`` file."""
    read = write = 0
    lines = _complete(data, what).splitlines()
    # The kernel's last line is a bare "Total N" (per-device Total lines have 3 parts).
    if not lines[-1].startswith(b"Total "):
        raise _Garbled(f"{what} has no closing Total line")
    for line in lines[:-1]:
        parts = line.split()
        if len(parts) != 3:
            raise _Garbled(f"{what}: bad line {line[:60]!r}")
        op = parts[1]
        if op == b"Read":
            read += _int(parts[2], what)
        elif op == b"Write":
            write += _int(parts[2], what)
    _int(lines[-1][6:], what)
    return read, write


def parse_io_stat_v2(data: bytes) -> tuple[int, int, int, int]:
    """Return (rbytes, wbytes, rios, wios) summed over devices from a v2 ``io.stat``."""
    if not data:
        return 0, 0, 0, 0  # no I/O yet: the kernel writes nothing at all
    sums = {b"rbytes": 0, b"wbytes": 0, b"rios": 0, b"wios": 0}
    for line in _complete(data, "io.stat").splitlines():
        device, *pairs = line.split()
        if b":" not in device:
            raise _Garbled(f"io.stat: bad line {line[:60]!r}")
        for pair in pairs:
            key, sep, value = pair.partition(b"=")
            if not sep:
                raise _Garbled(f"io.stat: bad field {pair[:40]!r}")
            if key in sums:
                sums[key] += _int(value, f"io.stat {key.decode()}")
    return sums[b"rbytes"], sums[b"wbytes"], sums[b"rios"], sums[b"wios"]


def stats_v1(contents: Sequence[bytes], net: tuple[int, int], now: float) -> ContainerStats:
    """Return ContainerStats from the v1 files read in ``_V1_FILES`` order."""
    usage, cpu_stat, mem_usage, mem_stat, io_bytes, io_ops = contents
    user, system = _fields(cpu_stat, "cpuacct.stat", b"user", b"system")
    cache, inactive = _fields(mem_stat, "memory.stat", b"cache", b"total_inactive_file")
    read_bytes, write_bytes = parse_blkio_v1(io_bytes, "blkio.throttle.io_service_bytes_recursive")
    read_ops, write_ops = parse_blkio_v1(io_ops, "blkio.throttle.io_serviced_recursive")
    return ContainerStats(
        time=now,
        cpu_total_usage=_int(_complete(usage, "cpuacct.usage"), "cpuacct.usage"),
        # The engine converts ticks the same way (containerd's cgroups v1 cpuacct).
        cpu_user_usage=user * _NS_PER_SECOND // _CLK_TCK,
        cpu_system_usage=system * _NS_PER_SECOND // _CLK_TCK,
        memory_usage=_int(_complete(mem_usage, "memory.usage_in_bytes"), "memory.usage_in_bytes"),
        memory_cache=cache,
        memory_inactive_file=inactive,
        net_rx_bytes=net[0],
        net_tx_bytes=net[1],
        blk_read_bytes=read_bytes,
        blk_write_bytes=write_bytes,
        blk_read_ops=read_ops,
        blk_write_ops=write_ops,
    )


def stats_v2(contents: Sequence[bytes], net: tuple[int, int], now: float) -> ContainerStats:
    """Return ContainerStats from the v2 files read in ``_V2_FILES`` order."""
    cpu_stat, mem_current, mem_stat, io_stat = contents
    usage, user, system = _fields(cpu_stat, "cpu.stat", b"usage_usec", b"user_usec", b"system_usec")
    file, inactive = _fields(mem_stat, "memory.stat", b"file", b"inactive_file")
    read_bytes, write_bytes, read_ops, write_ops = parse_io_stat_v2(io_stat)
    return ContainerStats(
        time=now,
        cpu_total_usage=usage * _NS_PER_USEC,
        cpu_user_usage=user * _NS_PER_USEC,
        cpu_system_usage=system * _NS_PER_USEC,
        memory_usage=_int(_complete(mem_current, "memory.current"), "memory.current"),
        memory_cache=file,
        memory_inactive_file=inactive,
        net_rx_bytes=net[0],
        net_tx_bytes=net[1],
        blk_read_bytes=read_bytes,
        blk_write_bytes=write_bytes,
        blk_read_ops=read_ops,
        blk_write_ops=write_ops,
    )


class _Files:
    """One container's files: where they are, and their descriptors while they are held."""

    __slots__ = ("cgroup_text", "fds", "host_network", "paths", "version")

    def __init__(
        self, cgroup_text: bytes, version: int, paths: tuple[str, ...], host_network: bool
    ) -> None:
        self.cgroup_text = cgroup_text
        self.version = version
        #: net/dev, the pid's cgroup file, then the cgroup files in _V1_FILES/_V2_FILES order.
        self.paths = paths
        self.host_network = host_network
        self.fds: list[int] | None = None

    def read(self, index: int) -> bytes:
        """Return one file's content: through its held descriptor, or open-read-close."""
        if self.fds is not None:
            return _pread_all(self.fds[index])
        return _read_path(self.paths[index])

    def hold(self) -> None:
        """Open every file and keep the descriptors; all or none (OSError)."""
        fds: list[int] = []
        try:
            for path in self.paths:
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        self.fds = fds

    def release(self) -> int:
        """Close the held descriptors; return how many there were."""
        fds, self.fds = self.fds or [], None
        for fd in fds:
            os.close(fd)
        return len(fds)


def container_cgroup_path(path: str, container_id: str) -> str | None:
    """Return ``path`` cut after its last component that names the container, else None.

    ``/docker/<id>`` (cgroupfs), ``/system.slice/docker-<id>.scope`` (systemd)
    and nested cgroups below either (``.../docker-<id>.scope/init.scope``)
    all give the container's own cgroup.
    """
    parts = path.split("/")
    for i in range(len(parts) - 1, -1, -1):
        if container_id in parts[i]:
            return "/".join(parts[: i + 1])
    return None


class CgroupNotLocated(ValueError):
    """A container's cgroup cannot be found from its pid's cgroup file; the message says why."""


class NotTheContainers(CgroupNotLocated):
    """The pid is in a cgroup not the container's: reused, or a cgroup namespace hides it."""


class ContainerCgroup:
    """Where one container's cgroup directories are, read from its pid's ``/proc/<pid>/cgroup``.

    Shared by the stats source and the process counter. Every lookup checks
    that the path names the container's id (see :func:`container_cgroup_path`)
    and that the directory exists under ``cgroup_root``; both raise
    :class:`CgroupNotLocated` (:class:`NotTheContainers` for the id check).
    """

    __slots__ = ("_id", "_pid", "_root", "unified", "v1")

    def __init__(self, cgroup_root: str, container_id: str, pid: int, cgroup_text: bytes) -> None:
        self._root = cgroup_root
        self._id = container_id
        self._pid = pid
        #: v1 controller -> (the controllers mounted with it, as named in the file; its path).
        self.v1: dict[str, tuple[str, str]] = {}
        #: The v2 (unified) path, or None when the file has no ``0::`` line.
        self.unified: str | None = None
        try:
            for line in _complete(cgroup_text, "cgroup").decode().splitlines():
                hierarchy, controllers, path = line.split(":", 2)
                if hierarchy == "0" and not controllers:
                    self.unified = path
                for controller in controllers.split(","):
                    if controller:
                        self.v1[controller] = (controllers, path)
        except (_Garbled, ValueError, UnicodeDecodeError) as e:
            raise self._error(f"pid {pid}: unreadable cgroup file: {e}") from e

    def v1_dir(self, controller: str) -> str:
        """Return the container's directory in the v1 hierarchy of ``controller``."""
        if controller not in self.v1:
            raise self._error(f"no {controller} controller (v1)")
        mount, path = self.v1[controller]
        own = self._own_path(path)
        # Controllers mounted together appear as cpu,cpuacct; hosts link each name too.
        for name in dict.fromkeys((mount, controller)):
            directory = f"{self._root}/{name}{own}"
            if os.path.isdir(directory):
                return directory
        raise self._error(f"no {controller} cgroup under {self._root} for {own}")

    def v2_dir(self) -> str:
        """Return the container's directory in the unified (v2) hierarchy."""
        if self.unified is None:
            raise self._error(f"pid {self._pid} names no cgroup")
        directory = f"{self._root}{self._own_path(self.unified)}"
        if not os.path.isdir(directory):
            raise self._error(f"no cgroup at {directory}")
        return directory

    def _own_path(self, path: str) -> str:
        own = container_cgroup_path(path, self._id)
        if own is None:
            # The pid outlived the container and was reused, or a private cgroup
            # namespace hides the path: either way these are not its numbers.
            raise NotTheContainers(
                f"container {self._id[:12]}: pid {self._pid} is in cgroup {path!r}, "
                "not the container's"
            )
        return own

    def _error(self, why: str) -> CgroupNotLocated:
        return CgroupNotLocated(f"container {self._id[:12]}: {why}")


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

    Holding costs eight descriptors per container (six on v2). The source
    raises the soft ``RLIMIT_NOFILE`` to the hard limit, as Go's runtime
    does, and holds at most ``max_held_files`` (default: half the soft
    limit); containers past that are read with an open/read/close per file.
    """

    def __init__(
        self,
        proc_root: str | os.PathLike[str] = "/proc",
        cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
        *,
        max_held_files: int | None = None,
        fallback: str | None = None,
    ) -> None:
        self._proc = os.fspath(proc_root).rstrip("/") or "/"
        #: Who reads what this source cannot (named in the log), or None when nobody does.
        self._fallback = fallback
        self._cgroup = os.fspath(cgroup_root).rstrip("/") or "/"
        self._files: dict[tuple[str, int], _Files] = {}
        self._host_netns: str | None = None
        self._host_interfaces: frozenset[bytes] | None = None
        self._held = 0
        self._max_held = _file_budget() if max_held_files is None else max_held_files
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
                    results[c.id] = SourcedStats(self._read_one(c, previous, kept), "cgroup")
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
    ) -> ContainerStats:
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
                net_dev = _read_path(f"{proc}/net/dev")
                cgroup_text = _read_path(f"{proc}/cgroup")
            except OSError as e:
                raise self._proc_error(c, e) from e
            files = self._locate(c, cgroup_text, net_dev, proc)
            kept[key] = files
            self._try_hold(files)

        try:
            contents = [files.read(i) for i in range(_FIRST_CGROUP_FILE, len(files.paths))]
        except OSError as e:
            self._drop(kept, key)
            # The cgroup goes (ENOENT, or ENODEV through a held descriptor) when the container does.
            if e.errno in (*_GONE, errno.ENODEV) and not os.path.exists(f"{self._proc}/{c.pid}"):
                raise NotFoundError(None, f"container {c.id[:12]}: pid {c.pid} is gone") from e
            where = e.filename or "a cgroup file"
            raise _unavailable(c, f"cannot read {where}: {e.strerror}", e) from e
        now = time.time()
        try:
            net = (0, 0) if files.host_network else parse_net_dev(net_dev)
            build = stats_v1 if files.version == 1 else stats_v2
            return build(contents, net, now)
        except _Garbled as e:
            raise _unavailable(c, str(e), e) from e

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
        if e.errno in _GONE:
            return NotFoundError(None, f"container {c.id[:12]}: pid {c.pid} is gone")
        return _unavailable(c, f"cannot read {self._proc}/{c.pid}: {e.strerror}", e)

    def _locate(self, c: ContainerInfo, cgroup_text: bytes, net_dev: bytes, proc: str) -> _Files:
        """Resolve the container's cgroup directories from its pid's ``cgroup`` file."""
        try:
            where = ContainerCgroup(self._cgroup, c.id, c.pid, cgroup_text)
            paths = [f"{proc}/net/dev", f"{proc}/cgroup"]
            if "cpuacct" in where.v1 or "memory" in where.v1:
                version = 1
                dirs: dict[str, str] = {}
                for controller, file in _V1_FILES:
                    if controller not in dirs:
                        dirs[controller] = where.v1_dir(controller)
                    paths.append(f"{dirs[controller]}/{file}")
            else:
                version = 2
                directory = where.v2_dir()
                paths.extend(f"{directory}/{file}" for file in _V2_FILES)
        except CgroupNotLocated as e:
            raise StatsUnavailableError(str(e)) from e
        return _Files(cgroup_text, version, tuple(paths), self._host_network(c.pid, net_dev))

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
                self._host_interfaces = _interfaces(_read_path(f"{self._proc}/1/net/dev"))
            except (OSError, _Garbled):
                self._host_interfaces = frozenset()
        try:
            mine = _interfaces(net_dev)
        except _Garbled:
            return False
        return bool(self._host_interfaces) and mine == self._host_interfaces

    def _netns(self, pid: int | str) -> str | None:
        try:
            return os.readlink(f"{self._proc}/{pid}/ns/net")
        except OSError:
            return None


def _interfaces(net_dev: bytes) -> frozenset[bytes]:
    """Return the interface names of a net/dev file, veth peers left out."""
    lines = _complete(net_dev, "net/dev").splitlines()[2:]
    names = (line.partition(b":")[0].strip() for line in lines)
    return frozenset(n for n in names if not n.startswith(b"veth"))


def _file_budget() -> int:
    """Raise the soft descriptor limit to the hard one; return half of what it then is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return int(soft) // 2


def _unavailable(c: ContainerInfo, why: str, cause: BaseException) -> StatsUnavailableError:
    error = StatsUnavailableError(f"container {c.id[:12]}: {why}")
    error.__cause__ = cause
    return error
