"""The Driver Protocol: what the rest of the exporter may ask of a container runtime.

Who relies on it: the poller (``container_list``, ``container_inspect``,
``container_stats``), the lifecycle API (every call), replica deploys (``container_rename`` swaps
a new revision in) and remediation
(``container_inspect``, ``container_stop``, ``container_start``). None of them
imports a concrete driver; only the entry point picks one.

Every method raises :class:`~exporter.errors.DriverError` or a subclass:
:class:`~exporter.errors.NotFoundError` for an unknown object,
:class:`~exporter.errors.ConflictError` for a state conflict,
:class:`~exporter.errors.EngineUnreachableError` when the engine cannot be
reached and :class:`~exporter.errors.DriverTimeoutError` past a deadline.
Two refusals come before the engine is asked: ``container_create`` raises
:class:`~exporter.errors.PolicyRefusedError` for a ``vpc_subnet`` the host's
policy refuses, ``image_pull`` :class:`~exporter.errors.BusyError` when its
concurrent pulls are all taken.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from exporter.models import (
    ContainerCreateOptions,
    ContainerInfo,
    ContainerStats,
    DriverInfo,
    ImageInfo,
)


class Driver(Protocol):
    """An async container runtime driver (the Go ``Driver`` interface plus stats)."""

    def name(self) -> str:
        """Return the driver's name, e.g. ``docker``."""
        ...

    async def info(self) -> DriverInfo:
        """Return what the engine is and how much it holds."""
        ...

    async def ping(self) -> None:
        """Return when the engine answers; raise when it does not."""
        ...

    async def container_list(self) -> list[ContainerInfo]:
        """Return every container the engine has, running or not (no pid or limits)."""
        ...

    async def container_inspect(self, name_or_id: str) -> ContainerInfo:
        """Return one container in full: pid, start time, limits, binds."""
        ...

    async def container_create(self, opts: ContainerCreateOptions) -> ContainerInfo:
        """Create (not start) a container and return it inspected."""
        ...

    async def container_start(self, name_or_id: str) -> None:
        """Start a container; starting a running one succeeds."""
        ...

    async def container_stop(self, name_or_id: str) -> None:
        """Stop a container with a grace period; a missing or stopped one succeeds."""
        ...

    async def container_remove(self, name_or_id: str) -> None:
        """Remove a container, forcing it if running; a missing one succeeds."""
        ...

    async def container_rename(self, name_or_id: str, new_name: str) -> None:
        """Rename a container (running or not); NotFoundError, ConflictError if taken."""
        ...

    async def image_list(self) -> list[ImageInfo]:
        """Return the images the engine holds."""
        ...

    async def image_pull(self, image: str) -> None:
        """Pull ``image`` (default tag ``latest``) and return when it is present."""
        ...

    async def container_stats(self, name_or_id: str) -> ContainerStats:
        """Return one stats sample of a running container; ConflictError if it is not running."""
        ...

    async def close(self) -> None:
        """Release connections; the driver is unusable afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One container event from the engine's event stream (``GET /events``)."""

    action: str  # "start", "die", "destroy", "health_status" (its ": healthy" cut off), ...
    id: str
    #: The actor's attributes: ``name``, ``exitCode`` on die, the container's labels.
    attributes: Mapping[str, str] = field(default_factory=dict)
    time_nano: int = 0


@runtime_checkable
class ContainerEvents(Protocol):
    """A driver that can stream container events: the poller's event discovery relies on it."""

    def container_events(
        self, actions: Sequence[str]
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[ContainerEvent]]:
        """Open the stream of the events named by ``actions``; the iterator ends never, it raises.

        Entering raises EngineUnreachableError or DriverTimeoutError when the
        stream cannot be opened; iterating raises EngineUnreachableError when
        it breaks (the engine stopped, the socket went) and DriverError for
        an answer that is not the engine's events.
        """
        ...
