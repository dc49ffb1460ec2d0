"""/metrics, /healthz and /readyz through aiohttp's test client on the in-memory driver."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.api import create_app
from exporter.config import Settings
from exporter.errors import EngineUnreachableError
from exporter.metrics import build_registry
from exporter.poller import Poller
from exporter.testing import FakeDriver
from tests.support.api import Api, settings_for
from tests.support.engine import poller_on

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def two_replicas() -> FakeDriver:
    d = FakeDriver()
    d.add("app-abcdef12-0001")
    d.add("app-abcdef12-0002")
    return d


@pytest.fixture
def api_driver() -> FakeDriver:
    return two_replicas()


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, web_telemetry_path="/metrics")


@pytest.fixture
def driver(api: Api) -> FakeDriver:
    return api.driver


@pytest.fixture
def poller(api: Api) -> Poller:
    return api.poller


@pytest.fixture
def client(api: Api) -> TestClient[web.Request, web.Application]:
    return api.client


async def test_metrics_serves_the_text_format(
    client: TestClient[web.Request, web.Application], poller: Poller
) -> None:
    await poller.poll_once()
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    cpu = families["container_cpu_usage_seconds"]
    assert {s.labels["replica"] for s in cpu.samples} == {"1", "2"}
    assert families["sysinner_exporter_up"].samples[0].value == 1
    assert "process_cpu_seconds" in families


async def test_metrics_serves_openmetrics_when_asked(
    client: TestClient[web.Request, web.Application], poller: Poller
) -> None:
    await poller.poll_once()
    resp = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    body = await resp.text()
    assert body.rstrip().endswith("# EOF")
    assert "container_cpu_usage_seconds_total{" in body


async def test_metrics_gzip_when_accepted(
    client: TestClient[web.Request, web.Application], poller: Poller
) -> None:
    await poller.poll_once()
    resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    assert b"container_cpu_usage_seconds_total" in gzip.decompress(await resp.read())


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip;q=0", False),
        ("gzip; q=0.000, identity", False),
        ("br, gzip;q=0", False),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("", False),
        ("gzip;q=zero", False),
        ("gzip;q=0.5", True),
        ("GZIP", True),
        ("br;q=1, gzip;q=0.1", True),
        ("*", True),
        ("gzip;q=0, *", False),
    ],
)
async def test_metrics_gzip_follows_the_q_values(
    client: TestClient[web.Request, web.Application],
    poller: Poller,
    accept_encoding: str,
    gzipped: bool,
) -> None:
    await poller.poll_once()
    resp = await client.get(
        "/metrics", headers={"Accept-Encoding": accept_encoding}, auto_decompress=False
    )
    assert resp.status == 200
    assert ("Content-Encoding" in resp.headers) is gzipped
    raw = await resp.read()
    body = gzip.decompress(raw) if gzipped else raw
    assert b"container_cpu_usage_seconds_total" in body


async def test_healthz_is_always_ok(client: TestClient[web.Request, web.Application]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_readyz_follows_the_last_poll(
    client: TestClient[web.Request, web.Application], poller: Poller, driver: FakeDriver
) -> None:
    before = await client.get("/readyz")
    assert before.status == 503
    assert (await before.json())["last_poll_age_seconds"] is None

    await poller.poll_once()
    ready = await client.get("/readyz")
    doc = await ready.json()
    assert ready.status == 200
    assert doc["ready"] is True
    assert doc["containers"] == 2
    assert doc["stats_source"] == "fake"

    driver.fail("container_list", EngineUnreachableError("cannot connect to Docker Engine"))
    await poller.poll_once()
    down = await client.get("/readyz")
    doc = await down.json()
    assert down.status == 503
    assert doc["engine_up"] is False
    assert "cannot connect" in doc["error"]
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert "sysinner_exporter_up 0.0" in await metrics.text()


async def test_readyz_turns_unready_when_the_last_poll_is_old(
    client: TestClient[web.Request, web.Application], poller: Poller
) -> None:
    await poller.poll_once()
    poller.snapshot = replace(poller.snapshot, completed_at=poller.snapshot.completed_at - 3600)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["last_poll_age_seconds"] >= 3600


async def test_custom_telemetry_path(aiohttp_client: ClientFactory) -> None:
    # An app of the test's own, so no other app shares the driver.
    driver = two_replicas()
    poller = poller_on(driver)
    app = create_app(
        settings=Settings(web_telemetry_path="/custom"),
        driver=driver,
        poller=poller,
        registry=build_registry(poller),
        poll_in_background=False,
    )
    client = await aiohttp_client(app)
    assert (await client.get("/custom")).status == 200
    assert (await client.get("/metrics")).status == 404


async def test_app_shutdown_closes_the_driver(aiohttp_client: ClientFactory) -> None:
    # An app of the test's own, so no other app shares the driver.
    driver = two_replicas()
    poller = poller_on(driver)
    app = create_app(
        settings=Settings(poll_interval=0.2),
        driver=driver,
        poller=poller,
        registry=build_registry(poller),
    )
    client = await aiohttp_client(app)
    await asyncio.wait_for(poller.wait_next_poll(), timeout=5)
    assert (await client.get("/readyz")).status == 200
    await client.close()
    assert driver.closed
