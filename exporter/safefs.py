"""Files and dirs under a trusted root, reached without ever following a symlink.

Containers can write inside the dirs they mount, and the engine resolves
mount sources again at every start, so a path string is not something the
exporter may act on. Every function here starts from a root dir the
operator configured (opened once, as given: the host's own path to it is
trusted) and walks each component below it with ``O_NOFOLLOW |
O_DIRECTORY`` relative to the previous component's fd. A symlink or a
non-directory anywhere on the way is refused (:class:`UnsafePathError`),
and what is finally created, written or chowned is the object the walk
opened, whatever is renamed around it meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence

from exporter.errors import ExporterError

#: How a directory component is opened: never through a symlink, never a non-directory.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: How a leaf that may be a regular file is looked at without opening its content.
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
#: How a file is opened for reading: never through a symlink, never blocking on a FIFO.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: Copies are read and written in chunks of this size.
COPY_CHUNK = 1024 * 1024


class UnsafePathError(ExporterError):
    """A path component is a symlink or not a directory, or changed while it was walked."""


def components(root: str, path: str) -> list[str]:
    """Return the components of ``path`` below ``root``; ValueError unless strictly under it.

    Both are taken as they are written: ``path`` is normalized (``..`` is
    resolved against the text, which equals the kernel's answer only
    because the walk then refuses every symlink on the way).
    """
    if "\0" in path or not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path")
    clean = posixpath.normpath(path)
    base = posixpath.normpath(root)
    if base == "/":
        rel = clean.lstrip("/")
    elif clean.startswith(base + "/"):
        rel = clean[len(base) + 1 :]
    else:
        raise ValueError(f"{path} is not under {root}")
    if not rel:
        raise ValueError(f"{path} is {root} itself")
    return rel.split("/")


def _kind(dir_fd: int, name: str) -> str:
    """Return what ``name`` is, for a refusal's message."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return "gone or replaced while it was walked"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory that changed while it was walked"
    return "not a directory"


def _open_child(dir_fd: int, name: str, create: bool, mode: int) -> int:
    """Return an fd of the directory ``name`` in ``dir_fd``, made first when ``create``."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(f"{name!r} is not a single path component")
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        # A symlink under O_NOFOLLOW | O_DIRECTORY is ENOTDIR (ELOOP without O_DIRECTORY).
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafePathError(f"{name}: {_kind(dir_fd, name)}") from e
        raise
    with contextlib.suppress(FileExistsError):
        # Someone else may make it (or a symlink there) first: reopened below, still O_NOFOLLOW.
        os.mkdir(name, mode, dir_fd=dir_fd)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
            raise UnsafePathError(f"{name}: {_kind(dir_fd, name)}") from e
        raise


def open_root(root: str, *, create: bool = False, mode: int = 0o755) -> int:
    """Return an fd of the trusted dir ``root`` (made, with its parents, when ``create``)."""
    if create:
        os.makedirs(root, mode=mode, exist_ok=True)
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(dir_fd: int, parts: Sequence[str], *, create: bool = False, mode: int = 0o755) -> int:
    """Return an fd of ``dir_fd``/``parts``, each walked with O_NOFOLLOW (made when ``create``).

    The caller closes the fd. UnsafePathError for a symlink or a non-directory
    on the way; FileNotFoundError for a missing one when not ``create``.
    """
    fd = os.dup(dir_fd)
    try:
        for name in parts:
            child = _open_child(fd, name, create, mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def walked(
    root: str, parts: Sequence[str], *, create: bool = False, create_root: bool = False
) -> Iterator[int]:
    """Yield an fd of ``root``/``parts`` walked as :func:`open_dir` does; closed afterwards."""
    root_fd = open_root(root, create=create_root)
    try:
        fd = open_dir(root_fd, parts, create=create)
    finally:
        os.close(root_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def open_leaf(dir_fd: int, name: str, *, create_dir: bool = False) -> tuple[int, bool]:
    """Return (fd, is_dir) of ``name`` in ``dir_fd``: a directory, else a regular file.

    A directory is opened for reading (``fchown`` works on it), a regular
    file only as an ``O_PATH`` handle (its content is never opened: it may
    be a FIFO or device node someone planted). A missing leaf is made a
    directory when ``create_dir``. UnsafePathError for anything else.
    """
    try:
        return _open_child(dir_fd, name, create_dir, 0o755), True
    except UnsafePathError:
        pass
    fd = os.open(name, PATH_FLAGS, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        kind = "a symlink" if stat.S_ISLNK(os.fstat(fd).st_mode) else "not a directory or file"
        os.close(fd)
        raise UnsafePathError(f"{name}: {kind}")
    return fd, False


def require_owner(fd: int, uid: int, shown: str) -> None:
    """Refuse (UnsafePathError) the object ``fd`` holds unless ``uid`` owns it."""
    owner = os.fstat(fd).st_uid
    if owner != uid:
        raise UnsafePathError(f"{shown}: owned by uid {owner}, not by the exporter (uid {uid})")


def chown_fd(fd: int, uid: int, gid: int) -> None:
    """Change the owner of the object ``fd`` holds (-1 leaves one unchanged)."""
    try:
        os.fchown(fd, uid, gid)
    except OSError as e:
        if e.errno != errno.EBADF:
            raise
        # An O_PATH fd: chown through its /proc magic link, which names this
        # very inode (the kernel does not resolve the original path again).
        os.chown(f"/proc/self/fd/{fd}", uid, gid)


def write_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``name`` in ``dir_fd`` with ``data`` atomically; never writes through a link.

    The temporary file has a fresh random name and is created with
    ``O_EXCL | O_NOFOLLOW``, so nothing planted in the dir can redirect it;
    the rename replaces a symlink named ``name`` rather than following it.
    """

    def fill(fd: int) -> None:
        _write_all(fd, data)

    _replace(dir_fd, name, mode, fill)


def copy_file(src: str, dir_fd: int, name: str, mode: int = 0o755) -> bool:
    """Copy the regular file ``src`` to ``name`` in ``dir_fd`` as write_file does; False if absent.

    ``src`` lies in the trusted host installation, but is opened
    ``O_NOFOLLOW`` too and must be a regular file.
    """
    try:
        src_fd = os.open(src, READ_FLAGS)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{src}: a symlink") from e
        raise

    def fill(fd: int) -> None:
        while chunk := os.read(src_fd, COPY_CHUNK):
            _write_all(fd, chunk)

    try:
        if not stat.S_ISREG(os.fstat(src_fd).st_mode):
            raise UnsafePathError(f"{src}: not a regular file")
        _replace(dir_fd, name, mode, fill)
    finally:
        os.close(src_fd)
    return True


def read_file(dir_fd: int, name: str, limit: int) -> bytes | None:
    """Return the regular file ``name`` in ``dir_fd`` (None if absent); never through a link.

    UnsafePathError when it is not a regular file or is larger than ``limit``.
    """
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{name}: a symlink") from e
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{name}: not a regular file")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise UnsafePathError(f"{name}: larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def _create_temp(dir_fd: int, name: str) -> tuple[int, str]:
    """Return (fd, name) of a new empty file beside ``name``, created O_EXCL | O_NOFOLLOW."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(8):
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, flags, 0o600, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue  # 64 random bits taken: someone plants names; draw again
    raise UnsafePathError(f"{name}: no free temporary name beside it")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _replace(dir_fd: int, name: str, mode: int, fill: Callable[[int], None]) -> None:
    """Fill a fresh temporary file beside ``name``, then rename it over ``name`` and sync."""
    fd, tmp = _create_temp(dir_fd, name)
    try:
        try:
            fill(fd)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError as e:
            raise UnsafePathError(f"{name}: a directory stands where the file goes") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    # The rename is durable only once the directory itself is synced.
    os.fsync(dir_fd)


def remove_dir(dir_fd: int, name: str) -> None:
    """Remove the empty directory ``name`` in ``dir_fd`` (never a symlink's target)."""
    os.rmdir(name, dir_fd=dir_fd)
