"""The StatsSource Protocol and the sources built only on the Driver.

Who relies on it: the poller hands a source every running container of a
poll and takes back, per container id, a sample or the error that stopped
it. A source that cannot read a container at all raises (or returns)
:class:`~exporter.errors.StatsUnavailableError`, and
:class:`FallbackStatsSource` then asks the next source for that container.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from exporter.concurrency import map_bounded
from exporter.drivers.base import Driver
from exporter.errors import NotFoundError, StatsUnavailableError
from exporter.models import ContainerInfo, ContainerStats
from exporter.snapshot import ProcessCounts


class SourcedStats(NamedTuple):
    """A stats sample, the name of the source that produced it, and counts read with it."""

    stats: ContainerStats
    source: str
    #: The container's process counts, when the source read them in the same
    #: pass as the stats (the cgroup source, from files it holds open).
    processes: ProcessCounts | None = None
    #: Whether the source tried: then a None ``processes`` means "not ours to
    #: count", and nobody should try again this poll.
    counted: bool = False


StatsResult = SourcedStats | BaseException


class StatsSource(Protocol):
    """Reads the stats of many running containers at once."""

    @property
    def name(self) -> str:
        """Return the source's name as it appears in metrics (``docker``, ``cgroup``)."""
        ...

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return, per container id, a sample or the exception that stopped it."""
        ...


class DriverStatsSource:
    """Stats through the Driver's ``container_stats``, many calls in flight at once.

    The engine samples its subscribers once per ~1 s tick and concurrent calls
    share that tick, so a semaphore that serialised them would cost a tick
    per container: the limit should cover all running containers.
    """

    def __init__(self, driver: Driver, concurrency: int = 256) -> None:
        self._driver = driver
        self._concurrency = concurrency

    @property
    def name(self) -> str:
        """Return the driver's name."""
        return self._driver.name()

    async def _one(self, container: ContainerInfo) -> StatsResult:
        try:
            return SourcedStats(await self._driver.container_stats(container.id), self.name)
        except Exception as e:  # noqa: BLE001 - returned per container, classified by the caller
            return e

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return one engine sample per container."""
        results = await map_bounded(self._one, containers, self._concurrency)
        return {c.id: r for c, r in zip(containers, results, strict=True)}


class FallbackStatsSource:
    """Ask ``primary`` first and ``fallback`` for each container ``primary`` cannot read.

    A container the primary reports as gone (:class:`NotFoundError`) is asked
    of the fallback too: the cgroup source cannot tell a pid that exited from
    one it cannot see (an exporter in its own pid namespace), and the engine
    knows which it is. An exited container costs one more call in that poll.
    """

    def __init__(self, primary: StatsSource, fallback: StatsSource) -> None:
        self._primary = primary
        self._fallback = fallback

    @property
    def name(self) -> str:
        """Return ``primary+fallback``."""
        return f"{self._primary.name}+{self._fallback.name}"

    @property
    def held_files(self) -> int:
        """Return the descriptors the primary holds open between polls (0 if it holds none)."""
        return int(getattr(self._primary, "held_files", 0))

    @property
    def held_files_budget(self) -> int:
        """Return the most descriptors the primary may hold (0 if it holds none)."""
        return int(getattr(self._primary, "held_files_budget", 0))

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        """Return the primary's samples, with the fallback's where the primary had none."""
        results = await self._primary.read_many(containers)
        missing = [
            c
            for c in containers
            if isinstance(results.get(c.id), StatsUnavailableError | NotFoundError)
        ]
        if missing:
            results.update(await self._fallback.read_many(missing))
        return results
