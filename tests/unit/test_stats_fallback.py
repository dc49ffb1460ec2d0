"""FallbackStatsSource asks the engine about containers the primary cannot see."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.errors import NotFoundError
from exporter.models import ContainerInfo, ContainerStats
from exporter.sources.base import DriverStatsSource, FallbackStatsSource, SourcedStats, StatsResult
from exporter.testing import FakeDriver


class Blind:
    """A primary that finds no container's pid, as a cgroup source in its own pid namespace."""

    name = "blind"

    async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
        return {c.id: NotFoundError(None, f"pid {c.pid} is gone") for c in containers}


async def test_a_pid_the_primary_cannot_see_is_asked_of_the_engine() -> None:
    fake = FakeDriver()
    c = fake.add("app-0123abcd-0001")
    fake.stats[c.id] = ContainerStats(time=1.0, memory_usage=4096)
    combo = FallbackStatsSource(Blind(), DriverStatsSource(fake))
    answered = (await combo.read_many([c]))[c.id]
    assert isinstance(answered, SourcedStats)
    assert answered.source == "fake"
    assert answered.stats.memory_usage == 4096


async def test_a_container_that_is_really_gone_stays_not_found() -> None:
    fake = FakeDriver()
    c = fake.add("app-0123abcd-0001")
    fake.fail("container_stats", NotFoundError(404, "No such container"))
    combo = FallbackStatsSource(Blind(), DriverStatsSource(fake))
    assert isinstance((await combo.read_many([c]))[c.id], NotFoundError)
    assert fake.calls["container_stats"] == 1


async def test_other_primary_errors_are_not_retried() -> None:
    class Broken:
        name = "broken"

        async def read_many(self, containers: Sequence[ContainerInfo]) -> dict[str, StatsResult]:
            return {c.id: RuntimeError("bug") for c in containers}

    fake = FakeDriver()
    c = fake.add("app-0123abcd-0001")
    combo = FallbackStatsSource(Broken(), DriverStatsSource(fake))
    assert isinstance((await combo.read_many([c]))[c.id], RuntimeError)
    assert fake.calls["container_stats"] == 0
