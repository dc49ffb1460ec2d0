"""Polling behaviour on the in-memory driver: what is tracked, skipped, kept and dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporter.errors import DriverTimeoutError, EngineUnreachableError, NotFoundError
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.poller import Poller
from exporter.testing import FakeDriver
from tests.support.engine import poller_on

#: asyncio may run a timer up to one clock tick (1 ns on Linux) early; float rounding on top.
TIMER_EARLY = 1e-6


def _names(poller: Poller) -> set[str]:
    return {s.info.name for s in poller.snapshot.containers}


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
    assert _names(poller) == {"app-abcdef12-0001"}
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
    assert _names(poller) == {"app-abcdef12-0001"}


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


async def test_a_hanging_inspect_is_cut_by_the_call_timeout() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    driver.delays["container_inspect"] = 30
    poller = poller_on(driver, call_timeout=0.2)
    snapshot = await asyncio.wait_for(poller.poll_once(), timeout=5)
    assert snapshot.engine_up
    assert snapshot.containers == ()
    assert poller.health.errors["inspect"] == 1


class _HeldInspect:
    """Holds the inspect of one container until released; records what was asked."""

    def __init__(self, driver: FakeDriver, held_id: str) -> None:
        self.held_id = held_id
        self.asked: list[str] = []
        self.held_asked_at: float | None = None
        self.release = asyncio.Event()
        self.answered = asyncio.Event()
        self.cancelled = False
        self._original = driver.container_inspect
        driver.container_inspect = self  # type: ignore[method-assign]

    async def __call__(self, name_or_id: str) -> ContainerInfo:
        self.asked.append(name_or_id)
        if name_or_id == self.held_id:
            if self.held_asked_at is None:
                self.held_asked_at = time.monotonic()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        info = await self._original(name_or_id)
        if name_or_id == self.held_id:
            self.answered.set()
        return info


async def test_a_late_inspect_leaves_out_only_its_container_and_lands_later() -> None:
    driver = FakeDriver()
    held = driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002")
    inspect = _HeldInspect(driver, held.id)
    poller = poller_on(driver, interval=0.2, call_timeout=30)

    before = time.monotonic()
    snapshot = await asyncio.wait_for(poller.poll_once(), timeout=5)
    after = time.monotonic()
    # The poll ends at its soft deadline, far inside the 30 s call timeout,
    # and the time went to the inspect phase: the list phase ended before the
    # held inspect was asked, the inspect phase lasted from then until the soft
    # deadline (one interval after the poll began), the stats phase after it.
    # Each bound is a clock reading of this run, so none assumes a speed.
    assert snapshot.duration_seconds < 5
    phases = dict(snapshot.phase_seconds)
    assert list(phases) == ["list", "inspect", "stats"]
    assert inspect.held_asked_at is not None
    soft_deadline = before + poller.interval - TIMER_EARLY
    assert phases["list"] <= inspect.held_asked_at - before
    assert phases["inspect"] >= soft_deadline - inspect.held_asked_at
    assert phases["stats"] <= after - soft_deadline
    assert _names(poller) == {"app-abcdef12-0002"}
    assert poller.health.errors["inspect_late"] == 1
    assert poller.health.errors["inspect"] == 0

    # Still held: the next poll leaves it out again and does not ask twice.
    await asyncio.wait_for(poller.poll_once(), timeout=5)
    assert inspect.asked.count(held.id) == 1
    assert poller.health.errors["inspect_late"] == 2

    inspect.release.set()
    await asyncio.wait_for(inspect.answered.wait(), timeout=5)
    await poller.poll_once()
    assert _names(poller) == {"app-abcdef12-0001", "app-abcdef12-0002"}
    # The answer that came in the background was cached: no new inspect.
    assert inspect.asked.count(held.id) == 1
    await poller.aclose()


async def test_aclose_cancels_inspects_left_running() -> None:
    driver = FakeDriver()
    held = driver.add("app-abcdef12-0001")
    inspect = _HeldInspect(driver, held.id)
    poller = poller_on(driver, interval=0.1, call_timeout=30)
    await asyncio.wait_for(poller.poll_once(), timeout=5)
    assert inspect.asked == [held.id]

    await poller.aclose()
    assert inspect.cancelled
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_removed_container_whose_inspect_is_late_goes_at_the_next_poll() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    await (poller := poller_on(driver, interval=0.1, call_timeout=30)).poll_once()
    leaving = driver.add("app-abcdef12-0002")
    inspect = _HeldInspect(driver, leaving.id)  # the engine holds it while removing it
    await poller.poll_once()
    assert _names(poller) == {"app-abcdef12-0001"}

    await driver.container_remove(leaving.id)
    inspect.release.set()
    await poller.poll_once()
    assert _names(poller) == {"app-abcdef12-0001"}
    await poller.aclose()


async def test_a_bug_in_inspecting_is_logged_once_and_polling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    broken = driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002")
    original = driver.container_inspect

    async def inspect(name_or_id: str) -> ContainerInfo:
        if name_or_id == broken.id:
            raise RuntimeError("a bug, not an engine error")
        return await original(name_or_id)

    driver.container_inspect = inspect  # type: ignore[method-assign]
    poller = poller_on(driver)
    snapshot = await poller.poll_once()
    assert snapshot.engine_up
    # The batch stopped at the bug: what it had inspected is kept, the rest left out.
    assert _names(poller) <= {"app-abcdef12-0002"}
    bugs = [r for r in caplog.records if "inspecting failed unexpectedly" in r.getMessage()]
    assert len(bugs) == 1
    assert bugs[0].exc_info is not None
    await poller.aclose()


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


async def test_unchanged_containers_are_not_inspected_again() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002")
    poller = poller_on(driver)
    await poller.poll_once()
    await poller.poll_once()
    assert driver.calls["container_inspect"] == 2
    assert driver.calls["container_stats"] == 4


async def test_a_restart_is_seen_by_the_next_poll() -> None:
    driver = FakeDriver()
    c = driver.add("app-abcdef12-0001")
    poller = poller_on(driver)
    first = (await poller.poll_once()).containers[0].info
    await driver.container_stop(c.id)
    await driver.container_start(c.id)
    second = (await poller.poll_once()).containers[0].info
    assert driver.calls["container_inspect"] == 2
    assert second.started > first.started
    assert second.pid != first.pid


async def test_inspect_results_expire_after_the_max_age() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = poller_on(driver, inspect_max_age=0.0)
    await poller.poll_once()
    await poller.poll_once()
    assert driver.calls["container_inspect"] == 2


async def test_a_state_change_reaches_the_snapshot_without_waiting_for_expiry() -> None:
    driver = FakeDriver()
    c = driver.add("app-abcdef12-0001")
    poller = poller_on(driver)
    await poller.poll_once()
    await driver.container_stop(c.id)
    snapshot = await poller.poll_once()
    assert snapshot.containers[0].info.state is ContainerState.STOPPED
    assert snapshot.containers[0].stats is None


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
