"""Hostile input: oversized, nested, mis-encoded and mis-typed bodies, hostile names and
mounts, bad tokens. Every answer is a clear 4xx, never a 500, and nothing is done to a
container that is not managed.

The app is wired as ``serve`` wires it (tests/api/harness.py) on a driver that
records every mutating call; the real driver's URL building is checked
against the simulated engine, which remembers every request it was sent.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

import exporter.api.auth
from bench.simengine import SimulatedEngine, serve
from exporter.api import create_app
from exporter.config import Settings
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.metrics import build_registry
from tests.faults.hostile import (
    HOSTILE_NAMES,
    MANAGED,
    UNMANAGED,
    RecordingDriver,
    raw_http,
)
from tests.support.api import AUTH, TOKEN, Api, webhook
from tests.support.api import settings_for as make_settings
from tests.support.engine import poller_on
from tests.support.faults import record
from tests.support.ports import free_port

pytestmark = pytest.mark.faults

MAX_BODY = 4096
JSON = {"Content-Type": "application/json"}
#: Every route that takes a JSON body.
BODY_ROUTES = ("/api/v1/containers", "/api/v1/images/pull", "/api/v1/replicas", "/api/v1/alerts")
MUTATING = (
    ("POST", "/api/v1/containers/{}/start"),
    ("POST", "/api/v1/containers/{}/stop"),
    ("POST", "/api/v1/containers/{}/restart"),
    ("DELETE", "/api/v1/containers/{}"),
    ("DELETE", "/api/v1/remediation/quarantine/{}"),
)


@dataclass
class Target:
    base: str
    port: int
    driver: RecordingDriver
    http: aiohttp.ClientSession
    settings: Settings

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        """Send a request (with the token unless headers say otherwise); return (status, body)."""
        async with self.http.request(
            method, self.base + path, headers=AUTH if headers is None else headers, **kw
        ) as r:
            raw = await r.read()
            body: Any = raw
            if r.content_type == "application/json" and raw:
                body = json.loads(raw)
            return r.status, body


def assert_clear_4xx(status: int, body: Any, what: object) -> None:
    """A 4xx with the JSON error body every error of the service has."""
    assert 400 <= status < 500, (what, status, body)
    assert isinstance(body, dict), (what, status, body)
    assert body.get("error"), (what, status, body)


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path, api_max_body_bytes=MAX_BODY)
    settings.pod_base_dir.mkdir(parents=True)
    return settings


@pytest.fixture
def api_driver() -> RecordingDriver:
    driver = RecordingDriver()
    driver.add(MANAGED)
    driver.add(UNMANAGED)
    return driver


@pytest.fixture
async def target(api: Api, api_driver: RecordingDriver) -> AsyncIterator[Target]:
    """The ``api`` fixture's loopback server, reached by a client of the test's own."""
    port = api.client.port
    async with aiohttp.ClientSession() as http:
        yield Target(f"http://127.0.0.1:{port}", port, api_driver, http, api.settings)


# -- bodies ----------------------------------------------------------------------


async def test_oversized_bodies_are_413_declared_or_chunked(target: Target) -> None:
    big = json.dumps({"name": MANAGED, "image": "x", "env": ["A=" + "x" * MAX_BODY]}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    for path in BODY_ROUTES:
        status, body = await target.call("POST", path, data=big, headers={**AUTH, **JSON})
        assert status == 413, (path, status, body)
        assert body["detail"]["max_bytes"] == MAX_BODY
        # Chunked: no Content-Length for the server to refuse up front.
        status, body = await target.call("POST", path, data=chunks(), headers={**AUTH, **JSON})
        assert status == 413, (path, status, body)
    # 10 MiB declared, a little over the limit sent: refused without waiting for the rest.
    status, _ = await raw_http(
        target.port,
        b"POST /api/v1/images/pull HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 10485760",
        b"[" * (MAX_BODY + 1),
    )
    assert status == 413
    assert target.driver.acted == []


@pytest.mark.parametrize("depth", [64, 1000, MAX_BODY // 2 - 8])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
async def test_deeply_nested_json_is_a_clear_4xx(target: Target, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    payload = (opener * depth + "1" + closer * depth).encode()[:MAX_BODY]
    for path in BODY_ROUTES:
        status, body = await target.call("POST", path, data=payload, headers={**AUTH, **JSON})
        assert_clear_4xx(status, body, (path, depth))
    assert target.driver.acted == []


@pytest.mark.parametrize(
    "payload",
    [
        b'{"image": "\xff"}',  # a byte that is never UTF-8
        b'{"image": "\xc0\xaf"}',  # an overlong "/"
        b'{"image": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"image": "\xe2\x82"}',  # a truncated sequence
        b"\xff\xfe{\x00}\x00",  # UTF-16 with a BOM
        b"\xef\xbb\xbf" + b'{"image": "busybox"}',  # a UTF-8 BOM
    ],
)
async def test_invalid_utf8_is_400(target: Target, payload: bytes) -> None:
    for path in BODY_ROUTES:
        status, body = await target.call("POST", path, data=payload, headers={**AUTH, **JSON})
        assert_clear_4xx(status, body, (path, payload))
        assert status == 400, (path, payload, body)
    assert target.driver.acted == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonp",
        "application/octet-stream",
        "json",
        "text/json; charset=utf-8",
    ],
)
async def test_wrong_content_types_are_415(target: Target, content_type: str) -> None:
    data = json.dumps({"image": "local/busybox:latest"}).encode()
    for path in BODY_ROUTES:
        status, body = await target.call(
            "POST", path, data=data, headers={**AUTH, "Content-Type": content_type}
        )
        assert status == 415, (path, content_type, body)
        assert_clear_4xx(status, body, path)
    assert target.driver.acted == []


# -- names -----------------------------------------------------------------------


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
    poller = poller_on(driver, settings.naming())
    app = create_app(
        settings=settings,
        driver=driver,
        poller=poller,
        registry=build_registry(poller),
        poll_in_background=False,
    )
    app_runner = web.AppRunner(app)
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
    for _, path in engine.requests:
        if path == "/_ping":
            continue
        assert path.startswith("/v1.41/containers/"), path
        assert path.endswith("/json"), path
        segment = path.removeprefix("/v1.41/containers/").removesuffix("/json")
        assert "/" not in segment, path
        assert segment not in ("", ".", "..", "%2e%2e"), path
        assert "%2F" not in segment.upper(), path
    # Reads of any name do reach it (the check above is not vacuous).
    assert len(engine.requests) > len(HOSTILE_NAMES) // 2


# -- mounts ----------------------------------------------------------------------


async def test_mounts_aimed_at_the_host_are_refused(target: Target, tmp_path: Path) -> None:
    pods = target.settings.pod_base_dir
    inside = pods / "ok"
    inside.mkdir()
    links = pods / "links"
    links.mkdir()
    escapes = {
        "root": "/",
        "etc": "/etc",
        "sock": "/var/run/docker.sock",
        "run": "/run",
        "outside": str(tmp_path),
        "state": str(target.settings.state_dir),
    }
    for label, dest in escapes.items():
        os.symlink(dest, links / label)
    os.symlink(links / "etc", links / "chain")  # a link to a link to /etc
    os.symlink("../../..", links / "up")  # relative, up and out of the prefix
    refused = [
        "/",
        "//",
        "/etc",
        "/etc/",
        "//etc",
        "/./etc",
        "/etc/../etc",
        "/etc/ssl",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run",
        "/var",
        "/run",
        "/proc/self/root",
        "/proc/1/root/etc",
        "/sys/fs/cgroup",
        "/dev",
        "/boot",
        str(pods / ".."),
        str(pods / "../.."),
        str(pods / "ok/../../.."),
        str(target.settings.state_dir),
        str(target.settings.state_dir / "state.sqlite3"),
        *(str(links / name) for name in (*escapes, "chain", "up")),
        str(links / "up" / "etc"),
    ]

    async def create_mounting(host_path: str) -> tuple[int, Any]:
        return await target.call(
            "POST",
            "/api/v1/containers",
            json={
                "name": MANAGED.replace("0001", "0002"),
                "image": "local/busybox:latest",
                "mounts": [{"host_path": host_path, "container_path": "/data"}],
            },
        )

    for host_path in refused:
        status, body = await create_mounting(host_path)
        assert status == 403, (host_path, status, body)
        assert_clear_4xx(status, body, host_path)
    for relative in ("etc", "./etc", "../etc", ""):
        status, body = await create_mounting(relative)
        assert status == 422, (relative, status, body)
    assert target.driver.acted == []
    # The policy is not refusing everything: a dir under the prefix is fine.
    status, body = await create_mounting(str(inside))
    assert status == 201, body


# -- tokens ----------------------------------------------------------------------


def _near_misses() -> list[str]:
    misses = [
        "",
        TOKEN[:-1],
        TOKEN + "x",
        TOKEN[1:],
        "x" + TOKEN,
        TOKEN.upper(),
        TOKEN[::-1],
        TOKEN + "\x00",
        TOKEN.replace("-", "_"),
        TOKEN * 2,
        "x" * 4000,
    ]
    for i in range(0, len(TOKEN), 3):  # one character wrong, at every third position
        misses.append(TOKEN[:i] + ("A" if TOKEN[i] != "A" else "B") + TOKEN[i + 1 :])
    return misses


async def test_missing_wrong_and_near_miss_tokens_are_401_and_act_on_nothing(
    target: Target, request: pytest.FixtureRequest
) -> None:
    headers: list[dict[str, str]] = [{}]
    headers += [{"Authorization": f"Bearer {t}"} for t in _near_misses() if "\x00" not in t]
    headers += [
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer{TOKEN}"},
        {"Authorization": f"Token {TOKEN}"},
        {"X-Api-Token": TOKEN},
        {"Cookie": f"token={TOKEN}"},
    ]
    calls = 0
    for h in headers:
        for method, template in MUTATING:
            status, body = await target.call(method, template.format(MANAGED), headers=h)
            calls += 1
            assert status == 401, (h, method, template, status)
            assert_clear_4xx(status, body, h)
        status, _ = await target.call(
            "POST", "/api/v1/alerts", json=webhook(), headers={**h, **JSON}
        )
        assert status == 401
    # A NUL in the header value never gets through either.
    status, _ = await raw_http(
        target.port,
        b"POST /api/v1/containers/app-abcdef12-0001/stop HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\x00".encode(),
    )
    assert 400 <= status < 500
    # A header far over aiohttp's limit is a 4xx from the HTTP layer, not a crash.
    status, _ = await raw_http(
        target.port,
        b"GET /api/v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"x" * 20000,
    )
    assert 400 <= status < 500
    assert target.driver.acted == []
    # The right token is accepted (so the refusals above are about the token).
    status, _ = await target.call("POST", f"/api/v1/containers/{MANAGED}/restart")
    assert status == 200
    record(request, "bad tokens", headers_tried=len(headers), calls=calls, accepted=0)


def test_token_comparison_is_constant_time_in_the_code() -> None:
    source = Path(exporter.api.auth.__file__).read_text()
    tree = ast.parse(source)
    digests = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    assert len(digests) == 1, "the token must be compared with hmac.compare_digest"
    secret_names = {"token", "expected", "given", "given_bytes"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & secret_names, f"line {node.lineno}: == on the token"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in ("startswith", "endswith") or not (
                {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & {"expected"}
            ), f"line {node.lineno}: prefix compare on the token"
