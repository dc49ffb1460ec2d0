"""The kernel's cgroup files and the /proc files beside them: locate, hold open, read, parse.

Used by the cgroup stats source (:mod:`exporter.sources.cgroup`) and the
process counter (:mod:`exporter.processes`) alike, so both find a
container's cgroup the same way and read and classify files the same way.
A container's cgroup is found from its init pid's ``/proc/<pid>/cgroup``
(:class:`ContainerCgroup`), which also proves the pid is still the
container's. Reads return bytes or raise OSError (:data:`GONE` numbers mean
the process or its cgroup no longer exists); parsers raise :class:`Garbled`
on content the kernel would not write.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

#: One read of this size returns a whole cgroup or /proc seq file; larger ones loop.
READ_SIZE = 32 * 1024
#: The error numbers that mean "this process (or its cgroup) no longer exists".
GONE = (errno.ENOENT, errno.ESRCH)
#: v1 hierarchies whose directory lists the container's processes, in order of preference.
_PROCS_CONTROLLERS = ("pids", "cpuacct", "memory")


class Garbled(ValueError):
    """A file's content is not what the kernel writes (cut short, or not a number)."""


def read_file(path: str) -> bytes:
    """Return a file's bytes with one open and, for any file under 32 KiB, one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return pread_all(fd)
    finally:
        os.close(fd)


def pread_all(fd: int) -> bytes:
    """Return the whole file behind ``fd``, read from offset 0.

    Reading a kernel seq file from offset 0 regenerates it, so a descriptor
    kept open gives fresh numbers at every poll without open() and close().
    """
    data = os.pread(fd, READ_SIZE, 0)
    if len(data) == READ_SIZE:
        chunks = [data]
        while chunk := os.pread(fd, READ_SIZE, READ_SIZE * len(chunks)):
            chunks.append(chunk)
        data = b"".join(chunks)
    return data


def complete(data: bytes, what: str) -> bytes:
    """Return ``data`` if it ends as every kernel file does, with a newline."""
    if not data.endswith(b"\n"):
        raise Garbled(f"{what} is empty or cut short")
    return data


def parse_int(token: bytes, what: str) -> int:
    """Return ``token`` as an int; Garbled, naming ``what``, when it is not one."""
    try:
        return int(token)
    except ValueError:
        raise Garbled(f"{what}: {token[:40]!r} is not a number") from None


def parse_number(data: bytes, what: str) -> int:
    """Return the value of a one-number file (``memory.current``, ``cpuacct.usage``)."""
    return parse_int(complete(data, what), what)


def parse_fields(data: bytes, what: str, *keys: bytes) -> list[int]:
    """Return the values of ``keys`` in a ``key value`` per line file (memory.stat, cpu.stat)."""
    text = b"\n" + complete(data, what)
    values = []
    for key in keys:
        # "\ncache " cannot match "total_cache ": keys are found at line starts only.
        start = text.find(b"\n" + key + b" ")
        if start < 0:
            raise Garbled(f"{what} has no {key.decode()!r} line")
        start += len(key) + 2
        values.append(parse_int(text[start : text.index(b"\n", start)], f"{what} {key.decode()}"))
    return values


def parse_optional_fields(data: bytes, what: str, *keys: bytes) -> list[int | None]:
    """Return the values of ``keys`` like :func:`parse_fields`; None for a key with no line.

    For lines a kernel writes only with a feature on (``total_swap`` with swap
    accounting, ``oom_kill`` since 4.13).
    """
    text = b"\n" + complete(data, what)
    values: list[int | None] = []
    for key in keys:
        start = text.find(b"\n" + key + b" ")
        if start < 0:
            values.append(None)
            continue
        start += len(key) + 2
        values.append(parse_int(text[start : text.index(b"\n", start)], f"{what} {key.decode()}"))
    return values


class NetDev(NamedTuple):
    """Counters of a net/dev file summed over every interface but ``lo``."""

    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


# The columns of a net/dev line (after "name:") that NetDev keeps, in its order:
# receive bytes packets errs drop, transmit bytes packets errs drop.
_NET_DEV_COLUMNS = (0, 1, 2, 3, 8, 9, 10, 11)


def parse_net_dev(data: bytes) -> NetDev:
    """Return the byte, packet, error and drop counters summed over every interface but ``lo``."""
    lines = complete(data, "net/dev").splitlines()
    if len(lines) < 2 or b"|" not in lines[0]:
        raise Garbled("net/dev has no header")
    sums = [0] * len(_NET_DEV_COLUMNS)
    for line in lines[2:]:
        name, sep, rest = line.partition(b":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            raise Garbled(f"net/dev: bad line {line[:60]!r}")
        if name.strip() == b"lo":
            continue
        for i, column in enumerate(_NET_DEV_COLUMNS):
            sums[i] += parse_int(fields[column], "net/dev")
    return NetDev(*sums)


def parse_blkio_v1(data: bytes, what: str) -> tuple[int, int]:
    """Return (read, write) summed over devices from a v1 blkio ``..._recursive`` file."""
    read = write = 0
    lines = complete(data, what).splitlines()
    # The kernel's last line is a bare "Total N" (per-device Total lines have 3 parts).
    if not lines[-1].startswith(b"Total "):
        raise Garbled(f"{what} has no closing Total line")
    for line in lines[:-1]:
        parts = line.split()
        if len(parts) != 3:
            raise Garbled(f"{what}: bad line {line[:60]!r}")
        op = parts[1]
        if op == b"Read":
            read += parse_int(parts[2], what)
        elif op == b"Write":
            write += parse_int(parts[2], what)
    parse_int(lines[-1][6:], what)
    return read, write


def parse_io_stat_v2(data: bytes) -> tuple[int, int, int, int]:
    """Return (rbytes, wbytes, rios, wios) summed over devices from a v2 ``io.stat``."""
    if not data:
        return 0, 0, 0, 0  # no I/O yet: the kernel writes nothing at all
    sums = {b"rbytes": 0, b"wbytes": 0, b"rios": 0, b"wios": 0}
    for line in complete(data, "io.stat").splitlines():
        device, *pairs = line.split()
        if b":" not in device:
            raise Garbled(f"io.stat: bad line {line[:60]!r}")
        for pair in pairs:
            key, sep, value = pair.partition(b"=")
            if not sep:
                raise Garbled(f"io.stat: bad field {pair[:40]!r}")
            if key in sums:
                sums[key] += parse_int(value, f"io.stat {key.decode()}")
    return sums[b"rbytes"], sums[b"wbytes"], sums[b"rios"], sums[b"wios"]


def interfaces(net_dev: bytes) -> frozenset[bytes]:
    """Return the interface names of a net/dev file, veth peers left out."""
    lines = complete(net_dev, "net/dev").splitlines()[2:]
    names = (line.partition(b":")[0].strip() for line in lines)
    return frozenset(n for n in names if not n.startswith(b"veth"))


class HeldFiles:
    """Files read again and again: where they are, and their descriptors while they are held."""

    __slots__ = ("fds", "paths")

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.fds: list[int] | None = None

    def read(self, index: int) -> bytes:
        """Return one file's content: through its held descriptor, or open-read-close."""
        if self.fds is not None:
            return pread_all(self.fds[index])
        return read_file(self.paths[index])

    def stat(self, index: int) -> os.stat_result:
        """Return one file's (or directory's) stat: through its held descriptor, or by path."""
        if self.fds is not None:
            return os.fstat(self.fds[index])
        return os.stat(self.paths[index])

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
            for line in complete(cgroup_text, "cgroup").decode().splitlines():
                hierarchy, controllers, path = line.split(":", 2)
                if hierarchy == "0" and not controllers:
                    self.unified = path
                for controller in controllers.split(","):
                    if controller:
                        self.v1[controller] = (controllers, path)
        except (Garbled, ValueError, UnicodeDecodeError) as e:
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

    def procs_dir(self) -> str:
        """Return the directory whose ``cgroup.procs`` lists the container's processes.

        v1: the ``pids`` hierarchy, else ``cpuacct`` or ``memory``; v2: the
        unified directory.
        """
        for controller in _PROCS_CONTROLLERS:
            if controller in self.v1:
                try:
                    return self.v1_dir(controller)
                except NotTheContainers:
                    raise
                except CgroupNotLocated:
                    continue  # not mounted under cgroup_root: the next hierarchy lists them too
        return self.v2_dir()

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


def parse_pids(data: bytes) -> set[int]:
    """Return the pids a ``cgroup.procs`` lists (v2 lists one outside our pid namespace as 0)."""
    try:
        pids = {int(pid) for pid in data.split()}
    except ValueError as e:
        raise Garbled(f"cgroup.procs: {e}") from e
    pids.discard(0)
    return pids


def has_child_cgroups(directory: str | os.stat_result) -> bool:
    """Return whether cgroups are nested below ``directory`` (or the one of that stat).

    A cgroup directory has 2 + (its child cgroups) links, as on most file
    systems: one stat (a third of a listing's CPU) says when there is none.
    Raises OSError if the directory is gone.
    """
    st = os.stat(directory) if isinstance(directory, str) else directory
    return st.st_nlink != 2


def pids_below(directory: str) -> set[int]:
    """Return the pids in every cgroup nested below ``directory`` (not its own)."""
    pids: set[int] = set()
    pending = [directory]
    while pending:
        here = pending.pop()
        try:
            if here != directory:
                pids |= parse_pids(read_file(f"{here}/cgroup.procs"))
            if here == directory or has_child_cgroups(here):
                with os.scandir(here) as entries:
                    pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            if here == directory:
                raise
            # A nested cgroup removed since it was listed (only an empty one can be).
    return pids


def cgroup_pids(directory: str) -> set[int]:
    """Return the pids in ``directory``'s ``cgroup.procs`` and in every cgroup below it."""
    pids = parse_pids(read_file(f"{directory}/cgroup.procs"))
    if has_child_cgroups(directory):
        pids |= pids_below(directory)
    return pids


def namespace(proc_root: str, pid: int | str, kind: str) -> str | None:
    """Return the ``kind`` namespace (``net``, ``pid``) of ``pid``, or None if unreadable.

    The links need ptrace rights over the process: not ours as a non-root
    user, nor for pid 1 in some sandboxes.
    """
    try:
        return os.readlink(f"{proc_root}/{pid}/ns/{kind}")
    except OSError:
        return None
