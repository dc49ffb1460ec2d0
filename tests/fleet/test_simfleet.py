"""The SIMULATED fleet (bench/simfleet.py) as the Docker driver sees it (issue 16 item 3)."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench.simengine import MEMORY_LIMIT
from bench.simfleet import ROOT, SimulatedFleet
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.models import ContainerState
from tests.support.waiting import wait_for


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


async def test_shards_serve_their_hosts_in_processes_of_their_own_behind_one_api(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.simfleet",
        "--hosts",
        "4",
        "--containers",
        "5",
        "--shards",
        "2",
        "--dir",
        str(tmp_path / "fleet"),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        said = (await proc.stdout.readline()).decode().split()
        assert said[0] == "ready"
        url = f"http://127.0.0.1:{said[1]}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/hosts") as r:
                hosts = await r.json()
            assert [h["host"] for h in hosts] == [1, 2, 3, 4]
            pids = {h["pid"] for h in hosts}
            assert len(pids) == 2
            assert proc.pid not in pids
            assert hosts[0]["pid"] != hosts[3]["pid"]
            names = [n for h in hosts for n in h["names"]]
            assert len(names) == len(set(names)) == 20
            async with http.post(url + "/sick", json={"name": "app-nowhere-0000"}) as r:
                assert r.status == 404
            for h in (hosts[0], hosts[3]):  # one host of each shard
                name = h["names"][2]
                async with http.post(url + "/sick", json={"name": name}) as r:
                    assert r.status == 200
                driver = DockerDriver(DockerEndpoint.parse(f"unix://{h['socket']}"))
                try:
                    stats = await driver.container_stats(name)
                    assert stats.memory_working_set >= 0.9 * MEMORY_LIMIT
                    await driver.container_stop(name)
                    await driver.container_start(name)
                    stats = await driver.container_stats(name)
                    assert stats.memory_working_set < 0.5 * MEMORY_LIMIT
                finally:
                    await driver.close()
            async with http.get(url + "/lifecycle") as r:
                log = await r.json()
        assert [(c["host"], c["op"], c["name"]) for c in log] == [
            (1, "stop", hosts[0]["names"][2]),
            (1, "start", hosts[0]["names"][2]),
            (4, "stop", hosts[3]["names"][2]),
            (4, "start", hosts[3]["names"][2]),
        ]
        assert [c["at"] for c in log] == sorted(c["at"] for c in log)
    finally:
        proc.kill()  # no goodbye: the shards see their stdin close
        await proc.wait()
    for socket in (hosts[0]["socket"], hosts[3]["socket"]):
        await wait_for(functools.partial(refused, socket), 30, f"{socket} no longer served")


async def refused(socket: str) -> bool:
    """Return True once nothing serves ``socket`` (its shard exited)."""
    try:
        _, writer = await asyncio.open_unix_connection(socket)
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    writer.close()
    await writer.wait_closed()
    return False
