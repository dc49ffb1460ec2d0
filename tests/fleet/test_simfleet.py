"""The SIMULATED fleet (bench/simfleet.py) as the Docker driver sees it (issue 16 item 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.simengine import MEMORY_LIMIT
from bench.simfleet import SimulatedFleet
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.models import ContainerState


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimulatedFleet]:
    f = SimulatedFleet(3, 20, tmp_path / "fleet")
    await f.start()
    try:
        yield f
    finally:
        await f.close()


def driver_for(fleet: SimulatedFleet, host: int) -> DockerDriver:
    return DockerDriver(DockerEndpoint.parse(f"unix://{fleet.socket(fleet.engines[host])}"))


async def test_each_host_serves_its_own_unique_names(fleet: SimulatedFleet) -> None:
    seen: list[str] = []
    for h in range(3):
        driver = driver_for(fleet, h)
        try:
            names = [c.name for c in await driver.container_list()]
        finally:
            await driver.close()
        assert len(names) == 20
        assert sorted(names) == sorted(fleet.engines[h].names())
        seen += names
    assert len(set(seen)) == 60


async def test_sick_until_next_start_and_every_lifecycle_call_logged(
    fleet: SimulatedFleet,
) -> None:
    engine = fleet.engines[1]
    name, other = engine.names()[3], engine.names()[4]
    driver = driver_for(fleet, 1)
    try:
        healthy = await driver.container_stats(name)
        assert healthy.memory_working_set < 0.5 * MEMORY_LIMIT
        fleet.make_sick(name)
        sick = await driver.container_stats(name)
        assert sick.memory_working_set >= 0.9 * MEMORY_LIMIT
        assert (await driver.container_stats(other)).memory_working_set < 0.5 * MEMORY_LIMIT
        before = await driver.container_inspect(name)
        await driver.container_stop(name)
        assert (await driver.container_inspect(name)).state is not ContainerState.RUNNING
        assert (await driver.container_stats(name)).memory_working_set >= 0.9 * MEMORY_LIMIT
        await driver.container_start(name)
        after = await driver.container_inspect(name)
        assert after.state is ContainerState.RUNNING
        assert after.started >= before.started
        assert after.pid != before.pid
        assert (await driver.container_stats(name)).memory_working_set < 0.5 * MEMORY_LIMIT
        await driver.container_start(name)  # already running: the engine's 304
    finally:
        await driver.close()
    log = fleet.lifecycle()
    assert [(c["host"], c["op"], c["name"], c["status"]) for c in log] == [
        (engine.host, "stop", name, 204),
        (engine.host, "start", name, 204),
        (engine.host, "start", name, 304),
    ]
    assert all(c["at"] > 0 for c in log)
