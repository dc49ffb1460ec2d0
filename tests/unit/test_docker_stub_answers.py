"""Odd but real engine answers, served by a stub on a unix socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import ConflictError, NotFoundError


async def _ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers={"Api-Version": "1.41"})


async def _empty_stats(request: web.Request) -> web.Response:
    # What dockerd 20.10 sends when the container is removed mid-collection.
    return web.Response(status=200, body=b"")


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[DockerDriver]:
    app = web.Application()
    app.router.add_get("/_ping", _ping)
    app.router.add_get("/v1.41/containers/{id}/stats", _empty_stats)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "stub.sock")
    await web.UnixSite(runner, sock).start()
    driver = DockerDriver(DockerEndpoint.parse(f"unix://{sock}"), timeout=5)
    try:
        yield driver
    finally:
        await driver.close()
        await runner.cleanup()


async def test_empty_stats_answer_means_the_container_went_away(stub: DockerDriver) -> None:
    with pytest.raises(NotFoundError, match="went away"):
        await stub.container_stats("app-abcdef12-0001")


async def test_a_zero_time_answer_is_no_sample(tmp_path: Path) -> None:
    async def zeros(request: web.Request) -> web.Response:
        # What dockerd answers for a created or exited container.
        return web.json_response(
            {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}}
        )

    app = web.Application()
    app.router.add_get("/_ping", _ping)
    app.router.add_get("/v1.41/containers/{id}/stats", zeros)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "zeros.sock")
    await web.UnixSite(runner, sock).start()
    driver = DockerDriver(DockerEndpoint.parse(f"unix://{sock}"), timeout=5)
    try:
        with pytest.raises(ConflictError, match="not running"):
            await driver.container_stats("app-abcdef12-0001")
    finally:
        await driver.close()
        await runner.cleanup()
