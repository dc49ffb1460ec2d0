"""The app on the real engine as the hardening tests drive it, with a vpc pool of their own."""

from __future__ import annotations

import contextlib
import ipaddress
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.vpc import read_routes
from exporter.wiring import wire
from tests.support.api import TOKEN, ClientFactory, authed_call
from tests.support.engine import IDLE_CMD, TEST_IMAGE, new_app_id

#: A pool of this module's own: no other test makes networks in it.
POOL = ipaddress.IPv4Network("10.64.0.0/16")


@dataclass
class EngineApi:
    """The app on the real engine, a client to it, and the containers a test made through it."""

    client: TestClient[web.Request, web.Application]
    driver: DockerDriver
    made: list[str]

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Send an authenticated request; return (status, decoded JSON or None)."""
        return await authed_call(self.client, method, path, **kwargs)

    async def create(self, **options: Any) -> tuple[int, Any]:
        """Create a managed idle container through the API, removed after the test."""
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
    """Return the ids of every network the engine has."""
    return {n["Id"] for n in sdk.api.networks()}


@contextlib.asynccontextmanager
async def make_api(
    aiohttp_client: ClientFactory, tmp_path: Path, **settings: Any
) -> AsyncIterator[EngineApi]:
    """Run the app on the real engine with ``settings``; remove what it made, sweep its networks."""
    settings.setdefault("api_vpc_subnet_pool", [str(POOL)])
    # Stats through the engine: its connections are what a hanging pull must not starve.
    settings.setdefault("stats_source", "docker")
    settings.setdefault("collect_processes", False)
    s = Settings(api_token=TOKEN, state_dir=tmp_path / "state", **settings)
    driver = DockerDriver(
        stop_grace=1,
        max_connections=settings.get("poll_concurrency", 64),
        max_pulls=s.api_max_concurrent_pulls,
        vpc_pool=s.api_vpc_subnet_pool,
        vpc_max_networks=s.api_vpc_max_networks,
    )
    wired = wire(s, driver=driver)
    api = EngineApi(await aiohttp_client(wired.app), driver, [])
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
