"""Test doubles for users' own tests and ours: an in-memory Driver.

:class:`FakeDriver` keeps containers and images in dicts and honours the
Driver Protocol's contract (idempotent stop/remove, NotFoundError,
ConflictError on a taken name). Failures and delays can be injected per
method to exercise the poller's and the API's error paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import TypeAdapter

from exporter.drivers.base import ContainerEvent
from exporter.errors import ConflictError, EngineUnreachableError, ExporterError, NotFoundError
from exporter.models import (
    ContainerCreateOptions,
    ContainerInfo,
    ContainerState,
    ContainerStats,
    DriverInfo,
    ImageInfo,
)

StatsFactory = Callable[[ContainerInfo], ContainerStats]
#: Events a subscriber may have pending before its stream breaks (a slow reader).
EVENT_BACKLOG = 1024


_CONTAINER_INFO = TypeAdapter(ContainerInfo)


def _default_stats(info: ContainerInfo) -> ContainerStats:
    return ContainerStats(time=time.time())


class FakeDriver:
    """An in-memory :class:`~exporter.drivers.base.Driver`."""

    def __init__(self, images: tuple[str, ...] = ("local/busybox:latest",)) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.images: dict[str, ImageInfo] = {
            name: ImageInfo(name=name, id=_digest(name), repo_tags=[name]) for name in images
        }
        self.stats: dict[str, ContainerStats] = {}
        self.stats_factory: StatsFactory = _default_stats
        self.failures: dict[str, ExporterError] = {}
        self.delays: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self.closed = False
        self._pids = itertools.count(1000)
        # One queue per open event stream; an exception put in one breaks it.
        self._subscribers: list[asyncio.Queue[ContainerEvent | BaseException]] = []

    # -- helpers for tests --------------------------------------------

    def add(
        self, name: str, state: ContainerState = ContainerState.RUNNING, **fields: object
    ) -> ContainerInfo:
        """Put a container straight into the fake engine and return it."""
        now = int(time.time())
        info = _CONTAINER_INFO.validate_python(
            {
                "id": _digest(name + str(now) + str(len(self.containers))),
                "name": name,
                "image": "local/busybox:latest",
                "state": state,
                "status": _status(state, now),
                "pid": next(self._pids) if state is ContainerState.RUNNING else 0,
                "created": now,
                "started": now if state is ContainerState.RUNNING else 0,
                **fields,
            }
        )
        self.containers[info.id] = info
        return info

    def fail(self, method: str, error: ExporterError | None = None) -> None:
        """Make every call of ``method`` raise ``error`` (default: engine unreachable)."""
        self.failures[method] = error or EngineUnreachableError("fake engine is down")

    def heal(self, method: str | None = None) -> None:
        """Stop failing ``method``, or every method."""
        if method is None:
            self.failures.clear()
        else:
            self.failures.pop(method, None)

    def find(self, name_or_id: str) -> ContainerInfo:
        """Return a container by name, id or id prefix; NotFoundError otherwise."""
        for c in self.containers.values():
            if name_or_id in (c.name, c.id) or (
                len(name_or_id) >= 12 and c.id.startswith(name_or_id)
            ):
                return c
        raise NotFoundError(404, f"No such container: {name_or_id}")

    @property
    def event_streams(self) -> int:
        """Return how many event streams are open."""
        return len(self._subscribers)

    def emit(self, action: str, info: ContainerInfo) -> None:
        """Send ``action`` about ``info`` to every open event stream."""
        event = ContainerEvent(action, info.id, {"name": info.name})
        for queue in list(self._subscribers):
            # The last slot is kept for the error that cuts the stream.
            if queue.qsize() >= EVENT_BACKLOG:
                self._break(queue, EngineUnreachableError("fake engine: event reader too slow"))
            else:
                queue.put_nowait(event)

    def break_events(self, error: BaseException | None = None) -> None:
        """Break every open event stream (as the engine going away does)."""
        for queue in list(self._subscribers):
            self._break(queue, error or EngineUnreachableError("fake engine: stream broken"))

    def _break(
        self, queue: asyncio.Queue[ContainerEvent | BaseException], e: BaseException
    ) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(e)

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if method in self.delays:
            await asyncio.sleep(self.delays[method])
        if method in self.failures:
            raise self.failures[method]

    def _replace(self, info: ContainerInfo, **changes: Any) -> ContainerInfo:
        new = dataclasses.replace(info, **changes)
        self.containers[info.id] = new
        return new

    # -- the Driver Protocol ------------------------------------------

    def name(self) -> str:
        """Return ``fake``."""
        return "fake"

    async def info(self) -> DriverInfo:
        """Return fixed engine facts and the current counts."""
        await self._enter("info")
        return DriverInfo(
            name="fake",
            version="0",
            api_version="1.41",
            os="linux",
            arch="amd64",
            container_num=len(self.containers),
            image_num=len(self.images),
        )

    async def ping(self) -> None:
        """Return unless ``ping`` was made to fail."""
        await self._enter("ping")

    async def container_list(self) -> list[ContainerInfo]:
        """Return every container."""
        await self._enter("container_list")
        return list(self.containers.values())

    async def container_inspect(self, name_or_id: str) -> ContainerInfo:
        """Return one container."""
        await self._enter("container_inspect")
        return dataclasses.replace(self.find(name_or_id), last_inspect_time=int(time.time()))

    async def container_create(self, opts: ContainerCreateOptions) -> ContainerInfo:
        """Create a container in state ``starting``; ConflictError when the name is taken."""
        await self._enter("container_create")
        if any(c.name == opts.name for c in self.containers.values()):
            raise ConflictError(
                409, f'Conflict. The container name "/{opts.name}" is already in use'
            )
        if opts.image not in self.images:
            raise NotFoundError(404, f"No such image: {opts.image}")
        created = self.add(
            opts.name,
            ContainerState.CREATED,
            image=opts.image,
            labels=opts.labels,
            cpu_limit=opts.cpu_limit,
            memory_limit=opts.memory_limit,
            binds=[
                f"{m.host_path}:{m.container_path}" + (":ro" if m.read_only else "")
                for m in opts.mounts
            ],
            mount_sources=tuple(m.host_path for m in opts.mounts),
            ports={p.container_port: p for p in opts.ports},
        )
        self.emit("create", created)
        return created

    async def container_start(self, name_or_id: str) -> None:
        """Mark a container running with a new pid and start time."""
        await self._enter("container_start")
        info = self.find(name_or_id)
        if info.state is not ContainerState.RUNNING:
            started = max(int(time.time()), info.started + 1)
            started_info = self._replace(
                info,
                state=ContainerState.RUNNING,
                status=_status(ContainerState.RUNNING, started),
                pid=next(self._pids),
                started=started,
            )
            self.emit("start", started_info)

    async def container_stop(self, name_or_id: str) -> None:
        """Mark a container stopped; a missing one is success."""
        await self._enter("container_stop")
        try:
            info = self.find(name_or_id)
        except NotFoundError:
            return
        stopped = self._replace(
            info, state=ContainerState.STOPPED, status=_status(ContainerState.STOPPED, 0), pid=0
        )
        if info.state is ContainerState.RUNNING:
            self.emit("die", stopped)

    async def container_remove(self, name_or_id: str) -> None:
        """Remove a container; a missing one is success."""
        await self._enter("container_remove")
        try:
            info = self.find(name_or_id)
        except NotFoundError:
            return
        del self.containers[info.id]
        self.stats.pop(info.id, None)
        self.emit("destroy", info)

    async def container_rename(self, name_or_id: str, new_name: str) -> None:
        """Rename a container; ConflictError when ``new_name`` is taken."""
        await self._enter("container_rename")
        info = self.find(name_or_id)
        if any(c.name == new_name for c in self.containers.values()):
            raise ConflictError(
                409, f'Conflict. The container name "/{new_name}" is already in use'
            )
        self.emit("rename", self._replace(info, name=new_name))

    async def image_list(self) -> list[ImageInfo]:
        """Return the images."""
        await self._enter("image_list")
        return list(self.images.values())

    async def image_pull(self, image: str) -> None:
        """Add ``image`` to the images."""
        await self._enter("image_pull")
        self.images[image] = ImageInfo(name=image, id=_digest(image), repo_tags=[image])

    async def container_stats(self, name_or_id: str) -> ContainerStats:
        """Return the stats set for the container, else the stats factory's; 409 if not running."""
        await self._enter("container_stats")
        info = self.find(name_or_id)
        if info.state is not ContainerState.RUNNING:
            raise ConflictError(409, f"{name_or_id}: not running, so no stats sample")
        return self.stats.get(info.id) or self.stats_factory(info)

    @contextlib.asynccontextmanager
    async def container_events(
        self, actions: Sequence[str]
    ) -> AsyncIterator[AsyncIterator[ContainerEvent]]:
        """Open a stream of the events of ``actions``; it raises when broken."""
        await self._enter("container_events")
        queue: asyncio.Queue[ContainerEvent | BaseException] = asyncio.Queue(EVENT_BACKLOG + 1)
        self._subscribers.append(queue)
        wanted = frozenset(actions)

        async def events() -> AsyncIterator[ContainerEvent]:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.action in wanted:
                    yield item

        try:
            yield events()
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)

    async def close(self) -> None:
        """Mark the driver closed."""
        self.closed = True


def _status(state: ContainerState, started: int) -> str:
    # Like the engine's status text, it changes whenever the container restarts.
    return f"Up since {started}" if state is ContainerState.RUNNING else state.value


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
