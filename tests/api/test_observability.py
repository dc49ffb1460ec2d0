"""/metrics, /healthz and /readyz through aiohttp's test client on the in-memory driver."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Settings
from exporter.errors import EngineUnreachableError
from exporter.poller import Poller
from exporter.testing import FakeDriver
from exporter.wiring import wire
from tests.support.api import Api, settings_for

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def two_replicas() -> FakeDriver:
    d = FakeDriver()
    d.add("app-abcdef12-0001")
    d.add("app-abcdef12-0002")
    return d


def settings(**values: Any) -> Settings:
    """Return settings for the fake engine: its containers have no cgroup files or host pids."""
    return Settings(**{"stats_source": "docker", "collect_processes": False, **values})


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
    containers = [s for s in cpu.samples if s.labels["id"] != "/"]  # "/": the host's totals
    assert {s.labels["replica"] for s in containers} == {"1", "2"}
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
    assert doc["unmanaged_left_out"] == 0
    assert "include_unmanaged_with" not in doc

    driver.add("postgres")  # not a managed name: left out, and counted
    await poller.poll_once()
    doc = await (await client.get("/readyz")).json()
    assert doc["containers"] == 2
    assert doc["unmanaged_left_out"] == 1
    assert doc["include_unmanaged_with"] == "--collect.all"

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
    wired = wire(
        settings(web_telemetry_path="/custom"), driver=two_replicas(), poll_in_background=False
    )
    client = await aiohttp_client(wired.app)
    assert (await client.get("/custom")).status == 200
    assert (await client.get("/metrics")).status == 404


async def test_app_shutdown_closes_the_driver(aiohttp_client: ClientFactory) -> None:
    # An app of the test's own, so no other app shares the driver.
    driver = two_replicas()
    wired = wire(settings(poll_interval=0.2), driver=driver)
    client = await aiohttp_client(wired.app)
    await asyncio.wait_for(wired.poller.wait_next_poll(), timeout=5)
    assert (await client.get("/readyz")).status == 200
    await client.close()
    assert driver.closed
