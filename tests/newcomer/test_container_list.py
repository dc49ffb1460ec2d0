"""GET /api/v1/containers on the real engine says what it knows, and nothing that means else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.wiring import wire
from tests.support.engine import ContainerFactory, new_app_id

pytestmark = pytest.mark.engine

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
TOKEN = "container-list-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def own_driver(engine: None) -> DockerDriver:
    """A driver the app under test owns (the app closes it on shutdown)."""
    return DockerDriver(stop_grace=3)


async def test_the_list_fills_from_the_poll_or_says_null_and_created_is_its_own_state(
    aiohttp_client: ClientFactory,
    own_driver: DockerDriver,
    make_container: ContainerFactory,
    tmp_path: Path,
) -> None:
    app_id = new_app_id()
    limited = await make_container(
        name=f"app-{app_id}-0001", cpu_limit=500, memory_limit=64 * 1024 * 1024
    )
    created = await make_container(name=f"app-{app_id}-0002", start=False)
    settings = Settings(
        api_token=TOKEN,
        state_dir=tmp_path / "state",
        pod_base_dir=tmp_path / "pods",
        # Stats from the engine, no process counts: what the list answer is compared with.
        stats_source="docker",
        collect_processes=False,
    )
    wired = wire(settings, driver=own_driver, poll_in_background=False)
    poller = wired.poller
    client = await aiohttp_client(wired.app)

    async def listed() -> dict[str, dict[str, Any]]:
        resp = await client.get("/api/v1/containers", headers=AUTH)
        assert resp.status == 200
        return {c["name"]: c for c in await resp.json()}

    # Before any poll the list answer is all there is: what it lacks is null, not 0.
    before = (await listed())[limited.name]
    assert before["state"] == "running"
    for field in ("pid", "started", "cpu_limit", "memory_limit"):
        assert before[field] is None, (field, before)

    await poller.poll_once()
    after = await listed()
    running = after[limited.name]
    assert running["pid"] == limited.pid > 0
    assert running["started"] == limited.started > 0
    assert running["cpu_limit"] == 500
    assert running["memory_limit"] == 64 * 1024 * 1024
    never_started = after[created.name]
    assert never_started["state"] == "created"
    assert never_started["pid"] == 0
    assert never_started["started"] == 0
    # One container in full still has everything, and agrees.
    resp = await client.get(f"/api/v1/containers/{created.name}", headers=AUTH)
    assert (await resp.json())["state"] == "created"

    # The document says so: null is allowed where the list answer may not know.
    resp = await client.get("/api/v1/openapi.json", headers=AUTH)
    schemas = (await resp.json())["components"]["schemas"]
    entry = next(s for name, s in schemas.items() if name.startswith("ContainerListEntry"))
    for field in ("pid", "started", "cpu_limit", "memory_limit"):
        types = {t.get("type") for t in entry["properties"][field].get("anyOf", [])}
        assert types == {"integer", "null"}, (field, entry["properties"][field])
        assert "null" in entry["properties"][field]["description"]
    assert "created" in schemas["ContainerState"]["enum"]
    info = schemas["ContainerInfo"]["description"]
    assert "slotted" not in info, info
    assert "collector" not in info, info
