"""When the poller inspects: inspects that hang or come late, and results kept until they expire."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporter.models import ContainerInfo, ContainerState
from exporter.testing import FakeDriver
from tests.support.engine import poller_on, snapshot_names

#: asyncio may run a timer up to one clock tick (1 ns on Linux) early; float rounding on top.
TIMER_EARLY = 1e-6


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
    assert snapshot_names(poller) == {"app-abcdef12-0002"}
    assert poller.health.errors["inspect_late"] == 1
    assert poller.health.errors["inspect"] == 0

    # Still held: the next poll leaves it out again and does not ask twice.
    await asyncio.wait_for(poller.poll_once(), timeout=5)
    assert inspect.asked.count(held.id) == 1
    assert poller.health.errors["inspect_late"] == 2

    inspect.release.set()
    await asyncio.wait_for(inspect.answered.wait(), timeout=5)
    await poller.poll_once()
    assert snapshot_names(poller) == {"app-abcdef12-0001", "app-abcdef12-0002"}
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
    assert snapshot_names(poller) == {"app-abcdef12-0001"}

    await driver.container_remove(leaving.id)
    inspect.release.set()
    await poller.poll_once()
    assert snapshot_names(poller) == {"app-abcdef12-0001"}
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
    assert snapshot_names(poller) <= {"app-abcdef12-0002"}
    bugs = [r for r in caplog.records if "inspecting failed unexpectedly" in r.getMessage()]
    assert len(bugs) == 1
    assert bugs[0].exc_info is not None
    await poller.aclose()


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
