"""Hostile names never reach a container that is not managed, and reach the engine only quoted."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from bench.simengine import SimulatedEngine, serve
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.wiring import wire
from tests.faults.hostile import (
    HOSTILE_NAMES,
    MANAGED,
    MUTATING,
    UNMANAGED,
    Target,
    assert_clear_4xx,
    raw_http,
)
from tests.support.api import AUTH, TOKEN
from tests.support.api import settings_for as make_settings
from tests.support.ports import free_port

pytestmark = pytest.mark.faults


async def test_hostile_names_never_reach_an_unmanaged_container(target: Target) -> None:
    answers = 0
    for name in HOSTILE_NAMES:
        for method, template in MUTATING:
            status, body = await target.call(method, template.format(quote(name, safe="")))
            answers += 1
            assert 400 <= status < 500, (method, template, name, status, body)
            # Unquoted: path separators and dot segments as a careless client sends them;
            # the client resolves "x/../app-..." to a managed name, which may then act.
            status, body = await target.call(method, template.format(name.replace("\x00", "")))
            answers += 1
            assert status < 500, (method, template, name, status, body)
        status, body = await target.call(
            "POST", "/api/v1/containers", json={"name": name, "image": "local/busybox:latest"}
        )
        answers += 1
        assert_clear_4xx(status, body, name)
    # Raw request targets no client would send: NUL, invalid UTF-8, dot segments, backslashes.
    for raw in (
        b"/api/v1/containers/postgres%00/stop",
        b"/api/v1/containers/%ff%fe/stop",
        b"/api/v1/containers/app-abcdef12-0001/../postgres/stop",
        b"/api/v1/containers/app-abcdef12-0001/..%2Fpostgres/stop",
        b"/api/v1/containers/..%5Cpostgres/restart",
        b"/api/v1/containers/%2e%2e/postgres/stop",
        b"/api/v1//containers/postgres/stop",
    ):
        status, _ = await raw_http(
            target.port,
            b"POST "
            + raw
            + b" HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {TOKEN}".encode(),
        )
        answers += 1
        assert 400 <= status < 500, (raw, status)
    for raw_line in (b"POST /api/v1/containers/a\x00b/stop HTTP/1.1", b"POST /a b/stop HTTP/1.1"):
        status, _ = await raw_http(target.port, raw_line + b"\r\nHost: x")
        answers += 1
        assert status == 400, raw_line
    acted_on = {name for _, name in target.driver.acted}
    assert acted_on <= {MANAGED}, acted_on
    assert UNMANAGED in {c.name for c in target.driver.containers.values()}
    # The managed one may have been acted on only by a name that is exactly its own.
    assert all(name == MANAGED for _, name in target.driver.acted)
    assert answers > 250


async def test_hostile_names_reach_the_engine_only_as_one_quoted_read(tmp_path: Path) -> None:
    """The real driver against the simulated engine: never a write, never another endpoint."""
    engine = SimulatedEngine(2)
    socket_path = tmp_path / "sim.sock"
    runner = await serve(engine, str(socket_path))
    settings = make_settings(tmp_path)
    driver = DockerDriver(DockerEndpoint.parse(f"unix://{socket_path}"), timeout=5)
    app_runner = web.AppRunner(wire(settings, driver=driver, poll_in_background=False).app)
    await app_runner.setup()
    port = free_port()
    await web.TCPSite(app_runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            for name in HOSTILE_NAMES:
                for method, template in (("GET", "/api/v1/containers/{}"), *MUTATING):
                    url = f"http://127.0.0.1:{port}" + template.format(quote(name, safe=""))
                    async with http.request(method, url, headers=AUTH) as r:
                        assert r.status < 500 or r.status in (502, 503), (name, r.status)
                        assert r.status != 500, (name, await r.text())
    finally:
        await app_runner.cleanup()
        await runner.cleanup()
    methods = {m for m, _ in engine.requests}
    assert methods <= {"GET"}, engine.requests
    # Wired as serve is, the deployer looks for cut deploys once at start: a list, no name in it.
    lists = [path for _, path in engine.requests if path.startswith("/v1.41/containers/json?")]
    assert lists == ["/v1.41/containers/json?all=1"], lists
    for _, path in engine.requests:
        # /info once: the engine's cgroup driver, for cAdvisor's id; it carries no name.
        if path in ("/_ping", "/v1.41/info") or path in lists:
            continue
        assert path.startswith("/v1.41/containers/"), path
        assert path.endswith("/json"), path
        segment = path.removeprefix("/v1.41/containers/").removesuffix("/json")
        assert "/" not in segment, path
        assert segment not in ("", ".", "..", "%2e%2e"), path
        assert "%2F" not in segment.upper(), path
    # Reads of any name do reach it (the check above is not vacuous).
    assert len(engine.requests) > len(HOSTILE_NAMES) // 2
