"""Process, thread and fd counts from cgroup.procs, on synthetic /proc and cgroup trees.

Each test builds a tree in tmp_path: the init pid's ``/proc/<pid>/cgroup``
copied from the recorded trees of tests/data/cgroup (so the locating is the
cgroup source's, on the kernel's own format), a ``cgroup.procs`` per cgroup,
and per process a ``status`` (the kernel's lines around ``Threads:``), an
``fd/`` directory of symlinks and, for the fallback, an ``ns/pid`` link.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter import cgroupfs, processes, wiring
from exporter.config import Settings
from exporter.naming import NamingScheme
from exporter.processes import CgroupProcessCounter, count_processes_by_namespace
from exporter.snapshot import ProcessCounts
from exporter.testing import FakeDriver
from tests.support.cgroup_data import (
    OTHER_ID,
    V1_ID,
    V1_PID,
    V2_CGROUPFS_ID,
    V2_CGROUPFS_PID,
    V2_SYSTEMD_ID,
    V2_SYSTEMD_PID,
)
from tests.support.process_tree import HOST_NS, STATUS, Tree, recorded_cgroup


@pytest.fixture
def v1(tmp_path: Path) -> Tree:
    """The recorded v1 container (cgroupfs driver): init and two children."""
    t = Tree(tmp_path)
    t.cgroup_file(V1_PID, recorded_cgroup("v1", V1_PID))
    t.process(V1_PID, threads=1, fds=4, name="sh")
    t.process(V1_PID + 1, threads=1, fds=3)
    t.process(V1_PID + 2, threads=5, fds=10)
    t.process(77, threads=9, fds=50, name="dockerd")  # a host process: never counted
    return t


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the pid-namespace scan is asked for anything."""

    def scan(init_pids: object, proc_root: str = "/proc") -> None:
        pytest.fail(f"the namespace scan was asked for {init_pids}")

    monkeypatch.setattr(processes, "count_processes_by_namespace", scan)


@pytest.mark.usefixtures("no_fallback")
def test_v1_counts_the_pids_hierarchys_cgroup_procs(v1: Tree) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    # The other hierarchies list them too; pids is the one asked.
    v1.procs(f"cpuacct/docker/{V1_ID}", V1_PID)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}


@pytest.mark.usefixtures("no_fallback")
def test_v1_without_a_pids_hierarchy_reads_cpuacct_then_memory(v1: Tree) -> None:
    v1.procs(f"memory/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}
    v1.procs(f"cpuacct/docker/{V1_ID}", V1_PID, V1_PID + 1)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(2, 2, 7)}


@pytest.mark.usefixtures("no_fallback")
def test_v1_cgroups_nested_in_the_containers_are_counted(v1: Tree) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID)
    v1.procs(f"pids/docker/{V1_ID}/inner", V1_PID + 1)
    v1.procs(f"pids/docker/{V1_ID}/inner/deeper", V1_PID + 2)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}
    # Removed between the listing and the read: no cgroup.procs any more.
    (v1.cgroup / f"pids/docker/{V1_ID}/inner/gone").mkdir()
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}


@pytest.mark.usefixtures("no_fallback")
def test_v2_counts_the_unified_cgroup_and_the_cgroups_below_it(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    # systemd driver, with the container's processes one level down (the v2 rule
    # "no processes in inner cgroups" makes nested containers do this).
    scope = f"system.slice/docker-{V2_SYSTEMD_ID}.scope"
    t.cgroup_file(V2_SYSTEMD_PID, f"0::/{scope}/init.scope\n")
    t.procs(scope)
    t.procs(f"{scope}/init.scope", V2_SYSTEMD_PID)
    t.procs(f"{scope}/app.slice", 4330, 4331)
    for pid in (V2_SYSTEMD_PID, 4330, 4331):
        t.process(pid, threads=2, fds=5)
    # cgroupfs driver; 0 is how v2 lists a process outside the reader's pid namespace.
    t.cgroup_file(V2_CGROUPFS_PID, recorded_cgroup("v2", V2_CGROUPFS_PID))
    t.procs(f"docker/{V2_CGROUPFS_ID}", 0, V2_CGROUPFS_PID)
    t.process(V2_CGROUPFS_PID, threads=1, fds=2)
    assert t.count({V2_SYSTEMD_ID: V2_SYSTEMD_PID, V2_CGROUPFS_ID: V2_CGROUPFS_PID}) == {
        V2_SYSTEMD_ID: ProcessCounts(3, 6, 15),
        V2_CGROUPFS_ID: ProcessCounts(1, 1, 2),
    }


def test_without_the_cgroup_tree_the_pid_namespace_scan_counts(v1: Tree) -> None:
    """The exporter in a container that has the host's /proc but not its cgroups."""
    shutil.rmtree(v1.cgroup)
    container_ns = "pid:[4026532301]"
    for pid in (V1_PID, V1_PID + 1, V1_PID + 2):
        (v1.proc / str(pid) / "ns").mkdir()
        (v1.proc / str(pid) / "ns" / "pid").symlink_to(container_ns)
    v1.process(1, threads=1, fds=60, ns=HOST_NS, name="init")
    (v1.proc / "77" / "ns").mkdir()
    (v1.proc / "77" / "ns" / "pid").symlink_to(HOST_NS)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}


def test_only_containers_whose_cgroup_is_unreadable_are_scanned(
    v1: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    # A second container whose cgroup directory is not under this cgroup root.
    v1.cgroup_file(5000, recorded_cgroup("v1", V1_PID).replace(V1_ID, OTHER_ID))
    v1.process(5000, threads=1, fds=1, ns="pid:[4026532999]")
    v1.process(1, ns=HOST_NS)
    scanned: list[dict[str, int]] = []
    scan = processes.count_processes_by_namespace

    def spy(init_pids: dict[str, int], proc_root: str = "/proc") -> dict[str, ProcessCounts]:
        scanned.append(dict(init_pids))
        return scan(init_pids, proc_root)

    monkeypatch.setattr(processes, "count_processes_by_namespace", spy)
    assert v1.count({V1_ID: V1_PID, OTHER_ID: 5000}) == {
        V1_ID: ProcessCounts(3, 7, 17),
        OTHER_ID: ProcessCounts(1, 1, 1),
    }
    assert scanned == [{OTHER_ID: 5000}]


@pytest.mark.usefixtures("no_fallback")
def test_a_process_that_exits_mid_count_is_left_out(
    v1: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone_before_status, gone_before_fds, gone_while_listing = 31700, 31701, 31702
    v1.procs(
        f"pids/docker/{V1_ID}",
        V1_PID,
        V1_PID + 1,
        gone_before_status,
        gone_before_fds,
        gone_while_listing,
    )
    (v1.proc / str(gone_before_fds)).mkdir()
    (v1.proc / str(gone_before_fds) / "status").write_text(
        STATUS.format(name="sleep", pid=gone_before_fds, threads=1)
    )
    v1.process(gone_while_listing)
    listdir: Callable[[str], list[str]] = os.listdir

    def racing_listdir(path: str) -> list[str]:
        if path.endswith(f"/{gone_while_listing}/fd"):
            raise ProcessLookupError(errno.ESRCH, "No such process")
        return listdir(path)

    monkeypatch.setattr(os, "listdir", racing_listdir)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(2, 2, 7)}


@pytest.mark.usefixtures("no_fallback")
def test_an_init_pid_that_is_gone_gives_no_counts(v1: Tree) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID)
    assert v1.count({V1_ID: 99999}) == {}
    assert v1.count({V1_ID: 0}) == {}


@pytest.mark.usefixtures("no_fallback")
def test_a_reused_pid_is_neither_counted_nor_scanned(v1: Tree) -> None:
    """The pid's cgroup is another container's: its processes are not this one's."""
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    assert v1.count({OTHER_ID: V1_PID}) == {}
    # A v1-only host (no "0::" line): still not the container's, still not scanned.
    text = recorded_cgroup("v1", V1_PID)
    v1.cgroup_file(V1_PID, "".join(line for line in text.splitlines(True) if line[:3] != "0::"))
    assert v1.count({OTHER_ID: V1_PID}) == {}


@pytest.mark.usefixtures("no_fallback")
def test_unreadable_fds_give_no_counts_rather_than_short_ones(
    v1: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-root exporter may not list other users' fd dirs: no series beats a wrong one."""
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    listdir: Callable[[str], list[str]] = os.listdir

    def denied(path: str) -> list[str]:
        if path.endswith(f"/{V1_PID + 2}/fd"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", denied)
    assert v1.count({V1_ID: V1_PID}) == {}


@pytest.mark.usefixtures("no_fallback")
def test_a_counter_remembers_each_cgroup_until_a_call_leaves_it_out(v1: Tree) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    counter = CgroupProcessCounter(str(v1.proc), str(v1.cgroup))
    assert counter({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}
    # Found once: the pid's cgroup file is not read again.
    (v1.proc / str(V1_PID) / "cgroup").unlink()
    assert counter({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}
    assert counter({}) == {}
    # Forgotten: looked for from the pid again, whose cgroup file says it is gone.
    assert counter({V1_ID: V1_PID}) == {}


@pytest.mark.usefixtures("no_fallback")
def test_a_counter_looks_again_when_a_remembered_cgroup_goes(v1: Tree) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    counter = CgroupProcessCounter(str(v1.proc), str(v1.cgroup))
    assert counter({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}
    shutil.rmtree(v1.cgroup / "pids")
    v1.procs(f"memory/docker/{V1_ID}", V1_PID)
    assert counter({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(1, 1, 4)}


def test_a_cgroup_procs_longer_than_one_read_is_read_whole(tmp_path: Path) -> None:
    many = list(range(100_000, 112_000))  # 84 KiB
    (tmp_path / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in many))
    assert cgroupfs.cgroup_pids(str(tmp_path)) == set(many)


def test_the_namespace_scan_leaves_out_a_container_in_the_hosts_namespace(v1: Tree) -> None:
    v1.process(1, ns=HOST_NS)
    (v1.proc / str(V1_PID) / "ns").mkdir()
    (v1.proc / str(V1_PID) / "ns" / "pid").symlink_to(HOST_NS)
    assert count_processes_by_namespace({V1_ID: V1_PID}, str(v1.proc)) == {}


async def test_the_entry_point_counts_under_its_proc_and_cgroup_roots(tmp_path: Path) -> None:
    driver = FakeDriver()
    c = driver.add(NamingScheme().format("abcdef123456", 1))
    t = Tree(tmp_path)
    t.cgroup_file(c.pid, f"0::/docker/{c.id}\n")
    t.procs(f"docker/{c.id}", c.pid, c.pid + 1)
    t.process(c.pid, threads=1, fds=2)
    t.process(c.pid + 1, threads=4, fds=6)
    settings = Settings(stats_source="docker", proc_root=t.proc, cgroup_root=t.cgroup)
    poller = wiring.build_poller(settings, driver)
    snapshot = await poller.poll_once()
    assert snapshot.containers[0].processes == ProcessCounts(2, 5, 8)
    t.process(c.pid + 2, threads=1, fds=1)
    t.procs(f"docker/{c.id}", c.pid, c.pid + 1, c.pid + 2)
    snapshot = await poller.poll_once()
    assert snapshot.containers[0].processes == ProcessCounts(3, 6, 9)


@pytest.mark.usefixtures("no_fallback")
def test_threads_come_from_the_cgroups_pids_current_without_reading_each_status(
    v1: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    # The kernel's count of tasks: every thread, nested cgroups' too.
    (v1.cgroup / f"pids/docker/{V1_ID}/pids.current").write_text("8\n")
    real_read = cgroupfs.read_file

    def read_file(path: str) -> bytes:
        assert not path.endswith("/status"), f"{path} read though pids.current says it all"
        return real_read(path)

    monkeypatch.setattr(processes, "read_file", read_file)
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 8, 17)}


def _wait_until_sleeping(pid: int, within: float = 10.0) -> None:
    """Return once ``pid`` is in an interruptible sleep (state S); fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state == "S":
            return
        if time.monotonic() > deadline:
            pytest.fail(f"pid {pid} not asleep within {within}s (state {state})")
        time.sleep(0.01)


def test_fds_are_counted_by_stat_where_the_kernel_reports_them(
    v1: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1.procs(f"pids/docker/{V1_ID}", V1_PID, V1_PID + 1, V1_PID + 2)
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str) -> list[str]:
        listed.append(path)
        return real_listdir(path)

    monkeypatch.setattr(processes.os, "listdir", listdir)
    # A recorded tree is a plain directory: its size is not a count, so it is listed.
    assert not processes.fds_counted_by_stat(str(v1.proc))
    assert v1.count({V1_ID: V1_PID}) == {V1_ID: ProcessCounts(3, 7, 17)}
    assert len(listed) == 3
    # This kernel's /proc (Linux >= 6.2 here): one stat per process, no listing.
    assert processes.fds_counted_by_stat("/proc")
    with subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        try:
            # Just past exec, sleep's loader and locale set-up open files of their own (a CI
            # run read 3 then 4): count once it sleeps.
            _wait_until_sleeping(child.pid)
            listed.clear()
            by_stat = processes._threads_and_fds("/proc", child.pid, fds_by_stat=True)
            assert not listed
            assert by_stat == processes._threads_and_fds("/proc", child.pid) == (1, 3)
        finally:
            child.kill()
