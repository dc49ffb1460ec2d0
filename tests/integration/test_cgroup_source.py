"""The cgroup source on the real engine: it agrees with the engine's own stats call."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from exporter.drivers.docker import DockerDriver
from exporter.errors import NotFoundError
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.naming import NamingScheme, container_name
from exporter.poller import Poller
from exporter.sources.base import SourcedStats, StatsResult
from exporter.sources.cgroup import CgroupStatsSource
from tests.support.cpu_burn import TICK_NS, burn_own_cpu
from tests.support.engine import TEST_IMAGE, ContainerFactory, new_app_id
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

MIB = 1024 * 1024
IDLE = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
BLOB_MIB = 2
FETCHES = 5
#: CPU the worker's shell burns, in clock ticks of 10 ms: a figure reached, not a
#: fixed amount of work, so a faster machine burns as much CPU as a slower one.
BURN_TICKS = 40


def root_device() -> str:
    """Return /dev/NAME of the disk under /var/lib/docker (where overlay2 writes land)."""
    dev = os.stat("/var/lib/docker").st_dev
    name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name
    return f"/dev/{name}"


SdkFactory = Callable[..., Container]


@pytest.fixture
def sdk_container(sdk: docker.DockerClient) -> Iterator[SdkFactory]:
    """Return a factory of containers made with the Docker SDK; all removed afterwards."""
    made: list[Container] = []

    def factory(cmd: str, **kwargs: Any) -> Container:
        kwargs.setdefault("name", container_name(new_app_id(), len(made) + 1))
        container = sdk.containers.run(TEST_IMAGE, ["/bin/sh", "-c", cmd], detach=True, **kwargs)
        made.append(container)
        return container

    try:
        yield factory
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def close(a: int, b: int, rel: float, slack: int) -> bool:
    return abs(a - b) <= max(rel * max(a, b), slack)


async def cgroup_sample(source: CgroupStatsSource, c: ContainerInfo) -> ContainerStats:
    result = (await source.read_many([c]))[c.id]
    assert isinstance(result, SourcedStats), result
    return result.stats


# field, relative tolerance, absolute slack
AGREEMENT = [
    ("cpu_total_usage", 0.02, 5_000_000),  # 5 ms: the idle loop's own wakeups
    ("cpu_user_usage", 0.02, 20_000_000),  # two 10 ms USER_HZ ticks
    ("cpu_system_usage", 0.02, 20_000_000),
    ("blk_read_bytes", 0.02, 64 * 1024),
    ("blk_write_bytes", 0.02, 64 * 1024),
    ("blk_read_ops", 0.02, 4),
    ("blk_write_ops", 0.02, 4),
    ("net_rx_bytes", 0.02, 4096),
    ("net_tx_bytes", 0.02, 4096),
    ("memory_usage", 0.05, 256 * 1024),
    ("memory_cache", 0.05, 256 * 1024),
    ("memory_inactive_file", 0.05, 256 * 1024),
]


def disagreements(
    engine: ContainerStats, before: ContainerStats, after: ContainerStats
) -> list[str]:
    """Return the fields where the engine agrees with neither of our reads around its call."""
    out = []
    for field, rel, slack in AGREEMENT:
        e, b, a = getattr(engine, field), getattr(before, field), getattr(after, field)
        if not (close(e, b, rel, slack) or close(e, a, rel, slack)):
            out.append(f"{field}: engine {e}, cgroup {b} before / {a} after")
    return out


async def assert_agree_back_to_back(
    driver: DockerDriver, source: CgroupStatsSource, c: ContainerInfo, within: float = 20.0
) -> None:
    """Read ours, the engine's, ours again, until every field agrees; fail with the details.

    Memory of a small idle container moves by a few hundred KiB between reads
    (page cache, the shell's wakeups), so one unlucky triple is retried; a
    unit or definition mismatch never agrees and fails after ``within`` seconds.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        before = await cgroup_sample(source, c)
        engine = await driver.container_stats(c.id)
        after = await cgroup_sample(source, c)
        problems = disagreements(engine, before, after)
        if not problems:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{c.name} never agreed back to back: " + "; ".join(problems))
        await asyncio.sleep(0.5)


async def test_cgroup_source_agrees_with_engine_after_cpu_disk_and_network_work(
    driver: DockerDriver, make_container: ContainerFactory, sdk_container: SdkFactory
) -> None:
    server = await make_container(
        cmd=[
            "/bin/sh",
            "-c",
            f"mkdir -p /www && dd if=/dev/zero of=/www/blob bs=1M count={BLOB_MIB} 2>/dev/null"
            f" && httpd -p 8080 -h /www && {IDLE}",
        ]
    )
    assert server.ip
    fetches = "; ".join(
        f"wget -q -O /dev/null http://{server.ip}:8080/blob" for _ in range(FETCHES)
    )
    # A write throttle on the root disk makes the kernel account block I/O
    # (the engine's block lists stay empty without one).
    worker_sdk = sdk_container(
        "dd if=/dev/zero of=/tmp/f bs=1M count=20 oflag=direct 2>/dev/null; "
        "dd if=/tmp/f of=/dev/null bs=1M iflag=direct 2>/dev/null; "
        # Page cache the kernel cannot take back (tmpfs, no swap): a written
        # file's cache may be reclaimed or written back while the test waits.
        "dd if=/dev/zero of=/dev/shm/cached bs=1M count=4 2>/dev/null; "
        f"{burn_own_cpu(BURN_TICKS)}; "
        f"until {fetches}; do sleep 0.2; done; {IDLE}",
        device_write_bps=[{"Path": root_device(), "Rate": 100 * MIB}],
    )
    worker = await driver.container_inspect(worker_sdk.id)
    source = CgroupStatsSource()
    last_cpu = [-1]

    async def work_done() -> bool:
        s = await cgroup_sample(source, worker)
        still = s.cpu_total_usage - last_cpu[0] < 2_000_000
        last_cpu[0] = s.cpu_total_usage
        return still and s.net_rx_bytes >= FETCHES * BLOB_MIB * MIB and s.blk_write_bytes > 0

    await wait_for(
        work_done, timeout=60, what="the worker to finish its work and go idle", every=0.5
    )

    for c in (worker, server):
        await assert_agree_back_to_back(driver, source, c)

    ours = await cgroup_sample(source, worker)
    # The work shows, so the agreement above compared real figures. The
    # shell alone burned BURN_TICKS ticks; the cgroup counts it and more.
    assert ours.cpu_total_usage > (BURN_TICKS - 1) * TICK_NS
    assert ours.cpu_user_usage + ours.cpu_system_usage > 200_000_000
    assert ours.blk_write_bytes >= 20 * MIB
    assert ours.blk_write_ops >= 20
    assert ours.blk_read_bytes >= 20 * MIB
    assert ours.net_rx_bytes >= FETCHES * BLOB_MIB * MIB
    assert ours.memory_cache >= 4 * MIB
    served = await cgroup_sample(source, server)
    assert served.net_tx_bytes >= FETCHES * BLOB_MIB * MIB


async def test_a_running_cpu_burner_is_read_within_two_percent(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    burner = await make_container(cmd=["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do :; done"])
    source = CgroupStatsSource()

    async def burned_a_second() -> bool:
        return (await cgroup_sample(source, burner)).cpu_total_usage > 1_000_000_000

    await wait_for(burned_a_second, timeout=30, what="the burner to use 1 s of CPU")
    before = await cgroup_sample(source, burner)
    engine = await driver.container_stats(burner.id)
    after = await cgroup_sample(source, burner)
    # The counter only grows and the engine read it during its call, so its
    # figure lies between ours from just before and just after, up to 2%.
    slack = max(0.02 * engine.cpu_total_usage, 20_000_000)
    assert before.cpu_total_usage - slack <= engine.cpu_total_usage, (before, engine)
    assert engine.cpu_total_usage <= after.cpu_total_usage + slack, (engine, after)
    assert before.cpu_total_usage <= after.cpu_total_usage


async def test_host_network_container_counts_no_traffic_like_the_engine(
    driver: DockerDriver, sdk_container: SdkFactory
) -> None:
    made = sdk_container(IDLE, network_mode="host")
    c = await driver.container_inspect(made.id)
    ours = await cgroup_sample(CgroupStatsSource(), c)
    engine = await driver.container_stats(c.id)
    # Its /proc/<pid>/net/dev is the host's own; the engine reports no networks at all.
    assert (engine.net_rx_bytes, engine.net_tx_bytes) == (0, 0)
    assert (ours.net_rx_bytes, ours.net_tx_bytes) == (0, 0)
    assert ours.memory_usage > 0


class KillBeforeRead:
    """A stats source that kills chosen containers just before the cgroup source reads."""

    def __init__(self, inner: CgroupStatsSource, kill: Callable[[str], None]) -> None:
        self._inner = inner
        self._kill = kill
        self.victims: list[ContainerInfo] = []
        self.results: dict[str, StatsResult] = {}

    @property
    def name(self) -> str:
        return self._inner.name

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        for victim in self.victims:
            await asyncio.to_thread(self._kill, victim.id)

            async def pid_gone(pid: int = victim.pid) -> bool:
                return not await asyncio.to_thread(os.path.exists, f"/proc/{pid}")

            await wait_for(pid_gone, timeout=15, what=f"pid {victim.pid} to exit")
        self.results = await self._inner.read_many(containers)
        self.victims = []
        return self.results


async def test_container_killed_during_a_poll_is_no_error_and_leaves_no_series(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    first, second, survivor = [await make_container() for _ in range(3)]
    source = KillBeforeRead(CgroupStatsSource(), lambda cid: sdk.containers.get(cid).kill())
    poller = Poller(driver, source, naming=NamingScheme(), process_counter=None)

    # Killed in the very first poll: after inspect, before the read.
    source.victims = [first]
    snapshot = await poller.poll_once()
    assert isinstance(source.results[first.id], NotFoundError)
    rows = {s.info.id: s for s in snapshot.containers}
    assert rows[first.id].stats is None
    assert not rows[first.id].stale
    for alive in (second, survivor):
        assert rows[alive.id].stats is not None
        assert rows[alive.id].stats_source == "cgroup"

    # Killed after a poll that read it: never fresh numbers for a dead container.
    source.victims = [second]
    snapshot = await poller.poll_once()
    assert isinstance(source.results[second.id], NotFoundError)
    rows = {s.info.id: s for s in snapshot.containers}
    assert rows[second.id].stats is None or rows[second.id].stale
    assert rows[survivor.id].stats is not None
    assert not rows[survivor.id].stale

    # The next poll sees both stopped: no stats series for either.
    snapshot = await poller.poll_once()
    rows = {s.info.id: s for s in snapshot.containers}
    for dead in (first, second):
        assert rows[dead.id].info.state is ContainerState.STOPPED
        assert rows[dead.id].stats is None
        assert not rows[dead.id].stale
    assert rows[survivor.id].stats is not None
    assert sum(poller.health.errors.values()) == 0, poller.health.errors
