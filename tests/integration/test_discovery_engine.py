"""Discovery from the real engine's event stream: changes seen without a list, faults healed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.api import create_app
from exporter.config import Settings
from exporter.confinement import MountPolicy
from exporter.drivers.base import ContainerEvent
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.metrics import build_registry
from exporter.models import ContainerInfo, ContainerState
from exporter.naming import container_name
from exporter.poller import Poller
from exporter.snapshot import ErrorKind
from tests.support.engine import ContainerFactory, new_app_id, poller_on
from tests.support.socket_proxy import UnixSocketProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
#: No timed poll while a test waits for an event's effect (and no timed resync).
NO_POLL = 3600.0


class CountingDriver(DockerDriver):
    """The Docker driver, counting its lists."""

    lists = 0

    async def container_list(self) -> list[ContainerInfo]:
        """Count, then list."""
        self.lists += 1
        return await super().container_list()


class Deaf:
    """The driver's event stream with every event of some containers dropped (a missed event)."""

    def __init__(self, driver: DockerDriver, names: set[str]) -> None:
        self._driver = driver
        self.names = names

    @contextlib.asynccontextmanager
    async def container_events(
        self, actions: Sequence[str]
    ) -> AsyncIterator[AsyncIterator[ContainerEvent]]:
        """Open the driver's stream and drop the events of ``names``."""
        async with self._driver.container_events(actions) as stream:

            async def heard() -> AsyncIterator[ContainerEvent]:
                async for event in stream:
                    if event.attributes.get("name") not in self.names:
                        yield event

            yield heard()


def _predicate(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate


def _mine(poller: Poller, app: str) -> dict[str, ContainerInfo]:
    return {s.info.name: s.info for s in poller.snapshot.containers if s.app == app}


@pytest.fixture
async def counting(engine: None) -> AsyncIterator[CountingDriver]:
    d = CountingDriver(stop_grace=1)
    try:
        yield d
    finally:
        await d.close()


async def test_create_start_die_rename_destroy_are_seen_without_a_list(
    counting: CountingDriver, make_container: ContainerFactory
) -> None:
    app = new_app_id()
    first = container_name(app, 1)
    poller = poller_on(counting, interval=0.2, events=counting, resync_interval=NO_POLL)
    async with poller.running():
        await wait_for(_predicate(lambda: poller.snapshot.engine_up), 10, "the first poll")
        assert counting.lists == 1
        made = await make_container(name=first)
        await wait_for(
            _predicate(
                lambda: (
                    (info := _mine(poller, app).get(first)) is not None
                    and info.state is ContainerState.RUNNING
                    and info.pid == made.pid
                )
            ),
            10,
            "the started container",
        )
        await counting.container_stop(first)
        await wait_for(
            _predicate(lambda: _mine(poller, app)[first].state is ContainerState.STOPPED),
            10,
            "the die",
        )
        renamed = container_name(app, 2)
        await counting.container_rename(first, renamed)
        await wait_for(_predicate(lambda: set(_mine(poller, app)) == {renamed}), 10, "the new name")
        await counting.container_remove(renamed)
        await wait_for(_predicate(lambda: not _mine(poller, app)), 10, "the destroy")
        assert counting.lists == 1, "an event was seen through a list"


async def test_a_removed_container_leaves_metrics_when_its_destroy_arrives(
    driver: DockerDriver, make_container: ContainerFactory, aiohttp_client: ClientFactory
) -> None:
    made = await make_container()
    poller = poller_on(driver, interval=NO_POLL, events=driver, resync_interval=NO_POLL)
    app = create_app(
        settings=Settings(poll_interval=NO_POLL, poll_timeout=5),
        driver=driver,
        poller=poller,
        registry=build_registry(poller),
        api_token=None,
        mount_policy=MountPolicy([]),
    )
    client = await aiohttp_client(app)

    async def shown() -> bool:
        return f'name="{made.name}"' in await (await client.get("/metrics")).text()

    await wait_for(shown, 10, "the container on /metrics")
    polls = poller.health.polls
    await driver.container_remove(made.id)

    async def gone() -> bool:
        return not await shown()

    await wait_for(gone, 10, "the container to leave /metrics")
    # No poll ran: the destroy event alone took it off.
    assert poller.health.polls == polls


async def test_a_broken_stream_is_up_0_then_resumes_and_loses_no_container(
    make_container: ContainerFactory, tmp_path: Path
) -> None:
    target = DockerEndpoint.from_env().socket_path
    assert target is not None
    proxy = UnixSocketProxy(str(tmp_path / "engine.sock"), target)
    await proxy.start()
    app = new_app_id()
    before = await make_container(name=container_name(app, 1))
    driver = DockerDriver(DockerEndpoint.parse(f"unix://{proxy.path}"), timeout=3)
    poller = poller_on(driver, interval=0.2, events=driver, resync_interval=NO_POLL)
    try:
        async with poller.running():
            await wait_for(
                _predicate(lambda: set(_mine(poller, app)) == {before.name}), 10, "the container"
            )
            await proxy.stop()
            await wait_for(_predicate(lambda: not poller.snapshot.engine_up), 10, "up to be 0")
            assert poller.health.errors[ErrorKind.EVENTS] == 1
            # Made while the stream is cut: only the resync can find it.
            during = await make_container(name=container_name(app, 2))
            await proxy.start()
            await wait_for(
                _predicate(
                    lambda: (
                        poller.snapshot.engine_up
                        and set(_mine(poller, app)) == {before.name, during.name}
                    )
                ),
                15,
                "both containers after the reconnect",
            )
            # And the stream is followed again: a destroy now is seen at once.
            await driver.container_remove(during.id)
            await wait_for(
                _predicate(lambda: set(_mine(poller, app)) == {before.name}), 10, "the destroy"
            )
    finally:
        await proxy.stop()
        await driver.close()


async def test_the_resync_heals_a_missed_event(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    app = new_app_id()
    missed = container_name(app, 1)
    deaf = Deaf(driver, {missed})
    poller = poller_on(driver, interval=0.2, events=deaf, resync_interval=1.0)
    async with poller.running():
        await wait_for(_predicate(lambda: poller.snapshot.engine_up), 10, "the first poll")
        made = await make_container(name=missed)
        await wait_for(
            _predicate(lambda: missed in _mine(poller, app)), 10, "the resync to find it"
        )
        await driver.container_remove(made.id)
        await wait_for(
            _predicate(lambda: not _mine(poller, app)),
            10,
            "it to be dropped (the stats read or the resync)",
        )
