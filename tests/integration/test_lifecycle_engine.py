"""The lifecycle API and remediation over HTTP, on the real engine."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerInfo
from exporter.naming import container_name
from exporter.paths import SYSINNER_DIR
from exporter.wiring import wire
from tests.support.api import TOKEN, ClientFactory, alert, authed_call, replica, webhook
from tests.support.engine import (
    IDLE_CMD,
    ININIT,
    TEST_IMAGE,
    ContainerFactory,
    docker_cli,
    new_app_id,
    remove_containers,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine


@dataclass
class EngineApi:
    client: TestClient[web.Request, web.Application]
    driver: DockerDriver
    settings: Settings

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await authed_call(self.client, method, path, **kwargs)


@pytest.fixture
async def api(
    engine: None, aiohttp_client: ClientFactory, tmp_path: Path
) -> AsyncIterator[EngineApi]:
    """The app wired as serve wires it, on the real engine, every dir under tmp_path."""
    host_prefix = tmp_path / "innerstack"
    (host_prefix / "cmd" / "inagent").mkdir(parents=True)
    (host_prefix / "cmd" / "inagent" / "ininit").write_text(ININIT)
    settings = Settings(
        api_token=TOKEN,
        state_dir=tmp_path / "state",
        pod_base_dir=tmp_path / "pods",
        host_prefix=host_prefix,
        api_pull_timeout=60,
    )
    driver = DockerDriver(stop_grace=3)
    wired = wire(settings, driver=driver, poll_in_background=False)
    try:
        yield EngineApi(await aiohttp_client(wired.app), driver, settings)
    finally:
        shutil.rmtree(settings.pod_base_dir, ignore_errors=True)


async def test_full_lifecycle_of_a_managed_container(api: EngineApi) -> None:
    name = container_name(new_app_id(), 1)
    try:
        status, body = await api.call(
            "POST",
            "/api/v1/containers",
            json={"name": name, "image": TEST_IMAGE, "cmd": IDLE_CMD, "labels": {"t": "1"}},
        )
        assert status == 201, body
        assert (body["name"], body["state"], body["labels"]["t"]) == (name, "created", "1")

        status, body = await api.call("POST", f"/api/v1/containers/{name}/start")
        assert (status, body["state"]) == (200, "running")
        assert body["pid"] > 0
        first_pid = body["pid"]

        status, body = await api.call("GET", "/api/v1/containers")
        assert name in {c["name"] for c in body}

        status, body = await api.call("POST", f"/api/v1/containers/{name}/stop")
        assert (status, body["state"], body["pid"]) == (200, "stopped", 0)

        status, body = await api.call("POST", f"/api/v1/containers/{name}/restart")
        assert (status, body["state"]) == (200, "running")
        assert body["pid"] not in (0, first_pid)

        status, body = await api.call("DELETE", f"/api/v1/containers/{name}")
        assert (status, body) == (204, None)
        status, body = await api.call("GET", f"/api/v1/containers/{name}")
        assert status == 404
        assert name in body["detail"]

        # Creating it twice: the engine's conflict is a 409.
        create = {"name": name, "image": TEST_IMAGE, "cmd": IDLE_CMD}
        assert (await api.call("POST", "/api/v1/containers", json=create))[0] == 201
        status, body = await api.call("POST", "/api/v1/containers", json=create)
        assert status == 409
        assert "already in use" in body["detail"]
    finally:
        await remove_containers(name)


async def test_unmanaged_container_cannot_be_stopped(
    api: EngineApi, make_container: ContainerFactory
) -> None:
    unmanaged = f"lifecycle-test-{new_app_id()}"
    info = await make_container(name=unmanaged)
    status, body = await api.call("POST", f"/api/v1/containers/{unmanaged}/stop")
    assert status == 403
    assert unmanaged in body["error"]
    # Its id is no way around it either.
    status, _ = await api.call("POST", f"/api/v1/containers/{info.id}/stop")
    assert status == 403
    after = await api.driver.container_inspect(unmanaged)
    assert (after.state, after.pid, after.started) == (info.state, info.pid, info.started)


async def test_mount_outside_the_prefix_is_refused_by_the_api(
    api: EngineApi, tmp_path: Path
) -> None:
    name = container_name(new_app_id(), 1)
    for host in ("/etc", "/var/run/docker.sock", str(tmp_path)):
        status, body = await api.call(
            "POST",
            "/api/v1/containers",
            json={
                "name": name,
                "image": TEST_IMAGE,
                "mounts": [{"host_path": host, "container_path": "/x"}],
            },
        )
        assert status == 403, (host, body)
    status, _ = await api.call("GET", f"/api/v1/containers/{name}")
    assert status == 404


async def test_replica_is_laid_out_mounted_and_started_once(api: EngineApi) -> None:
    app_id = new_app_id()
    name = container_name(app_id, 2)
    body = replica(app_id, 2, revision=5, image=TEST_IMAGE)
    try:
        status, answer = await api.call("POST", "/api/v1/replicas", json=body)
        assert status == 201, answer
        assert (answer["result"], answer["name"]) == ("created", name)

        pod = api.settings.pod_base_dir / name
        sysinner = pod / "sysinner"
        assert (sysinner / "ininit").read_text() == ININIT
        instance = sysinner / "app_instance.json"
        assert json.loads(instance.read_text())["app"]["deploy"]["revision"] == 5

        async def running() -> bool:
            return (await api.driver.container_inspect(name)).state.value == "running"

        # The container runs the copied ininit: it stays up only if the mount is in place.
        await wait_for(running, 15, f"{name} running its ininit")
        rc, seen = await docker_cli("exec", name, "cat", f"{SYSINNER_DIR}/app_instance.json")
        assert rc == 0, seen
        assert json.loads(seen) == json.loads(instance.read_text())
        info = await api.driver.container_inspect(name)
        assert info.state.value == "running"
        assert f"{sysinner}:{SYSINNER_DIR}" in info.binds
        assert f"{pod / 'home'}:/home" in info.binds
        assert info.labels["io.sysinner.revision"] == "5"
        assert info.memory_limit == 64 * 1024 * 1024

        stamp = instance.stat().st_mtime_ns
        status, answer = await api.call("POST", "/api/v1/replicas", json=body)
        assert (status, answer["result"]) == (200, "unchanged")
        again = await api.driver.container_inspect(name)
        assert (again.id, again.pid, again.started) == (info.id, info.pid, info.started)
        assert instance.stat().st_mtime_ns == stamp
    finally:
        await remove_containers(name)


@pytest.mark.registry
async def test_image_pull_from_the_loopback_registry(api: EngineApi, registry: str) -> None:
    image = f"{registry}/test/busybox:latest"
    try:
        status, body = await api.call("POST", "/api/v1/images/pull", json={"image": image})
        assert (status, body) == (200, {"image": image, "status": "pulled"})
        status, images = await api.call("GET", "/api/v1/images")
        assert image in {t for i in images for t in i["repo_tags"]}
    finally:
        await docker_cli("rmi", image)


async def test_image_pull_from_an_unreachable_registry_is_a_clear_error(api: EngineApi) -> None:
    image = f"127.0.0.1:{free_port()}/test/busybox:latest"
    started = time.monotonic()
    status, body = await api.call("POST", "/api/v1/images/pull", json={"image": image})
    assert time.monotonic() - started < 30
    assert status in (502, 503), body
    assert body["error"] == f"cannot pull {image}"
    assert "127.0.0.1" in body["detail"]


async def test_firing_alert_restarts_the_container_once(
    api: EngineApi, make_container: ContainerFactory
) -> None:
    app_id = new_app_id()
    name = container_name(app_id, 10)
    before: ContainerInfo = await make_container(name=name)

    async def clock_past_start() -> bool:
        # started is whole seconds: let a second pass so a restart can move it.
        return int(time.time()) > before.started

    await wait_for(clock_past_start, 3, "the clock to pass the start second")
    labels = {"alertname": "ReplicaSick", "action": "restart", "app": app_id, "replica": "10"}
    status, body = await api.call("POST", "/api/v1/alerts", json=webhook(alert(labels)))
    assert status == 200, body
    assert [o["outcome"] for o in body["outcomes"]] == ["restarted"]

    async def restarted() -> bool:
        info = await api.driver.container_inspect(name)
        return info.state.value == "running" and info.started > before.started

    await wait_for(restarted, 15, f"{name} to start again")
    after = await api.driver.container_inspect(name)
    assert after.pid != before.pid

    # Delivered again (Alertmanager's repeat) and a new alert inside the cooldown: no restart.
    again = webhook(alert(labels), alert(labels, fingerprint="other"))
    status, body = await api.call("POST", "/api/v1/alerts", json=again)
    assert [o["outcome"] for o in body["outcomes"]] == ["duplicate", "cooldown"]
    final = await api.driver.container_inspect(name)
    assert (final.pid, final.started) == (after.pid, after.started)
