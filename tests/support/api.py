"""The lifecycle API on the in-memory driver, wired as serve wires it, with a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.registry import CollectorRegistry

from exporter.config import Settings
from exporter.poller import Poller
from exporter.remediation import Remediator
from exporter.replica_deploy import ReplicaDeployer
from exporter.testing import FakeDriver
from exporter.wiring import wire

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


async def authed_call(
    client: TestClient[web.Request, web.Application], method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """Send a request with the test token; return (status, decoded JSON or None)."""
    resp = await client.request(method, path, headers=AUTH, **kwargs)
    body = await resp.read()
    return resp.status, (json.loads(body) if body else None)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    """A running app and everything behind it."""

    client: TestClient[web.Request, web.Application]
    driver: FakeDriver
    settings: Settings
    registry: CollectorRegistry
    remediation: Remediator
    deployer: ReplicaDeployer
    clock: Clock
    poller: Poller
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))

    async def call(
        self, method: str, path: str, *, json: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """Send an authenticated request; return (status, decoded JSON or None)."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        resp = await self.client.request(method, path, json=json, headers=headers, **kwargs)
        body = await resp.read()
        if body:
            assert resp.content_type == "application/json", body
            return resp.status, await resp.json()
        return resp.status, None


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Return settings whose every dir lives under ``tmp_path``."""
    values: dict[str, Any] = {
        "api_token": TOKEN,
        "state_dir": tmp_path / "state",
        "pod_base_dir": tmp_path / "pods",
        "host_prefix": tmp_path / "innerstack",
        # The fake engine's containers have no cgroup files, and its pids are no host's.
        "stats_source": "docker",
        "collect_processes": False,
    }
    values.update(overrides)
    return Settings(**values)


def build_app(
    settings: Settings, driver: FakeDriver, clock: Clock
) -> tuple[web.Application, CollectorRegistry, Remediator | None, ReplicaDeployer | None]:
    """Return an app wired as ``serve`` wires it, on ``driver``, polled by hand."""
    app, registry, remediation, deployer, _ = build_app_and_poller(settings, driver, clock)
    return app, registry, remediation, deployer


def build_app_and_poller(
    settings: Settings, driver: FakeDriver, clock: Clock
) -> tuple[web.Application, CollectorRegistry, Remediator | None, ReplicaDeployer | None, Poller]:
    """Return what :func:`build_app` does, and the poller behind the app."""
    wired = wire(
        settings,
        driver=driver,
        clock=clock,
        poll_in_background=False,
        arch="amd64",
        # The fake engine's containers never exit by themselves: one look is enough.
        start_settle_seconds=0.0,
    )
    return wired.app, wired.registry, wired.remediation, wired.deployer, wired.poller


async def start_api(
    aiohttp_client: ClientFactory,
    settings: Settings,
    driver: FakeDriver | None = None,
    clock: Clock | None = None,
) -> Api:
    """Start the app on the test client and return its handles."""
    driver = driver or FakeDriver()
    clock = clock or Clock()
    app, registry, remediation, deployer, poller = build_app_and_poller(settings, driver, clock)
    # Both exist only with the API on: start_api is for settings with a token.
    assert remediation is not None
    assert deployer is not None
    client = await aiohttp_client(app)
    return Api(client, driver, settings, registry, remediation, deployer, clock, poller)


def alert(
    labels: dict[str, str],
    *,
    fingerprint: str = "f00d",
    starts_at: str = "2026-11-28T10:00:00Z",
    status: str = "firing",
) -> dict[str, Any]:
    """Return one Alertmanager alert."""
    ends = "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T11:00:00Z"
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "sick"},
        "startsAt": starts_at,
        "endsAt": ends,
        "generatorURL": "http://prometheus.invalid/graph",
        "fingerprint": fingerprint,
    }


def webhook(*alerts: dict[str, Any], common: dict[str, str] | None = None) -> dict[str, Any]:
    """Return an Alertmanager webhook payload (version 4) carrying ``alerts``."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ReplicaSick"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "sysinner-exporter",
        "groupLabels": {"alertname": "ReplicaSick"},
        "commonLabels": common or {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": list(alerts),
    }


def replica(
    app_id: str, rep_id: int, revision: int, image: str = "local/busybox:latest"
) -> dict[str, Any]:
    """Return an AppReplicaInstance body."""
    return {
        "app": {
            "id": app_id,
            "deploy": {"revision": revision},
            "spec": {
                "image": image,
                "env": ["MODE=test"],
                "labels": {"team": "core"},
                "cpu_limit": 500,
                "memory_limit": 64 * 1024 * 1024,
                "restart_policy": "no",
            },
        },
        "replica": {"rep_id": rep_id},
    }


@dataclass(frozen=True)
class FuzzRun:
    """What one run of schemathesis' CLI against the live app printed and returned."""

    text: str
    returncode: int | None
    operations: int
    seconds: float


async def run_schemathesis(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    app: web.Application,
    tmp_path: Path,
    arguments: list[str],
    deadline: float,
    config: str | None = None,
) -> FuzzRun:
    """Serve ``app`` on 127.0.0.1, save its OpenAPI document, run ``st run`` against it.

    ``arguments`` are the run's own options (checks, phases, examples, seed);
    the schema, URL, token and a request timeout are added here.
    """
    server = await aiohttp_server(app, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/openapi.json", headers=AUTH) as resp,
    ):
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(doc))
    before_run: list[str] = []
    if config is not None:
        (tmp_path / "schemathesis.toml").write_text(config)
        before_run = ["--config-file", str(tmp_path / "schemathesis.toml")]
    st = Path(sys.executable).with_name("st")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(st),
        *before_run,
        "run",
        str(schema_file),
        "--url",
        base,
        "--header",
        f"Authorization: {AUTH['Authorization']}",
        *arguments,
        "--request-timeout",
        "10",
        "--no-color",
        cwd=tmp_path,  # hypothesis keeps its example database in the cwd
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=deadline)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return FuzzRun(
        text=out.decode(errors="replace"),
        returncode=proc.returncode,
        operations=sum(len(ops) for ops in doc["paths"].values()),
        seconds=time.monotonic() - started,
    )
