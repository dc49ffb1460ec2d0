"""Process counts on the real engine: a container's own processes and a ``docker exec -d`` one."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from exporter import processes
from exporter.processes import CgroupProcessCounter, count_processes, count_processes_by_namespace
from exporter.snapshot import ProcessCounts
from exporter.sources.base import SourcedStats
from exporter.sources.cgroup import CgroupStatsSource
from tests.support.engine import ContainerFactory
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

THREE = ["sh", "-c", "sleep 3600 & sleep 3600 & wait"]


def _count(cid: str, pid: int) -> ProcessCounts | None:
    return count_processes({cid: pid}).get(cid)


async def test_counts_the_containers_processes_and_an_exec_d_one(
    make_container: ContainerFactory, sdk: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scan(init_pids: object, proc_root: str = "/proc") -> None:
        pytest.fail("the host's cgroup tree is here: no namespace scan")

    # The cgroup path alone must find them, exec'd one included; the counter
    # as the exporter wires it, so later counts come from the remembered cgroup.
    monkeypatch.setattr(processes, "count_processes_by_namespace", no_scan)
    counter = CgroupProcessCounter()
    c = await make_container(cmd=THREE)

    async def counted(n: int) -> bool:
        counts = counter({c.id: c.pid}).get(c.id)
        return counts is not None and counts.processes == n

    # sh starts its two sleeps after the engine reports the container running.
    await wait_for(lambda: counted(3), 10, "sh and its two sleeps")
    counts = counter({c.id: c.pid}).get(c.id)
    assert counts is not None
    assert counts.threads == 3  # busybox is single-threaded
    assert counts.fds >= 3 * 3  # stdin, stdout and stderr each at least

    sdk.containers.get(c.id).exec_run(["sleep", "3600"], detach=True)
    await wait_for(lambda: counted(4), 10, "the docker exec -d process")


async def test_the_namespace_scan_agrees_and_is_the_fallback(
    make_container: ContainerFactory,
    sdk: docker.DockerClient,
    tmp_path: Path,
) -> None:
    c = await make_container(cmd=THREE)
    sdk.containers.get(c.id).exec_run(["sleep", "3600"], detach=True)

    async def four() -> bool:
        counts = _count(c.id, c.pid)
        return counts is not None and counts.processes == 4

    await wait_for(four, 10, "three processes and an exec'd one")
    by_cgroup = count_processes({c.id: c.pid})
    assert count_processes_by_namespace({c.id: c.pid}) == by_cgroup
    # No cgroup tree under this root: the scan answers instead.
    assert count_processes({c.id: c.pid}, cgroup_root=str(tmp_path)) == by_cgroup


async def test_the_cgroup_source_counts_in_its_own_pass_as_the_counter_does(
    make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    c = await make_container(cmd=THREE)
    sdk.containers.get(c.id).exec_run(["sleep", "3600"], detach=True)
    counter = CgroupProcessCounter()
    source = CgroupStatsSource(count_processes=True)

    async def both_see_four() -> bool:
        result = (await source.read_many([c]))[c.id]
        assert isinstance(result, SourcedStats), result
        assert result.counted
        return result.processes == counter({c.id: c.pid}).get(c.id) and (
            result.processes is not None and result.processes.processes == 4
        )

    # The second and later reads go through the files held open by the first.
    await wait_for(both_see_four, 10, "the same four processes through both")
    assert source.held_files > 0
    source.close()
