"""Discovery from the event stream, on the in-memory driver: what events change, and when."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

import exporter.poller as poller_module
from exporter import testing
from exporter.drivers.base import ContainerEvent
from exporter.errors import EngineUnreachableError
from exporter.models import ContainerCreateOptions, ContainerInfo, ContainerState, ContainerStats
from exporter.poller import Poller
from exporter.snapshot import ErrorKind
from exporter.testing import FakeDriver
from tests.support.engine import poller_on
from tests.support.waiting import wait_for

#: Long enough that no timed poll comes while a test waits for an event's effect.
NO_POLL = 3600.0


def _names(poller: Poller) -> set[str]:
    return {s.info.name for s in poller.snapshot.containers}


def _following(driver: FakeDriver, interval: float = 0.05, **options: object) -> Poller:
    return poller_on(driver, interval=interval, events=driver, **options)


async def _polls_after(poller: Poller, count: int) -> None:
    """Return once ``count`` more polls have completed."""
    for _ in range(count):
        await asyncio.wait_for(poller.wait_next_poll(), 10)


async def test_containers_made_and_changed_are_seen_without_another_list() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = _following(driver)
    async with poller.running():
        await wait_for(
            _true(lambda: _names(poller) == {"app-abcdef12-0001"}), 5, "the listed container"
        )
        lists = driver.calls["container_list"]
        await driver.container_create(
            ContainerCreateOptions(name="app-abcdef12-0002", image="local/busybox:latest")
        )
        await driver.container_start("app-abcdef12-0002")
        await wait_for(_true(lambda: "app-abcdef12-0002" in _names(poller)), 5, "the new container")
        await driver.container_rename("app-abcdef12-0002", "app-abcdef12-0003")
        await wait_for(
            _true(lambda: _names(poller) == {"app-abcdef12-0001", "app-abcdef12-0003"}),
            5,
            "the renamed container under its new name",
        )
        await _polls_after(poller, 3)
        assert driver.calls["container_list"] == lists, "a steady poll listed the containers"
        # One inspect per event, none per poll.
        inspects = driver.calls["container_inspect"]
        await _polls_after(poller, 3)
        assert driver.calls["container_inspect"] == inspects


async def test_a_destroyed_container_leaves_the_snapshot_when_its_event_arrives() -> None:
    driver = FakeDriver()
    gone = driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002")
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 2), 5, "both containers")
        polls = poller.health.polls
        await driver.container_remove(gone.id)
        await wait_for(
            _true(lambda: _names(poller) == {"app-abcdef12-0002"}), 5, "the destroyed one to go"
        )
        assert poller.health.polls == polls, "it took a poll, not the event"
        assert poller.snapshot.engine_up


async def test_a_die_updates_the_containers_inspect_fields_at_once() -> None:
    driver = FakeDriver()
    info = driver.add("app-abcdef12-0001")
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(poller.snapshot.containers) == 1), 5, "the container")
        assert poller.snapshot.containers[0].stats is not None
        await driver.container_stop(info.id)

        def stopped() -> bool:
            sample = poller.snapshot.containers[0]
            return sample.info.state is ContainerState.STOPPED and sample.stats is None

        await wait_for(_true(stopped), 5, "the die event's inspect to reach the snapshot")


async def test_an_engine_away_at_start_reads_as_a_failed_list_does() -> None:
    # The README's troubleshooting quotes the driver's words for an unreachable engine:
    # a stream that never opened says them as they are, not as a broken stream.
    driver = FakeDriver()
    down = EngineUnreachableError("cannot connect to Docker Engine via unix:///x.sock: denied")
    driver.fail("container_events", down)
    poller = _following(driver)
    async with poller.running():
        await wait_for(_true(lambda: poller.snapshot.error is not None), 5, "a failed poll")
        assert not poller.snapshot.engine_up
        assert poller.snapshot.error == str(down)
        driver.heal("container_events")
        await wait_for(_true(lambda: poller.snapshot.engine_up), 5, "the stream to open")


async def test_a_broken_stream_is_up_0_then_reconnects_resyncs_and_loses_nothing() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = _following(driver)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 1), 5, "the container")
        lists = driver.calls["container_list"]
        driver.fail("container_events")
        driver.break_events()
        await wait_for(_true(lambda: not poller.snapshot.engine_up), 5, "up to drop to 0")
        assert poller.snapshot.containers == ()
        assert poller.health.errors[ErrorKind.EVENTS] == 1
        # Made while no stream was open: no event will ever tell of it.
        driver.add("app-abcdef12-0002")
        await _polls_after(poller, 3)
        assert not poller.snapshot.engine_up, "up was 1 with no stream"
        # Reconnect attempts while down count as one outage, not one error each.
        assert poller.health.errors[ErrorKind.EVENTS] == 1
        driver.heal("container_events")
        await wait_for(
            _true(
                lambda: (
                    poller.snapshot.engine_up
                    and _names(poller) == {"app-abcdef12-0001", "app-abcdef12-0002"}
                )
            ),
            5,
            "the resync after the reconnect",
        )
        assert driver.calls["container_list"] == lists + 1
        assert driver.event_streams == 1


async def test_the_resync_heals_a_missed_event() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = _following(driver, resync_interval=0.3)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 1), 5, "the container")
        driver.add("app-abcdef12-0002")  # no event: as if the stream had lost it
        await wait_for(_true(lambda: len(_names(poller)) == 2), 5, "the resync to find it")


async def test_a_list_under_way_cannot_bring_back_a_container_destroyed_meanwhile() -> None:
    driver = FakeDriver()
    gone = driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002")
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 2), 5, "both containers")
        list_entered = asyncio.Event()
        destroyed = asyncio.Event()
        original = driver.container_list

        async def slow_list() -> list[ContainerInfo]:
            listed = await original()
            list_entered.set()
            await destroyed.wait()  # the list's answer is in flight while the destroy lands
            return listed

        driver.container_list = slow_list  # type: ignore[method-assign]
        poller._resync_wanted = True
        resync = asyncio.create_task(poller.poll_once())
        await list_entered.wait()
        await driver.container_remove(gone.id)
        await wait_for(_true(lambda: gone.id in poller._destroyed), 5, "the destroy event")
        destroyed.set()
        snapshot = await resync
        assert {s.info.name for s in snapshot.containers} == {"app-abcdef12-0002"}


async def test_a_missed_die_is_healed_by_the_failed_stats_read() -> None:
    driver = FakeDriver()
    info = driver.add("app-abcdef12-0001")
    poller = _following(driver, interval=0.05)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 1), 5, "the container")
        # Stopped behind the stream's back: no die event.
        driver.containers[info.id] = dataclasses.replace(
            driver.containers[info.id], state=ContainerState.STOPPED, pid=0
        )
        await wait_for(
            _true(lambda: poller.snapshot.containers[0].info.state is ContainerState.STOPPED),
            5,
            "the stats read's 409 to re-inspect it",
        )


async def test_re_inspects_in_flight_are_bounded_and_past_the_bound_a_list_heals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poller_module, "MAX_REFRESHING", 2)
    driver = FakeDriver()
    infos = [driver.add(f"app-abcdef12-{i:04x}") for i in range(1, 6)]
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 5), 5, "the containers")
        driver.delays["container_inspect"] = 0.3
        for info in infos:
            driver.emit("update", info)
        await asyncio.sleep(0)  # let the stream task take the events
        await wait_for(_true(lambda: poller._resync_wanted), 5, "the overflow to ask for a list")
        assert len(poller._refreshing) <= 2
        lists = driver.calls["container_list"]
        del driver.delays["container_inspect"]
        await poller.poll_once()
        assert driver.calls["container_list"] == lists + 1


async def test_destroyed_ids_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "DESTROYED_KEPT", 3)
    driver = FakeDriver()
    poller = _following(driver, interval=NO_POLL)
    for i in range(10):
        poller._forget(f"{i:064x}")
    assert list(poller._destroyed) == [f"{i:064x}" for i in (7, 8, 9)]


async def test_poll_mode_lists_at_every_poll() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = poller_on(driver, interval=0.05)
    async with poller.running():
        await _polls_after(poller, 3)
    assert driver.calls["container_list"] >= 3
    assert driver.calls["container_events"] == 0


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """Wrap a sync check as wait_for's async predicate."""

    async def predicate() -> bool:
        return check()

    return predicate


async def test_events_of_containers_not_tracked_cost_no_inspect() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    other = driver.add("redis")
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 1), 5, "the container")
        inspects = driver.calls["container_inspect"]
        for _ in range(20):
            driver.emit("update", other)
        # Renamed into tracking: that one is inspected, and tracked from then on.
        await driver.container_rename("redis", "app-abcdef12-0002")
        await wait_for(_true(lambda: other.id in poller._known), 5, "the renamed one tracked")
        assert driver.calls["container_inspect"] == inspects + 1, "inspected for untracked events"


async def test_containers_whose_inspect_was_late_at_the_list_come_in_at_the_next_poll() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    driver.add("app-abcdef12-0002")
    driver.delays["container_inspect"] = 0.3  # past the poll's deadline (its interval)
    poller = _following(driver, interval=0.1, resync_interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 2), 5, "the late inspects to come in")
    assert poller.health.errors[ErrorKind.INSPECT_LATE] >= 2
    assert driver.calls["container_list"] >= 2


async def test_a_poll_under_way_when_the_stream_breaks_is_a_failed_poll() -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 1), 5, "the container")
        entered = asyncio.Event()
        release = asyncio.Event()
        original = driver.container_stats

        async def held_stats(name_or_id: str) -> ContainerStats:
            entered.set()
            await release.wait()
            return await original(name_or_id)

        driver.container_stats = held_stats  # type: ignore[method-assign]
        driver.fail("container_events")
        poll = asyncio.create_task(poller.poll_once())
        await entered.wait()
        driver.break_events()
        await wait_for(_true(lambda: not poller.snapshot.engine_up), 5, "up to drop to 0")
        release.set()
        snapshot = await poll
        assert not snapshot.engine_up, "the poll under way published up 1 after the break"
        assert not poller.snapshot.engine_up


class _Buggy:
    """An event source whose first stream raises what no driver should."""

    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver
        self.opened = 0

    @contextlib.asynccontextmanager
    async def container_events(
        self, actions: Sequence[str]
    ) -> AsyncIterator[AsyncIterator[ContainerEvent]]:
        self.opened += 1
        if self.opened == 1:

            async def broken() -> AsyncIterator[ContainerEvent]:
                raise ValueError("a bug")
                yield  # pragma: no cover - makes this an async generator

            yield broken()
        else:
            async with self.driver.container_events(actions) as stream:
                yield stream


async def test_a_bug_in_the_stream_is_a_lost_stream_and_it_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    driver.add("app-abcdef12-0001")
    source = _Buggy(driver)
    poller = poller_on(driver, interval=0.05, events=source)
    async with poller.running():
        await wait_for(
            _true(lambda: source.opened >= 2 and len(_names(poller)) == 1),
            5,
            "the reconnect after the bug",
        )
    assert poller.health.errors[ErrorKind.EVENTS] == 1
    assert "failed unexpectedly" in caplog.text


async def test_re_inspected_ids_remembered_are_bounded_by_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poller_module, "TOUCHED_KEPT", 3)
    driver = FakeDriver()
    infos = [driver.add(f"app-abcdef12-{i:04x}") for i in range(1, 7)]
    poller = _following(driver, interval=NO_POLL)
    async with poller.running():
        await wait_for(_true(lambda: len(_names(poller)) == 6), 5, "the containers")
        for info in infos:
            driver.emit("update", info)
        await wait_for(_true(lambda: poller._resync_wanted), 5, "past the bound: a list wanted")
        await wait_for(_true(lambda: not poller._refreshing), 5, "the re-inspects to finish")
        await poller.poll_once()
        assert len(poller._touched) <= 3
        assert len(_names(poller)) == 6


async def test_a_fake_event_reader_that_falls_behind_has_its_stream_cut() -> None:
    driver = FakeDriver()
    info = driver.add("app-abcdef12-0001")
    async with driver.container_events(["update"]) as stream:
        for _ in range(testing.EVENT_BACKLOG + 1):
            driver.emit("update", info)
        assert driver.event_streams == 0
        with pytest.raises(EngineUnreachableError, match="too slow"):
            async for _ in stream:
                pass
