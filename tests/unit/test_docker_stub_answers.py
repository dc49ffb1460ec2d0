"""Odd but real engine answers, served by a stub on a unix socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import ConflictError, NotFoundError

Handler = Callable[[web.Request], Awaitable[web.Response]]


async def _ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers={"Api-Version": "1.41"})


@contextlib.asynccontextmanager
async def stub_engine(tmp_path: Path, stats: Handler) -> AsyncIterator[DockerDriver]:
    """Yield a driver on a stub engine whose stats endpoint is ``stats``."""
    app = web.Application()
    app.router.add_get("/_ping", _ping)
    app.router.add_get("/v1.41/containers/{id}/stats", stats)
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


async def test_empty_stats_answer_means_the_container_went_away(tmp_path: Path) -> None:
    async def empty(request: web.Request) -> web.Response:
        # What dockerd 20.10 sends when the container is removed mid-collection.
        return web.Response(status=200, body=b"")

    async with stub_engine(tmp_path, empty) as driver:
        with pytest.raises(NotFoundError, match="went away"):
            await driver.container_stats("app-abcdef12-0001")


async def test_a_zero_time_answer_is_no_sample(tmp_path: Path) -> None:
    async def zeros(request: web.Request) -> web.Response:
        # What dockerd answers for a created or exited container.
        return web.json_response(
            {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}}
        )

    async with stub_engine(tmp_path, zeros) as driver:
        with pytest.raises(ConflictError, match="not running"):
            await driver.container_stats("app-abcdef12-0001")
