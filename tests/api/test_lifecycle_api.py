"""Containers and images over the API on the in-memory driver: managed-only, confined."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.errors import DriverError
from exporter.models import ContainerState
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, start_api
from tests.support.api import settings_for as make_settings

MANAGED = "app-abcdef12-0001"
UNMANAGED = "postgres"


@pytest.fixture
def api_driver() -> FakeDriver:
    fake = FakeDriver()
    fake.add(MANAGED)
    fake.add(UNMANAGED)
    return fake


def create_body(name: str = "app-abcdef12-0002", **extra: object) -> dict[str, object]:
    return {"name": name, "image": "local/busybox:latest", **extra}


async def test_info_and_ping(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/info")
    assert status == 200
    assert body["name"] == "fake"
    assert body["container_num"] == 2
    assert await api.call("GET", "/api/v1/ping") == (200, {"status": "ok"})


async def test_list_is_managed_only_unless_all(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/containers")
    assert status == 200
    assert [c["name"] for c in body] == [MANAGED]
    status, body = await api.call("GET", "/api/v1/containers?all=1")
    assert sorted(c["name"] for c in body) == sorted([MANAGED, UNMANAGED])


async def test_unmanaged_container_can_be_read(api: Api) -> None:
    status, body = await api.call("GET", f"/api/v1/containers/{UNMANAGED}")
    assert status == 200
    assert body["name"] == UNMANAGED


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", "/stop"), ("POST", "/start"), ("POST", "/restart"), ("DELETE", "")],
)
async def test_unmanaged_container_cannot_be_touched(api: Api, method: str, suffix: str) -> None:
    before = api.driver.find(UNMANAGED)
    status, body = await api.call(method, f"/api/v1/containers/{UNMANAGED}{suffix}")
    assert status == 403
    assert UNMANAGED in body["error"]
    assert "not managed" in body["error"]
    assert api.driver.find(UNMANAGED) == before
    # Refused before the engine is asked anything.
    assert api.driver.calls["container_inspect"] == 0


async def test_a_managed_containers_id_is_not_a_managed_name(api: Api) -> None:
    cid = api.driver.find(MANAGED).id
    status, _ = await api.call("POST", f"/api/v1/containers/{cid}/stop")
    assert status == 403
    assert api.driver.find(MANAGED).state is ContainerState.RUNNING


async def test_create_of_an_unmanaged_name_is_refused(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/containers", json=create_body("web"))
    assert status == 403
    assert "'web'" in body["error"]
    assert api.driver.calls["container_create"] == 0


async def test_full_lifecycle(api: Api) -> None:
    name = "app-abcdef12-0002"
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body(name, labels={"k": "v"})
    )
    assert status == 201
    assert body["name"] == name
    assert body["state"] == "created"
    assert body["labels"] == {"k": "v"}

    status, body = await api.call("POST", f"/api/v1/containers/{name}/start")
    assert (status, body["state"]) == (200, "running")
    first_start = body["started"]

    status, body = await api.call("POST", f"/api/v1/containers/{name}/stop")
    assert (status, body["state"], body["pid"]) == (200, "stopped", 0)

    status, body = await api.call("POST", f"/api/v1/containers/{name}/restart")
    assert (status, body["state"]) == (200, "running")
    assert body["started"] > first_start

    status, body = await api.call("DELETE", f"/api/v1/containers/{name}")
    assert (status, body) == (204, None)
    assert name not in {c.name for c in api.driver.containers.values()}
    status, _ = await api.call("GET", f"/api/v1/containers/{name}")
    assert status == 404


# -- mount confinement -----------------------------------------------------------


def mount(host: str, container: str = "/data") -> dict[str, object]:
    return {"host_path": host, "container_path": container}


async def test_mount_under_the_pod_base_is_allowed(api: Api) -> None:
    inside = api.settings.pod_base_dir / "app-abcdef12-0002" / "data"
    inside.mkdir(parents=True)
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body(mounts=[mount(str(inside))])
    )
    assert status == 201, body
    assert body["binds"] == [f"{inside}:/data"]


async def test_a_refused_vpc_subnet_makes_no_mount_source(api: Api) -> None:
    leaf = api.settings.pod_base_dir / "app-abcdef12-0002" / "data"
    status, body = await api.call(
        "POST",
        "/api/v1/containers",
        json=create_body(mounts=[mount(str(leaf))], vpc_subnet="10.99.0.0/24"),
    )
    assert status == 403, body
    assert body["detail"][0]["field"] == "vpc_subnet", body
    assert not leaf.parent.exists()
    assert api.driver.calls["container_create"] == 0


@pytest.mark.parametrize(
    "host",
    ["/", "/etc", "/etc/ssh", "/var/run", "/run", "/var/run/docker.sock", "/proc/1", "/tmp"],
)
async def test_mounts_outside_the_prefixes_are_refused(api: Api, host: str) -> None:
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body(mounts=[mount(host)])
    )
    assert status == 403, body
    assert "bind mount" in body["error"]
    assert api.driver.calls["container_create"] == 0


async def test_dotdot_cannot_escape_the_prefix(api: Api) -> None:
    base = api.settings.pod_base_dir
    base.mkdir(parents=True)
    # More ".." than the path is deep: the walk stops at "/".
    sneaky = f"{base}/app-abcdef12-0002/" + "../" * 30 + "etc"
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body(mounts=[mount(sneaky)])
    )
    assert status == 403
    assert "resolves to /etc" in body["error"]


async def test_symlink_cannot_escape_the_prefix(api: Api, tmp_path: Path) -> None:
    base = api.settings.pod_base_dir
    base.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, base / "link")
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body(mounts=[mount(str(base / "link" / "x"))])
    )
    assert status == 403
    # Never followed: a symlink under the prefix is refused wherever it points.
    assert f"{base / 'link' / 'x'}: refused, link: a symlink" in body["error"]
    assert not (outside / "x").exists()


async def test_a_mount_exposing_the_state_database_is_refused(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    # Prefix the whole tmp dir: it holds the state dir too.
    api = await start_api(aiohttp_client, make_settings(tmp_path, api_mount_prefixes=[tmp_path]))
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body(mounts=[mount(str(tmp_path / "state"))])
    )
    assert status == 403
    assert "state.sqlite3" in body["error"]
    status, _ = await api.call(
        "POST", "/api/v1/containers", json=create_body(mounts=[mount(str(tmp_path / "data"))])
    )
    assert status == 201


async def test_image_allowlist(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    api = await start_api(
        aiohttp_client, make_settings(tmp_path, api_image_allowlist=["local/*:latest"])
    )
    status, _ = await api.call("POST", "/api/v1/containers", json=create_body())
    assert status == 201
    status, body = await api.call(
        "POST", "/api/v1/containers", json=create_body("app-abcdef12-0003", image="evil/miner:1")
    )
    assert status == 403
    assert "allow-list" in body["error"]
    status, _ = await api.call("POST", "/api/v1/images/pull", json={"image": "evil/miner:1"})
    assert status == 403
    assert "evil/miner:1" not in api.driver.images


# -- images -----------------------------------------------------------------------


async def test_images_list_and_pull(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/images/pull", json={"image": "local/other:2"})
    assert (status, body) == (200, {"image": "local/other:2", "status": "pulled"})
    status, body = await api.call("GET", "/api/v1/images")
    assert status == 200
    assert {i["name"] for i in body} == {"local/busybox:latest", "local/other:2"}


async def test_pull_is_bounded(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    api = await start_api(aiohttp_client, make_settings(tmp_path, api_pull_timeout=0.2))
    api.driver.delays["image_pull"] = 30
    status, body = await api.call("POST", "/api/v1/images/pull", json={"image": "slow/img:1"})
    assert status == 503
    assert "0.2s" in body["detail"]


async def test_pull_registry_failure_is_a_502_with_the_engines_message(api: Api) -> None:
    message = "Get http://127.0.0.1:9/v2/: dial tcp 127.0.0.1:9: connect: connection refused"
    api.driver.fail("image_pull", DriverError(500, message))
    status, body = await api.call("POST", "/api/v1/images/pull", json={"image": "x/y:1"})
    assert status == 502
    assert body["error"] == "cannot pull x/y:1"
    assert "connection refused" in body["detail"]


@pytest.mark.parametrize("image", ["", "has space", 5])
async def test_pull_validates_the_image(api: Api, image: object) -> None:
    status, body = await api.call("POST", "/api/v1/images/pull", json={"image": image})
    assert status == 422
    assert body["detail"][0]["field"] == "image"
