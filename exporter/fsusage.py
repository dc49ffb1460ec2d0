"""The writable layer's size and its filesystem's room: cAdvisor's ``container_fs_*`` families.

Sizing a layer is a directory walk, far dearer than the cgroup reads, so it
runs on its own slower interval (:class:`LayerSizer`, started by the poller
in a worker thread) under a time budget, as cAdvisor's does. A layer the
budget cuts short gets no figure that round (a partial sum would be a
made-up one); the next round starts where this one stopped, so every
container is sized in turn however many there are.

The layer is written by the container, so the walk follows no symlink:
each directory is opened from its parent's descriptor with ``O_NOFOLLOW``
and ``O_DIRECTORY``, and entries are ``lstat``-ed, never opened. Usage is
du's: allocated blocks (``st_blocks``), hard links counted at each name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from exporter.models import ContainerInfo
from exporter.snapshot import FsUsage

#: Deepest directory the walk descends into: bounds the descriptors it holds open.
MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutOfTime(Exception):
    """The walk passed its deadline."""


def layer_bytes(path: str, deadline: float, clock: Callable[[], float] = time.monotonic) -> int:
    """Return the bytes allocated under ``path``; OutOfTime past ``deadline``; OSError."""
    root = os.open(path, _DIR_FLAGS)
    total = os.fstat(root).st_blocks * 512
    # (directory fd, its subdirectory names still to visit)
    stack: list[tuple[int, list[str]]] = []
    try:
        stack.append((root, []))
        total += _scan(root, stack[-1][1])
        while stack:
            if clock() > deadline:
                raise OutOfTime(path)
            fd, pending = stack[-1]
            if not pending:
                os.close(fd)
                stack.pop()
                continue
            name = pending.pop()
            if len(stack) >= MAX_DEPTH:
                continue  # deeper than any real layer: not worth a descriptor each
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # removed, or replaced by a symlink since it was listed
            children: list[str] = []
            stack.append((child, children))
            total += _scan(child, children)
        return total
    finally:
        for fd, _ in stack:
            os.close(fd)


def _scan(fd: int, subdirs: list[str]) -> int:
    """Return the bytes of ``fd``'s entries; append its subdirectories to ``subdirs``."""
    total = 0
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
    return total


class LayerSizer:
    """Sizes the writable layers of running containers, one bounded round at a time."""

    def __init__(self, budget: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._budget = budget
        self._clock = clock
        self._start = 0  # where the next round begins, so a cut-short round moves on

    def measure(self, containers: Sequence[ContainerInfo]) -> dict[str, FsUsage]:
        """Return a figure per container sized within the budget (blocking: run it in a thread)."""
        with_layer = [c for c in containers if c.layer_dir]
        if not with_layer:
            return {}
        deadline = self._clock() + self._budget
        first = self._start % len(with_layer)
        order = with_layer[first:] + with_layer[:first]
        out: dict[str, FsUsage] = {}
        for done, c in enumerate(order):
            try:
                used = layer_bytes(c.layer_dir, deadline, self._clock)
                fs = os.statvfs(c.layer_dir)
            except OutOfTime:
                self._start = first + done  # this one first next round
                return out
            except OSError:
                continue  # no such layer here (another mount namespace, a non-overlay driver)
            out[c.id] = FsUsage(
                usage=used,
                limit=fs.f_blocks * fs.f_frsize,
                inodes_total=fs.f_files,
                inodes_free=fs.f_ffree,
            )
        self._start = first
        return out
