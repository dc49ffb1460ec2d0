"""Replica deploys on the real engine: a failed newer revision never takes the running one down.

Each test deploys a good revision, then a newer one that cannot run (an image
typo, a memory limit the engine refuses, a bad env entry, an image with a
space, a start the engine refuses), and checks that the old container is
still the one running, that the answer is a clear error naming the replica
body's own field, and that a later good post works. The exporter's restart
is a second app over the same pod dirs, as ``serve`` would start.
"""

from __future__ import annotations

import contextlib
import json
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterator
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
from exporter.paths import PodPaths
from exporter.wiring import wire
from tests.support.api import TOKEN, ClientFactory, authed_call, replica
from tests.support.engine import (
    ININIT,
    TEST_IMAGE,
    docker_cli,
    new_app_id,
    remove_containers,
)

pytestmark = pytest.mark.engine


@dataclass
class Exporter:
    """One app (one exporter life) over the test's pod dirs."""

    client: TestClient[web.Request, web.Application]
    driver: DockerDriver
    settings: Settings

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await authed_call(self.client, method, path, **kwargs)

    async def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", "/api/v1/replicas", json=body)


Start = Callable[[], "contextlib.AbstractAsyncContextManager[Exporter]"]


@pytest.fixture
def settings(engine: None, tmp_path: Path) -> Settings:
    host_prefix = tmp_path / "innerstack"
    (host_prefix / "cmd" / "inagent").mkdir(parents=True)
    (host_prefix / "cmd" / "inagent" / "ininit").write_text(ININIT)
    return Settings(
        api_token=TOKEN,
        state_dir=tmp_path / "state",
        pod_base_dir=tmp_path / "pods",
        host_prefix=host_prefix,
    )


@pytest.fixture
def start(settings: Settings, aiohttp_client: ClientFactory) -> Start:
    """Return a factory of exporter lives: each a fresh app, driver and deployer."""

    @contextlib.asynccontextmanager
    async def life() -> AsyncIterator[Exporter]:
        driver = DockerDriver(stop_grace=3)
        wired = wire(settings, driver=driver, poll_in_background=False)
        client = await aiohttp_client(wired.app)
        try:
            yield Exporter(client, driver, settings)
        finally:
            await client.close()

    return life


@pytest.fixture
async def name() -> AsyncIterator[tuple[str, str]]:
    """Return a fresh (app id, container name) of replica 1; its containers go afterwards."""
    app_id = new_app_id()
    name = container_name(app_id, 1)
    try:
        yield app_id, name
    finally:
        await remove_containers(name, f"{name}.next", f"{name}.prev")


async def inspect(name: str) -> ContainerInfo | None:
    """Return the container named exactly ``name``, or None."""
    driver = DockerDriver()
    try:
        for c in await driver.container_list():
            if c.name == name:
                return await driver.container_inspect(c.id)
        return None
    finally:
        await driver.close()


async def leftovers(name: str) -> list[str]:
    """Return the names of every container of this replica, temporaries included."""
    driver = DockerDriver()
    try:
        return sorted(c.name for c in await driver.container_list() if c.name.startswith(name))
    finally:
        await driver.close()


def instance_revision(settings: Settings, name: str) -> int | None:
    path = Path(PodPaths(str(settings.pod_base_dir), name).instance_record_file())
    if not path.exists():
        return None
    return int(json.loads(path.read_text())["app"]["deploy"]["revision"])


async def deploy_good(exp: Exporter, app_id: str, revision: int) -> ContainerInfo:
    status, answer = await exp.post(replica(app_id, 1, revision, image=TEST_IMAGE))
    assert status in (200, 201), answer
    assert answer["result"] in ("created", "updated"), answer
    info = await inspect(container_name(app_id, 1))
    assert info is not None
    assert info.state.value == "running", info
    assert info.labels["io.sysinner.revision"] == str(revision)
    return info


BAD_REVISIONS: list[tuple[str, Callable[[dict[str, Any]], None], int, str]] = [
    ("image typo", lambda s: s.update(image="local/busybox-typo:latest"), 404, "app.spec.image"),
    ("memory_limit 1", lambda s: s.update(memory_limit=1), 422, "app.spec.memory_limit"),
    ("bad env entry", lambda s: s.update(env=["A=1", "B=2", "=oops"]), 422, "app.spec.env.2"),
    (
        "image with a space",
        lambda s: s.update(image="local/busybox :latest"),
        422,
        "app.spec.image",
    ),
]


@pytest.mark.parametrize(
    ("what", "mutate", "status", "field"), BAD_REVISIONS, ids=[b[0] for b in BAD_REVISIONS]
)
async def test_a_bad_newer_revision_leaves_the_running_one_alone(
    start: Start,
    settings: Settings,
    name: tuple[str, str],
    what: str,
    mutate: Callable[[dict[str, Any]], None],
    status: int,
    field: str,
) -> None:
    app_id, cname = name
    async with start() as exp:
        old = await deploy_good(exp, app_id, 1)
        bad = replica(app_id, 1, 2, image=TEST_IMAGE)
        mutate(bad["app"]["spec"])
        got, answer = await exp.post(bad)
        after = await inspect(cname)
        assert after is not None, f"{what}: the running revision was destroyed"
        assert (after.id, after.pid, after.state.value) == (old.id, old.pid, "running")
        assert got == status, (what, answer)
        assert field in answer["error"], answer
        assert answer["detail"][0]["field"] == field, answer
        assert await leftovers(cname) == [cname]
        assert instance_revision(settings, cname) == 1
        # The same revision again is tried again (not "unchanged"), and fails the same way.
        assert (await exp.post(bad))[0] == status

    # An exporter restart, then a rollback to revision 1: it runs, so it is unchanged.
    async with start() as exp:
        got, answer = await exp.post(replica(app_id, 1, 1, image=TEST_IMAGE))
        assert (got, answer["result"]) == (200, "unchanged"), answer
        after = await inspect(cname)
        assert after is not None
        assert after.id == old.id
        # A good revision 2 replaces it.
        new = await deploy_good(exp, app_id, 2)
        assert new.id != old.id
        assert await leftovers(cname) == [cname]
        assert instance_revision(settings, cname) == 2


@contextlib.contextmanager
def port_taken() -> Iterator[int]:
    """Hold a loopback port, so that the engine cannot publish it (its start fails)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]
    finally:
        s.close()


async def test_a_newer_revision_whose_start_fails_is_rolled_back(
    start: Start, settings: Settings, name: tuple[str, str]
) -> None:
    app_id, cname = name
    async with start() as exp:
        old = await deploy_good(exp, app_id, 1)
        with port_taken() as port:
            bad = replica(app_id, 1, 2, image=TEST_IMAGE)
            bad["app"]["spec"]["ports"] = [
                {"host_ip": "127.0.0.1", "host_port": port, "container_port": 80}
            ]
            got, answer = await exp.post(bad)
            assert got == 502, answer
            assert "did not start" in answer["error"], answer
            assert "address already in use" in json.dumps(answer["detail"]), answer
            assert "revision 1 keeps running" in answer["error"], answer
        after = await inspect(cname)
        assert after is not None, "the running revision was destroyed"
        assert after.id == old.id
        assert after.state.value == "running"
        assert after.labels["io.sysinner.revision"] == "1"
        assert await leftovers(cname) == [cname]
        assert instance_revision(settings, cname) == 1
        # The port is free now: the same revision 2 deploys.
        got, answer = await exp.post(bad)
        assert (got, answer["result"]) == (200, "updated"), answer
        assert await leftovers(cname) == [cname]
        assert instance_revision(settings, cname) == 2


async def test_deleted_container_is_recreated_after_an_exporter_restart(
    start: Start, settings: Settings, name: tuple[str, str]
) -> None:
    app_id, cname = name
    async with start() as exp:
        await deploy_good(exp, app_id, 3)
    rc, out = await docker_cli("rm", "-f", cname)
    assert rc == 0, out
    async with start() as exp:
        got, answer = await exp.post(replica(app_id, 1, 3, image=TEST_IMAGE))
        assert (got, answer["result"]) == (201, "created"), answer
        info = await inspect(cname)
        assert info is not None
        assert info.state.value == "running"
        assert info.labels["io.sysinner.revision"] == "3"


async def test_no_ininit_on_the_host_is_refused_before_anything_is_created(
    start: Start, settings: Settings, name: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    app_id, cname = name
    (settings.host_prefix / "cmd" / "inagent" / "ininit").unlink()
    async with start() as exp:
        got, answer = await exp.post(replica(app_id, 1, 1, image=TEST_IMAGE))
        assert got == 503, answer
        assert "ininit" in answer["error"], answer
        assert str(settings.host_prefix) in json.dumps(answer["detail"]), answer
        assert await leftovers(cname) == []
        assert instance_revision(settings, cname) is None
        assert (await exp.call("GET", "/api/v1/replicas"))[1] == []
    assert any("ininit" in r.getMessage() for r in caplog.records), caplog.text


async def test_a_replica_that_exits_right_after_start_is_an_error(
    start: Start, settings: Settings, name: tuple[str, str]
) -> None:
    app_id, cname = name
    ininit = settings.host_prefix / "cmd" / "inagent" / "ininit"
    ininit.write_text("#!/bin/sh\necho 'ininit: cannot reach the zone master' >&2\nexit 3\n")
    ininit.chmod(stat.S_IRWXU)
    async with start() as exp:
        got, answer = await exp.post(replica(app_id, 1, 1, image=TEST_IMAGE))
        assert got == 502, answer
        assert "exited right after start" in answer["error"], answer
        assert await leftovers(cname) == []
        assert instance_revision(settings, cname) is None
        assert (await exp.call("GET", "/api/v1/replicas"))[1] == []
        # Once the host's ininit is fixed, the same post deploys.
        ininit.write_text(ININIT)
        got, answer = await exp.post(replica(app_id, 1, 1, image=TEST_IMAGE))
        assert (got, answer["result"]) == (201, "created"), answer
        assert await leftovers(cname) == [cname]
