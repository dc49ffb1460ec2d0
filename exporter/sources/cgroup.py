"""Stats straight from the kernel: each container's cgroup files and its /proc net/dev.

The engine hands out stats once per internal tick (~1 s) and spends its own
CPU on every call; the files it reads are right here. For each container the
source reads ``<proc_root>/<pid>/net/dev`` (the container's own network
namespace), ``<proc_root>/<pid>/cgroup`` (where its cgroup is, and proof that
the pid is still the container's) and a handful of cgroup files:

========  ==========================================  ======================
what      cgroup v1                                   cgroup v2
========  ==========================================  ======================
CPU       cpuacct.usage, cpuacct.stat (USER_HZ ticks)  cpu.stat (usec)
memory    memory.usage_in_bytes, memory.stat           memory.current,
          (cache, total_inactive_file)                 memory.stat (file,
                                                       inactive_file)
block     blkio.throttle.io_service_bytes_recursive,   io.stat (rbytes,
          blkio.throttle.io_serviced_recursive         wbytes, rios, wios)
========  ==========================================  ======================

These are the very files the engine reads on v1 (it uses the throttle files
for block I/O too), so the numbers match its stats call. What can go wrong
is classified per container and returned, never raised: the pid is gone ->
:class:`~exporter.errors.NotFoundError` (the collector skips it); a file is
missing, unreadable or garbled, or the pid is not in the container's cgroup
-> :class:`~exporter.errors.StatsUnavailableError` (a fallback source asks
the engine).
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.errors import NotFoundError, StatsUnavailableError
from exporter.models import ContainerInfo, ContainerStats
from exporter.sources.base import SourcedStats, StatsResult

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


class _Garbled(ValueError):
    """A file's content is not what the kernel writes (cut short, or not a number)."""


class _ProcessGone(Exception):
    """The container's pid no longer exists."""


@dataclass(frozen=True, slots=True)
class _Located:
    """Where one container's files are, as resolved from its ``/proc/<pid>/cgroup``."""

    cgroup_text: bytes
    version: int
    files: tuple[str, ...]
    host_network: bool


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


def _read(path: str) -> bytes:
    """Return a file's bytes with one open and, for any file under 32 KiB, one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) == _READ_SIZE:
            chunks = [data]
            while chunk := os.read(fd, _READ_SIZE):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


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


def _keyed(data: bytes, what: str, *keys: bytes) -> list[int]:
    """Return the values of ``keys`` in a flat ``key value`` file (memory.stat, cpu.stat)."""
    tokens = _complete(data, what).split()
    table = dict(zip(tokens[::2], tokens[1::2], strict=False))
    try:
        return [_int(table[k], f"{what} {k.decode()}") for k in keys]
    except KeyError as e:
        raise _Garbled(f"{what} has no {e.args[0].decode()!r} line") from None


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
    total_seen = False
    for line in _complete(data, what).splitlines():
        parts = line.split()
        if len(parts) == 3:
            op = parts[1].lower()
            if op == b"read":
                read += _int(parts[2], what)
            elif op == b"write":
                write += _int(parts[2], what)
        elif len(parts) == 2 and parts[0] == b"Total":
            total_seen = True  # the kernel's last line; per-device "Total" lines have 3 parts
        else:
            raise _Garbled(f"{what}: bad line {line[:60]!r}")
    if not total_seen:
        raise _Garbled(f"{what} has no closing Total line")
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
    user, system = _keyed(cpu_stat, "cpuacct.stat", b"user", b"system")
    cache, inactive = _keyed(mem_stat, "memory.stat", b"cache", b"total_inactive_file")
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
    usage, user, system = _keyed(cpu_stat, "cpu.stat", b"usage_usec", b"user_usec", b"system_usec")
    file, inactive = _keyed(mem_stat, "memory.stat", b"file", b"inactive_file")
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


class CgroupStatsSource:
    """A :class:`~exporter.sources.base.StatsSource` on the kernel's cgroup and /proc files.

    ``proc_root`` is the host's ``/proc`` and ``cgroup_root`` its
    ``/sys/fs/cgroup``; both are settings so tests can point them at a
    recorded tree. Each container's resolved file paths are cached per
    (id, pid), and the pid's ``cgroup`` file is re-read every poll to prove
    the pid still belongs to the container.
    """

    def __init__(
        self,
        proc_root: str | os.PathLike[str] = "/proc",
        cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
    ) -> None:
        self._proc = os.fspath(proc_root).rstrip("/") or "/"
        self._cgroup = os.fspath(cgroup_root).rstrip("/") or "/"
        self._located: dict[tuple[str, int], _Located] = {}
        self._host_netns: str | None = None

    @property
    def name(self) -> str:
        """Return ``cgroup``."""
        return "cgroup"

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return one kernel sample per container, every file read in one worker thread."""
        if not containers:
            return {}
        return await asyncio.to_thread(self.read_blocking, list(containers))

    def read_blocking(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return one sample (or its error) per container id; blocks on file I/O, never raises."""
        # Where /proc/1 is hidden (a sandbox), our own namespace stands for the host's.
        self._host_netns = self._netns(1) or self._netns("self")
        previous = self._located
        located: dict[tuple[str, int], _Located] = {}
        results: dict[str, StatsResult] = {}
        for c in containers:
            try:
                results[c.id] = SourcedStats(self._read_one(c, previous, located), "cgroup")
            except (NotFoundError, StatsUnavailableError) as e:
                results[c.id] = e
            except Exception as e:  # noqa: BLE001 - one odd container must not fail the others
                results[c.id] = _unavailable(c, f"unexpected {type(e).__name__}: {e}", e)
        # Only containers of this poll stay cached: the cache cannot grow without bound.
        self._located = located
        return results

    def _read_one(
        self,
        c: ContainerInfo,
        previous: dict[tuple[str, int], _Located],
        located: dict[tuple[str, int], _Located],
    ) -> ContainerStats:
        if c.pid <= 0:
            raise StatsUnavailableError(
                f"container {c.id[:12]}: no pid (not inspected or not running)"
            )
        proc = f"{self._proc}/{c.pid}"
        try:
            # net/dev first: the cgroup check after it proves that namespace was the container's.
            net_dev = _read(f"{proc}/net/dev")
            cgroup_text = _read(f"{proc}/cgroup")
        except OSError as e:
            if e.errno in _GONE:
                raise NotFoundError(None, f"container {c.id[:12]}: pid {c.pid} is gone") from e
            raise _unavailable(c, f"cannot read {proc}: {e.strerror}", e) from e

        key = (c.id, c.pid)
        where = previous.get(key)
        if where is None or where.cgroup_text != cgroup_text:
            where = self._locate(c, cgroup_text)
        located[key] = where

        try:
            contents = [_read(path) for path in where.files]
        except OSError as e:
            if e.errno in _GONE and not os.path.exists(proc):
                raise NotFoundError(None, f"container {c.id[:12]}: pid {c.pid} is gone") from e
            raise _unavailable(c, f"cannot read {e.filename}: {e.strerror}", e) from e
        now = time.time()
        try:
            net = (0, 0) if where.host_network else parse_net_dev(net_dev)
            build = stats_v1 if where.version == 1 else stats_v2
            return build(contents, net, now)
        except _Garbled as e:
            raise _unavailable(c, str(e), e) from e

    def _locate(self, c: ContainerInfo, cgroup_text: bytes) -> _Located:
        """Resolve the container's cgroup directories from its pid's ``cgroup`` file."""
        v1: dict[str, tuple[str, str]] = {}
        unified: str | None = None
        try:
            for line in _complete(cgroup_text, "cgroup").decode().splitlines():
                hierarchy, controllers, path = line.split(":", 2)
                if hierarchy == "0" and not controllers:
                    unified = path
                for controller in controllers.split(","):
                    if controller:
                        v1[controller] = (controllers, path)
        except (_Garbled, ValueError, UnicodeDecodeError) as e:
            raise _unavailable(c, f"pid {c.pid}: unreadable cgroup file: {e}", e) from e

        files: list[str] = []
        if "cpuacct" in v1 or "memory" in v1:
            version = 1
            dirs: dict[str, str] = {}
            for controller, file in _V1_FILES:
                if controller not in dirs:
                    dirs[controller] = self._v1_dir(c, v1, controller)
                files.append(f"{dirs[controller]}/{file}")
        elif unified is not None:
            version = 2
            directory = f"{self._cgroup}{self._own_path(c, unified)}"
            if not os.path.isdir(directory):
                raise StatsUnavailableError(f"container {c.id[:12]}: no cgroup at {directory}")
            files = [f"{directory}/{file}" for file in _V2_FILES]
        else:
            raise StatsUnavailableError(f"container {c.id[:12]}: pid {c.pid} names no cgroup")
        netns = self._netns(c.pid)
        host_network = netns is not None and netns == self._host_netns
        return _Located(cgroup_text, version, tuple(files), host_network)

    def _own_path(self, c: ContainerInfo, path: str) -> str:
        own = container_cgroup_path(path, c.id)
        if own is None:
            # The pid outlived the container and was reused, or a private cgroup
            # namespace hides the path: either way these are not its numbers.
            raise StatsUnavailableError(
                f"container {c.id[:12]}: pid {c.pid} is in cgroup {path!r}, not the container's"
            )
        return own

    def _v1_dir(self, c: ContainerInfo, v1: dict[str, tuple[str, str]], controller: str) -> str:
        if controller not in v1:
            raise StatsUnavailableError(f"container {c.id[:12]}: no {controller} controller (v1)")
        mount, path = v1[controller]
        own = self._own_path(c, path)
        # Controllers mounted together appear as cpu,cpuacct; hosts link each name too.
        for name in dict.fromkeys((mount, controller)):
            directory = f"{self._cgroup}/{name}{own}"
            if os.path.isdir(directory):
                return directory
        raise StatsUnavailableError(
            f"container {c.id[:12]}: no {controller} cgroup under {self._cgroup} for {own}"
        )

    def _netns(self, pid: int | str) -> str | None:
        try:
            return os.readlink(f"{self._proc}/{pid}/ns/net")
        except OSError:
            return None


def _unavailable(c: ContainerInfo, why: str, cause: BaseException) -> StatsUnavailableError:
    error = StatsUnavailableError(f"container {c.id[:12]}: {why}")
    error.__cause__ = cause
    return error
