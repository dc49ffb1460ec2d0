"""A synthetic /proc and cgroup tree with processes in it, for the process counts' tests.

Per process a ``status`` (the kernel's lines around ``Threads:``), an ``fd/``
directory of symlinks and, for the namespace scan, an ``ns/pid`` link; per
cgroup a ``cgroup.procs``; an init pid's ``cgroup`` file copied from the
recorded trees of tests/data/cgroup.
"""

from __future__ import annotations

from pathlib import Path

from exporter.processes import count_processes
from exporter.snapshot import ProcessCounts
from tests.support.cgroup_data import DATA

HOST_NS = "pid:[4026531836]"

STATUS = (
    "Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\n"
    "PPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\n"
    "VmRSS:\t     640 kB\nThreads:\t{threads}\nSigQ:\t0/96365\nSigPnd:\t0000000000000000\n"
)


class Tree:
    """A /proc and a cgroup root under one directory (which may hold a recorded tree)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.cgroup = root / "sys" / "fs" / "cgroup"
        self.proc.mkdir(parents=True, exist_ok=True)
        self.cgroup.mkdir(parents=True, exist_ok=True)

    def process(
        self, pid: int, threads: int = 1, fds: int = 3, ns: str | None = None, name: str = "sleep"
    ) -> None:
        d = self.proc / str(pid)
        d.mkdir(exist_ok=True)
        (d / "status").write_text(STATUS.format(name=name, pid=pid, threads=threads))
        (d / "fd").mkdir()
        for fd in range(fds):
            (d / "fd" / str(fd)).symlink_to("/dev/null")
        if ns is not None:
            (d / "ns").mkdir(exist_ok=True)
            (d / "ns" / "pid").symlink_to(ns)

    def cgroup_file(self, pid: int, text: str) -> None:
        d = self.proc / str(pid)
        d.mkdir(exist_ok=True)
        (d / "cgroup").write_text(text)

    def procs(self, directory: str, *pids: int) -> None:
        d = self.cgroup / directory.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
        # The kernel's other files, which the walk must not take for cgroups.
        (d / "cgroup.clone_children").write_text("0\n")
        (d / "notify_on_release").write_text("0\n")

    def count(self, init_pids: dict[str, int]) -> dict[str, ProcessCounts]:
        return count_processes(init_pids, proc_root=str(self.proc), cgroup_root=str(self.cgroup))


def recorded_cgroup(layout: str, pid: int) -> str:
    return (DATA / layout / "proc" / str(pid) / "cgroup").read_text()
