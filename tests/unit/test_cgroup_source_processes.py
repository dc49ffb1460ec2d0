"""Process counts read by the cgroup source in the same pass as the stats, on a recorded v1 tree.

The recorded v1 container's files, with processes added (tests/support/process_tree):
the source must give the very counts the standalone counter gives, from the
files it holds open, and say when it tried but could not count.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from exporter.processes import CgroupProcessCounter
from exporter.snapshot import ProcessCounts
from exporter.sources.base import SourcedStats
from exporter.sources.cgroup import CgroupStatsSource
from tests.support.cgroup_data import V1_ID, V1_PID
from tests.support.cgroup_source import info, tree
from tests.support.process_tree import Tree

PIDS_DIR = f"pids/docker/{V1_ID}"


@pytest.fixture
def v1(tmp_path: Path) -> Tree:
    """A copy of the recorded v1 tree with three processes in the container's pids cgroup."""
    t = Tree(tree(tmp_path, "v1"))
    t.process(V1_PID, threads=1, fds=4, name="sh")
    t.process(V1_PID + 1, threads=1, fds=3)
    t.process(V1_PID + 2, threads=5, fds=10)
    t.process(77, threads=9, fds=50, name="dockerd")  # a host process: never counted
    t.procs(PIDS_DIR, V1_PID, V1_PID + 1, V1_PID + 2)
    return t


def counting(t: Tree, **options: int) -> CgroupStatsSource:
    return CgroupStatsSource(t.proc, t.cgroup, count_processes=True, **options)


async def read_one(source: CgroupStatsSource) -> SourcedStats:
    result = (await source.read_many([info(V1_ID, V1_PID)]))[V1_ID]
    assert isinstance(result, SourcedStats), result
    return result


async def test_counts_come_with_the_stats_and_match_the_counters(v1: Tree) -> None:
    got = await read_one(counting(v1))
    assert got.counted
    assert got.processes == ProcessCounts(3, 7, 17)
    assert CgroupProcessCounter(str(v1.proc), str(v1.cgroup))({V1_ID: V1_PID}) == {
        V1_ID: got.processes
    }
    assert got.stats.cpu_total_usage > 0  # the stats are read as before


async def test_threads_are_the_cgroups_own_task_count_where_it_has_one(v1: Tree) -> None:
    (v1.cgroup / PIDS_DIR / "pids.current").write_text("12\n")
    assert (await read_one(counting(v1))).processes == ProcessCounts(3, 12, 17)


async def test_without_counting_the_source_says_it_did_not_try(v1: Tree) -> None:
    got = await read_one(CgroupStatsSource(v1.proc, v1.cgroup))
    assert (got.processes, got.counted) == (None, False)


async def test_held_files_give_fresh_counts_and_see_cgroups_nested_later(v1: Tree) -> None:
    source = counting(v1)
    assert (await read_one(source)).processes == ProcessCounts(3, 7, 17)
    assert source.held_files > 0
    procs = v1.cgroup / PIDS_DIR / "cgroup.procs"
    inode = os.stat(procs).st_ino
    procs.write_text(f"{V1_PID}\n")  # the same file, rewritten in place
    assert os.stat(procs).st_ino == inode
    assert (await read_one(source)).processes == ProcessCounts(1, 1, 4)
    v1.procs(f"{PIDS_DIR}/inner", V1_PID + 2)
    assert (await read_one(source)).processes == ProcessCounts(2, 6, 14)


async def test_counts_without_held_files_are_the_same(v1: Tree) -> None:
    source = counting(v1, max_held_files=0)
    assert (await read_one(source)).processes == ProcessCounts(3, 7, 17)
    assert source.held_files == 0


async def test_a_cgroup_gone_after_the_stats_leaves_the_stats_and_no_count(v1: Tree) -> None:
    source = counting(v1, max_held_files=0)
    await read_one(source)
    shutil.rmtree(v1.cgroup / "pids")
    got = await read_one(source)
    assert (got.processes, got.counted) == (None, True)
    assert got.stats.cpu_total_usage > 0


async def test_a_process_not_ours_to_read_gives_no_count_rather_than_a_short_one(
    v1: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    listdir, stat = os.listdir, os.stat
    hidden = str(v1.proc / str(V1_PID + 1) / "fd")

    def denied_stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if os.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", path)
        return stat(path, *args, **kwargs)  # type: ignore[arg-type]

    def denied_listdir(path: str) -> list[str]:
        if os.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", path)
        return listdir(path)

    monkeypatch.setattr(os, "stat", denied_stat)
    monkeypatch.setattr(os, "listdir", denied_listdir)
    got = await read_one(counting(v1))
    assert (got.processes, got.counted) == (None, True)
