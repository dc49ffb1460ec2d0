"""Odd but real engine answers, served by a stub on a unix socket."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import ConflictError, DriverError, NotFoundError
from exporter.models import ContainerState

Handler = Callable[[web.Request], Awaitable[web.Response]]


async def _ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers={"Api-Version": "1.41"})


@contextlib.asynccontextmanager
async def stub_engine(
    tmp_path: Path,
    stats: Handler | None = None,
    containers: Handler | None = None,
    inspect: Handler | None = None,
) -> AsyncIterator[DockerDriver]:
    """Yield a driver on a stub engine whose stats, list and inspect endpoints are as given."""
    app = web.Application()
    app.router.add_get("/_ping", _ping)
    if stats is not None:
        app.router.add_get("/v1.41/containers/{id}/stats", stats)
    if containers is not None:
        app.router.add_get("/v1.41/containers/json", containers)
    if inspect is not None:
        app.router.add_get("/v1.41/containers/{id}/json", inspect)
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


def _listed(cid: str, name: str) -> dict[str, object]:
    return {"Id": cid, "Names": ["/" + name], "Image": "local/busybox:latest", "State": "running"}


async def test_a_list_answer_is_translated_entry_by_entry(tmp_path: Path) -> None:
    entries = [_listed("a" * 64, "app-abcdef12-0001"), _listed("b" * 64, "redis")]

    async def containers(request: web.Request) -> web.Response:
        # Go's encoder ends the answer with a newline; a proxy may add blanks.
        return web.Response(body=b" " + json.dumps(entries, indent=1).encode() + b"\n")

    async with stub_engine(tmp_path, containers=containers) as driver:
        listed = await driver.container_list()
    assert [(c.id, c.name, c.state) for c in listed] == [
        ("a" * 64, "app-abcdef12-0001", ContainerState.RUNNING),
        ("b" * 64, "redis", ContainerState.RUNNING),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b"[\xff]",  # not UTF-8
        b'[{"Id": "a", "Names": ["/x"]}, ',  # cut short
        b'{"message": "not a list"}',
        b"[1, 2]",  # not containers
    ],
)
async def test_a_garbled_list_answer_is_a_driver_error(tmp_path: Path, body: bytes) -> None:
    async def containers(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async with stub_engine(tmp_path, containers=containers) as driver:
        with pytest.raises(DriverError, match="not the expected JSON"):
            await driver.container_list()


async def test_garbled_inspect_and_stats_answers_are_driver_errors(tmp_path: Path) -> None:
    async def inspect(request: web.Request) -> web.Response:
        return web.json_response({"Id": 5, "Name": ["not", "a", "name"]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {"read": "2026-11-29T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": "lots"}}}
        )

    async with stub_engine(tmp_path, stats=stats, inspect=inspect) as driver:
        with pytest.raises(DriverError, match="not the expected JSON"):
            await driver.container_inspect("app-abcdef12-0001")
        with pytest.raises(DriverError, match="not the expected JSON"):
            await driver.container_stats("app-abcdef12-0001")
