"""Issue 12's hardening on the real engine: vpc subnets, pulls, integers past the engine's."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.api import create_app
from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.metrics import build_registry
from exporter.models import ContainerCreateOptions
from exporter.vpc import VPC_LABEL, read_routes
from tests.support.api import ClientFactory
from tests.support.engine import IDLE_CMD, TEST_IMAGE, new_app_id, poller_on
from tests.support.faults import record, scaled_int
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

TOKEN = "hardening-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A pool of this module's own: no other test makes networks in it.
POOL = ipaddress.IPv4Network("10.64.0.0/16")


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    driver: DockerDriver
    made: list[str]

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        resp = await self.client.request(method, path, headers=AUTH, **kwargs)
        body = await resp.read()
        return resp.status, (json.loads(body) if body else None)

    async def create(self, **options: Any) -> tuple[int, Any]:
        name = f"app-{new_app_id()}-0001"
        self.made.append(name)
        body = {"name": name, "image": TEST_IMAGE, "cmd": IDLE_CMD, **options}
        return await self.call("POST", "/api/v1/containers", json=body)


def host_route_networks() -> list[ipaddress.IPv4Network]:
    """Return the host's own route destinations (the default route left out)."""
    return [
        r.destination
        for r in read_routes(Path("/proc/net/route"))
        if r.destination.prefixlen and r.destination.prefixlen >= 8
    ]


def own_subnet(sdk: docker.DockerClient) -> str:
    """Return a /24 of POOL that no engine network uses."""
    taken = {
        cfg.get("Subnet")
        for net in sdk.api.networks()
        for cfg in ((net.get("IPAM") or {}).get("Config") or [])
    }
    free = [str(s) for s in POOL.subnets(new_prefix=24) if str(s) not in taken]
    return random.choice(free)


def engine_networks(sdk: docker.DockerClient) -> set[str]:
    return {n["Id"] for n in sdk.api.networks()}


@pytest.fixture
def sdk(engine: None) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def make_api(
    aiohttp_client: ClientFactory, tmp_path: Path, **settings: Any
) -> AsyncIterator[Api]:
    settings.setdefault("api_vpc_subnet_pool", [str(POOL)])
    s = Settings(api_token=TOKEN, state_dir=tmp_path / "state", **settings)
    driver = DockerDriver(
        stop_grace=1,
        max_connections=settings.get("poll_concurrency", 64),
        max_pulls=s.api_max_concurrent_pulls,
        vpc_pool=s.api_vpc_subnet_pool,
        vpc_max_networks=s.api_vpc_max_networks,
    )
    poller = poller_on(driver, s.naming(), interval=s.poll_interval)
    app = create_app(
        settings=s,
        driver=driver,
        poller=poller,
        registry=build_registry(poller),
        poll_in_background=True,
    )
    api = Api(await aiohttp_client(app), driver, [])
    try:
        yield api
    finally:
        cleaner = DockerDriver(vpc_pool=s.api_vpc_subnet_pool)
        try:
            for name in api.made:
                await cleaner.container_remove(name)
            await cleaner.sweep_vpc_networks()
        finally:
            await cleaner.close()


@pytest.fixture
async def api(aiohttp_client: ClientFactory, tmp_path: Path, engine: None) -> AsyncIterator[Api]:
    async with make_api(aiohttp_client, tmp_path) as a:
        yield a


# -- item 6: vpc subnets ---------------------------------------------------------


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
    api: Api, sdk: docker.DockerClient
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


# -- item 14: integers past the engine's ----------------------------------------


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("memory_limit", {"memory_limit": 2**63}),
        ("cpu_limit", {"cpu_limit": 2**63 // 1_000_000 + 1}),
        ("memory_limit", {"memory_limit": 2**70}),
    ],
)
async def test_integers_past_the_engine_are_422_naming_the_field(
    api: Api, field: str, options: dict[str, Any]
) -> None:
    status, body = await api.create(**options)
    assert status == 422, body
    assert body["detail"][0]["field"] == field


# -- item 10: pulls --------------------------------------------------------------


class SilentPort:
    """A loopback port that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.held: list[asyncio.StreamWriter] = []
        self.accepted = 0

    async def start(self) -> int:
        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.held.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        sock: socket.socket = self.server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        for w in self.held:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_hanging_pulls_do_not_starve_readiness_or_reads(
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    silent = SilentPort()
    port = await silent.start()
    pulls = 6
    try:
        # A small poll pool, as --poll.concurrency 4 gives: six pulls sharing it
        # would hold every connection polls and reads need.
        async with make_api(
            aiohttp_client,
            tmp_path,
            poll_concurrency=4,
            poll_interval=0.5,
            api_max_concurrent_pulls=2,
            api_pull_timeout=120,
        ) as api:

            async def read() -> float:
                started = time.monotonic()
                status, body = await api.call("GET", "/api/v1/containers")
                assert status == 200, body
                return time.monotonic() - started

            control = [await read() for _ in range(3)]
            image = f"127.0.0.1:{port}/never/answers:latest"
            tasks = [
                asyncio.create_task(api.call("POST", "/api/v1/images/pull", json={"image": image}))
                for _ in range(pulls)
            ]
            # Those beyond the limit are refused at once.
            await wait_for(
                lambda: _async_true(sum(t.done() for t in tasks) >= pulls - 2),
                30,
                "the pulls beyond the limit to be refused",
            )
            refused = [t.result() for t in tasks if t.done()]
            assert [s for s, _ in refused] == [429] * (pulls - 2), refused
            hanging = [t for t in tasks if not t.done()]
            assert len(hanging) == 2
            await wait_for(lambda: _async_true(silent.accepted >= 1), 30, "the engine to dial")

            pulls_started = time.time()

            async def polled_since() -> bool:
                status, body = await api.call("GET", "/readyz")
                return bool(status == 200 and body["engine_up"]) and (
                    time.time() - body["last_poll_age_seconds"] > pulls_started
                )

            await wait_for(polled_since, 30, "a successful poll while the pulls hang")
            during = [await read() for _ in range(3)]
            # The reads were answered while both pulls still hung.
            assert not any(t.done() for t in hanging)
            for t in hanging:
                t.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)
        record(
            request,
            "pulls from a port that never answers",
            pulls_started=pulls,
            refused_429=pulls - 2,
            read_seconds_control=max(control),
            read_seconds_during_pulls=max(during),
            readyz_engine_up=True,
        )
    finally:
        await silent.close()


async def _async_true(value: bool) -> bool:
    return value


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
