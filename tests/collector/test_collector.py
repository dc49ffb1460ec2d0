"""Polling behaviour on the in-memory driver: what is tracked, skipped, kept and dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from exporter.errors import DriverTimeoutError, EngineUnreachableError, NotFoundError
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.naming import NamingScheme
from exporter.poller import Poller
from exporter.snapshot import ProcessCounts
from exporter.sources.base import SourcedStats, StatsResult
from exporter.testing import FakeDriver
from tests.support.engine import poller_on, snapshot_names


async def test_tracks_managed_containers_and_parses_app_and_replica() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-00ff")
    driver.add("redis")
    poller = poller_on(driver)
    snapshot = await poller.poll_once()
    assert snapshot.engine_up
    assert [(s.info.name, s.app, s.replica) for s in snapshot.containers] == [
        ("app-abcdef12-00ff", "abcdef12", 255)
    ]
    assert snapshot.containers[0].stats is not None


async def test_collect_all_includes_unmanaged_without_app() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    driver.add("redis")
    poller = poller_on(driver, include_unmanaged=True)
    await poller.poll_once()
    by_name = {s.info.name: s for s in poller.snapshot.containers}
    assert set(by_name) == {"app-abcdef12-0001", "redis"}
    assert by_name["redis"].app is None
    assert by_name["redis"].replica is None


async def test_only_running_containers_are_asked_for_stats() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002", ContainerState.STOPPED)
    poller = poller_on(driver)
    await poller.poll_once()
    assert driver.calls["container_stats"] == 1
    stopped = next(s for s in poller.snapshot.containers if s.replica == 2)
    assert stopped.stats is None
    assert stopped.info.state is ContainerState.STOPPED


async def test_container_gone_between_list_and_inspect_is_skipped_silently() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    gone = driver.add("app-abcdef12-0002")
    original = driver.container_inspect

    async def inspect(name_or_id: str) -> ContainerInfo:
        if name_or_id == gone.id:
            raise NotFoundError(404, "No such container")
        return await original(name_or_id)

    driver.container_inspect = inspect  # type: ignore[method-assign]
    poller = poller_on(driver)
    await poller.poll_once()
    assert snapshot_names(poller) == {"app-abcdef12-0001"}
    assert sum(poller.health.errors.values()) == 0


async def test_container_gone_between_inspect_and_stats_is_skipped_silently() -> None:
    driver = FakeDriver()
    keep = driver.add("app-abcdef12-0001")
    gone = driver.add("app-abcdef12-0002")

    def stats(info: ContainerInfo) -> ContainerStats:
        if info.id == gone.id:
            raise NotFoundError(404, "No such container")
        return ContainerStats(time=1.0, cpu_total_usage=5)

    driver.stats_factory = stats
    poller = poller_on(driver)
    await poller.poll_once()
    samples = {s.info.id: s for s in poller.snapshot.containers}
    assert samples[keep.id].stats is not None
    assert samples[gone.id].stats is None
    assert sum(poller.health.errors.values()) == 0


async def test_stats_timeout_keeps_last_sample_for_one_more_poll_then_drops_it() -> None:
    driver = FakeDriver()
    c = driver.add("app-abcdef12-0001")
    driver.stats[c.id] = ContainerStats(time=1.0, cpu_total_usage=42)
    poller = poller_on(driver)
    await poller.poll_once()
    driver.fail("container_stats", DriverTimeoutError("slow"))

    first = (await poller.poll_once()).containers[0]
    assert first.stale
    assert first.stats is not None
    assert first.stats.cpu_total_usage == 42
    assert poller.health.errors["stats_timeout"] == 1

    second = (await poller.poll_once()).containers[0]
    assert second.stats is None
    assert not second.stale
    assert poller.health.errors["stats_timeout"] == 2

    driver.heal()
    third = (await poller.poll_once()).containers[0]
    assert third.stats is not None
    assert not third.stale


async def test_removed_container_drops_out_of_the_next_snapshot() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    c2 = driver.add("app-abcdef12-0002")
    poller = poller_on(driver)
    await poller.poll_once()
    assert len(poller.snapshot.containers) == 2
    await driver.container_remove(c2.id)
    await poller.poll_once()
    assert snapshot_names(poller) == {"app-abcdef12-0001"}


async def test_engine_down_empties_the_snapshot_and_counts_the_error_then_recovers() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = poller_on(driver)
    await poller.poll_once()
    driver.fail("container_list", EngineUnreachableError("cannot connect"))
    down = await poller.poll_once()
    assert not down.engine_up
    assert down.containers == ()
    assert down.error is not None
    assert "cannot connect" in down.error
    assert poller.health.errors["list"] == 1
    last_ok = poller.health.last_success_at
    driver.heal()
    up = await poller.poll_once()
    assert up.engine_up
    assert len(up.containers) == 1
    assert poller.health.last_success_at >= last_ok


async def test_stats_calls_run_concurrently() -> None:
    driver = FakeDriver()
    for i in range(20):
        driver.add(f"app-abcdef12-{i:04x}")
    in_flight = 0
    peak = 0
    release = asyncio.Event()
    original = driver.container_stats

    async def stats(name_or_id: str) -> ContainerStats:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak == 20:
            release.set()
        # Every call waits until all 20 are in flight at once: a serial poll would hang.
        await asyncio.wait_for(release.wait(), timeout=5)
        in_flight -= 1
        return await original(name_or_id)

    driver.container_stats = stats  # type: ignore[method-assign]
    poller = poller_on(driver)
    snapshot = await poller.poll_once()
    assert peak == 20
    assert all(s.stats is not None for s in snapshot.containers)


async def test_process_counts_come_from_the_counter_by_container_id() -> None:
    driver = FakeDriver()
    c = driver.add("app-abcdef12-0001")
    seen: list[dict[str, int]] = []

    def counter(pids: dict[str, int]) -> dict[str, tuple[int, int, int]]:
        seen.append(pids)
        return {cid: (2, 3, 4) for cid in pids}

    poller = poller_on(driver, process_counter=counter)
    snapshot = await poller.poll_once()
    assert seen == [{c.id: c.pid}]
    assert snapshot.containers[0].processes == (2, 3, 4)


async def test_counts_read_with_the_stats_are_not_asked_of_the_counter_again() -> None:
    driver = FakeDriver()
    counted = driver.add("app-abcdef12-0001")
    refused = driver.add("app-abcdef12-0002")
    left = driver.add("app-abcdef12-0003")

    class CountingSource:
        """Counts two containers in its own pass (one of them not countable), not the third."""

        name = "counting"

        async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
            stats = ContainerStats(time=1.0)
            return {
                counted.id: SourcedStats(stats, self.name, ProcessCounts(5, 6, 7), counted=True),
                refused.id: SourcedStats(stats, self.name, None, counted=True),
                left.id: SourcedStats(stats, self.name),
            }

    asked: list[dict[str, int]] = []

    def counter(pids: dict[str, int]) -> dict[str, ProcessCounts]:
        asked.append(pids)
        return {cid: ProcessCounts(1, 1, 1) for cid in pids}

    poller = Poller(driver, CountingSource(), naming=NamingScheme(), process_counter=counter)
    snapshot = await poller.poll_once()
    assert asked == [{left.id: left.pid}]
    got = {s.info.id: s.processes for s in snapshot.containers}
    assert got == {
        counted.id: ProcessCounts(5, 6, 7),
        refused.id: None,
        left.id: ProcessCounts(1, 1, 1),
    }


async def test_a_failing_process_counter_does_not_break_the_poll() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")

    def counter(pids: dict[str, int]) -> dict[str, tuple[int, int, int]]:
        raise PermissionError("no /proc")

    poller = poller_on(driver, process_counter=counter)
    snapshot = await poller.poll_once()
    assert snapshot.engine_up
    assert snapshot.containers[0].processes is None
    assert poller.health.errors["processes"] == 1


async def test_background_polling_runs_on_the_interval_and_stops_cleanly() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = poller_on(driver, interval=0.2)
    async with poller.running():
        await asyncio.wait_for(poller.wait_next_poll(), timeout=5)
        await asyncio.wait_for(poller.wait_next_poll(), timeout=5)
    polls = poller.health.polls
    assert polls >= 2
    # Stopped, not merely quiet for a while: no task is left that could poll again.
    assert asyncio.all_tasks() == {asyncio.current_task()}
    for _ in range(10):
        await asyncio.sleep(0)  # let anything still scheduled run
    assert poller.health.polls == polls


async def test_a_container_stopped_between_inspect_and_stats_is_skipped_silently() -> None:
    driver = FakeDriver()
    c = driver.add("app-abcdef12-0001")
    original = driver.container_inspect

    async def inspect_then_stop(name_or_id: str) -> ContainerInfo:
        info = await original(name_or_id)
        await driver.container_stop(c.id)  # stops after inspect saw it running
        return info

    driver.container_inspect = inspect_then_stop  # type: ignore[method-assign]
    poller = poller_on(driver)
    snapshot = await poller.poll_once()
    assert snapshot.containers[0].stats is None
    assert sum(poller.health.errors.values()) == 0


async def test_first_poll_tells_the_unmanaged_left_out_and_carries_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    driver.add("app-0123abcd-0001")
    driver.add("postgres")
    driver.add("redis")
    host = ContainerStats(time=1.0, cpu_total_usage=7)
    poller = poller_on(driver, interval=0.05, host_reader=lambda: host)
    caplog.set_level("INFO", logger="exporter.poller")
    async with poller.running():
        snapshot = await poller.wait_next_poll()
        await poller.wait_next_poll()  # a second poll: the log is told once, not again
    assert snapshot.unmanaged_left_out == 2
    assert snapshot.host is host
    told = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert told == [
        "tracking 1 managed containers; 2 unmanaged ones (names outside the naming pattern) "
        "are left out: --collect.all includes them"
    ]


async def test_a_failing_host_reader_leaves_the_host_out_not_the_poll() -> None:
    driver = FakeDriver()
    driver.add("app-0123abcd-0001")

    def broken() -> ContainerStats:
        raise OSError("no /proc")

    snapshot = await poller_on(driver, host_reader=broken).poll_once()
    assert snapshot.engine_up
    assert snapshot.host is None
    assert len(snapshot.containers) == 1
