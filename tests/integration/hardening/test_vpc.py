"""vpc subnets on the real engine: refused outside the pool, bounded, swept, never lost to a race.

Issue 12 item 6.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from pathlib import Path

import docker
import pytest

from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerCreateOptions
from exporter.vpc import VPC_LABEL
from tests.support.api import ClientFactory
from tests.support.engine import IDLE_CMD, TEST_IMAGE, new_app_id
from tests.support.faults import record, scaled_int
from tests.support.hardening import (
    POOL,
    EngineApi,
    engine_networks,
    host_route_networks,
    make_api,
    own_subnet,
)

pytestmark = pytest.mark.engine


UNSAFE = ["0.0.0.0/1", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "10.200.0.0/24"]


async def test_unsafe_or_unpooled_subnets_are_refused_and_make_no_network(
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    sdk: docker.DockerClient,
    request: pytest.FixtureRequest,
) -> None:
    # The host's own routes are put in the pool on purpose: the per-request
    # check against the routes must still refuse them.
    routes = [n for n in host_route_networks() if not n.is_loopback and not n.is_link_local]
    assert routes, "the host has no route of its own to try"
    pool = [str(POOL), *(str(n) for n in routes)]
    async with make_api(aiohttp_client, tmp_path, api_vpc_subnet_pool=pool) as api:
        before = engine_networks(sdk)
        engine_subnets = {
            cfg.get("Subnet")
            for net in sdk.api.networks()
            for cfg in ((net.get("IPAM") or {}).get("Config") or [])
        }
        # A route that is an engine network's own subnet names that network,
        # which is used as it is; a subnet inside it (a new, overlapping
        # bridge) and the host's other routes (its LAN) are refused.
        tried = [
            *UNSAFE,
            *(str(n) for n in routes if str(n) not in engine_subnets),
            *(str(next(n.subnets(new_prefix=max(n.prefixlen, 24) + 1))) for n in routes),
        ]
        assert len(tried) > len(UNSAFE) + len(routes) - 1
        for subnet in tried:
            status, body = await api.create(vpc_subnet=subnet)
            assert 400 <= status < 500, (subnet, status, body)
            assert body["error"].startswith("invalid vpc_subnet:"), body
            assert "--api.vpc-subnet-pool" in body["error"], body
            assert body["detail"][0]["field"] == "vpc_subnet"
        assert engine_networks(sdk) == before
        # The low-level list: the high-level one inspects each container, and
        # other tests' containers come and go meanwhile.
        names = {n.lstrip("/") for c in sdk.api.containers(all=True) for n in c["Names"]}
        assert not names & set(api.made)
    record(
        request,
        "vpc_subnet unsafe or outside the pool",
        tried=tried,
        networks_made=0,
        containers_made=0,
    )


async def test_without_a_pool_vpc_networks_are_refused_naming_the_setting(
    aiohttp_client: ClientFactory, tmp_path: Path, sdk: docker.DockerClient
) -> None:
    async with make_api(aiohttp_client, tmp_path, api_vpc_subnet_pool=[]) as api:
        before = engine_networks(sdk)
        status, body = await api.create(vpc_subnet=own_subnet(sdk))
        assert status == 403, body
        assert body["detail"][0]["field"] == "vpc_subnet"
        assert "--api.vpc-subnet-pool" in body["error"]
        assert engine_networks(sdk) == before


async def test_a_pool_subnet_works_and_its_network_goes_with_its_last_container(
    api: EngineApi, sdk: docker.DockerClient
) -> None:
    subnet = own_subnet(sdk)
    address = str(ipaddress.IPv4Network(subnet).network_address + 10)
    status, first = await api.create(vpc_subnet=subnet, vpc_ipv4=address)
    assert status == 201, first
    settings = sdk.api.inspect_container(first["name"])["NetworkSettings"]["Networks"]
    assert [n["IPAMConfig"]["IPv4Address"] for n in settings.values()] == [address]
    status, second = await api.create(vpc_subnet=subnet)
    assert status == 201, second
    nets = sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnet}"})
    assert len(nets) == 1

    status, _ = await api.call("DELETE", f"/api/v1/containers/{first['name']}")
    assert status == 204
    # One container still names the network: it stays.
    assert sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnet}"})
    status, _ = await api.call("DELETE", f"/api/v1/containers/{second['name']}")
    assert status == 204
    assert not sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnet}"})


async def test_vpc_networks_are_bounded_and_unused_ones_swept_to_make_room(
    aiohttp_client: ClientFactory, tmp_path: Path, sdk: docker.DockerClient
) -> None:
    async with make_api(aiohttp_client, tmp_path, api_vpc_max_networks=2) as api:
        subnets = random.sample([str(s) for s in POOL.subnets(new_prefix=24)], 4)
        for subnet in subnets[:2]:
            status, body = await api.create(vpc_subnet=subnet)
            assert status == 201, body
        status, body = await api.create(vpc_subnet=subnets[2])
        assert status == 409, body
        assert body["detail"][0]["field"] == "vpc_subnet"
        assert not sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnets[2]}"})

        # Its container removed behind the exporter's back: the network lingers
        # until room is needed, then the sweep removes it.
        sdk.containers.get(api.made[0]).remove(force=True)
        assert sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnets[0]}"})
        status, body = await api.create(vpc_subnet=subnets[3])
        assert status == 201, body
        assert not sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnets[0]}"})
        own = [
            n
            for n in sdk.networks.list(filters={"label": VPC_LABEL})
            if ipaddress.IPv4Network(n.attrs["Labels"][VPC_LABEL]).subnet_of(POOL)
        ]
        assert len(own) == 2


async def test_creates_and_removes_racing_on_one_subnet_never_lose_the_network(
    sdk: docker.DockerClient, request: pytest.FixtureRequest, engine: None
) -> None:
    """Removes sweep the network while creates on the same subnet are under way: none may fail."""
    driver = DockerDriver(stop_grace=1, vpc_pool=[str(POOL)])
    rounds = scaled_int(6, 30)
    made: list[str] = []
    created = 0
    try:
        for _ in range(rounds):
            subnet = own_subnet(sdk)

            async def create(subnet: str = subnet) -> str:
                name = f"app-{new_app_id()}-0001"
                made.append(name)
                opts = ContainerCreateOptions(
                    name=name, image=TEST_IMAGE, cmd=IDLE_CMD, vpc_subnet=subnet
                )
                await driver.container_create(opts)
                return name

            first = await create()
            # The last user of the network goes while three more are created on it.
            results = await asyncio.gather(
                driver.container_remove(first), create(), create(), create()
            )
            names = [r for r in results if isinstance(r, str)]
            created += 1 + len(names)
            for name in names:
                await driver.container_start(name)
                assert sdk.containers.get(name).status == "running"
            await asyncio.gather(*(driver.container_remove(n) for n in names))
            assert not sdk.networks.list(filters={"label": f"{VPC_LABEL}={subnet}"})
    finally:
        for name in made:
            await driver.container_remove(name)
        await driver.close()
    record(
        request,
        "vpc creates racing the sweep of their network",
        rounds=rounds,
        containers_created=created,
        failed_creates=0,
        networks_left=0,
    )
