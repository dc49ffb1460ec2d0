"""POST /replicas: TryStore decides; a new replica gets its pod dir, container and start."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from exporter.config import Settings
from exporter.errors import EngineUnreachableError
from exporter.models import AppReplicaInstance, ContainerState
from exporter.paths import INIT_DIRS, SYSINNER_DIR, container_cmd
from exporter.replica_deploy import write_atomic
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, Clock, build_app, replica, start_api
from tests.support.api import settings_for as make_settings

APP = "0a1b2c3d4e5f"
NAME = "app-0a1b2c3d4e5f-0003"


@pytest.fixture
def host_prefix(tmp_path: Path) -> Path:
    prefix = tmp_path / "innerstack"
    (prefix / "cmd" / "inagent").mkdir(parents=True)
    (prefix / "cmd" / "inagent" / "ininit").write_text("#!/bin/sh\nexec sleep 1000\n")
    (prefix / "bin").mkdir()
    (prefix / "bin" / "inagent-linux-amd64").write_bytes(b"\x7fELF-amd64")
    (prefix / "bin" / "inagent-linux-arm64").write_bytes(b"\x7fELF-arm64")
    return prefix


@pytest.fixture
def api_settings(tmp_path: Path, host_prefix: Path) -> Settings:
    return make_settings(tmp_path, host_prefix=host_prefix)


async def test_new_replica_is_laid_out_created_and_started(api: Api) -> None:
    body = replica(APP, 3, revision=7)
    status, answer = await api.call("POST", "/api/v1/replicas", json=body)
    assert status == 201, answer
    assert (answer["result"], answer["name"], answer["revision"]) == ("created", NAME, 7)
    assert answer["container"]["state"] == "running"

    pod = api.settings.pod_base_dir / NAME
    home = pod / "home"
    # Siblings: the tenant's home holds nothing the exporter writes.
    sysinner = pod / "sysinner"
    for d in INIT_DIRS:
        assert (home / d.removeprefix("/home/")).is_dir(), d
    assert (sysinner / "ininit").read_text() == "#!/bin/sh\nexec sleep 1000\n"
    assert (sysinner / "inagent").read_bytes() == b"\x7fELF-amd64"
    assert os.stat(sysinner / "inagent").st_mode & stat.S_IXUSR
    stored = AppReplicaInstance.model_validate_json((sysinner / "app_instance.json").read_bytes())
    assert stored == AppReplicaInstance.model_validate(body)
    # No temporary file is left behind by the atomic write.
    assert sorted(p.name for p in sysinner.iterdir()) == ["app_instance.json", "inagent", "ininit"]
    # The exporter's own record, beside home and sysinner, is what a restart trusts.
    assert (pod / "app_instance.json").read_bytes() == (sysinner / "app_instance.json").read_bytes()
    assert not (home / "action" / ".sysinner").exists()

    info = api.driver.find(NAME)
    assert info.state is ContainerState.RUNNING
    assert f"{sysinner}:{SYSINNER_DIR}" in info.binds
    assert f"{home}:/home" in info.binds
    assert info.labels["io.sysinner.revision"] == "7"
    assert info.labels["team"] == "core"
    assert (info.cpu_limit, info.memory_limit) == (500, 64 * 1024 * 1024)
    assert api.driver.calls["container_create"] == 1


async def test_entrypoint_is_container_cmd(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = api.driver.container_create

    async def spy(opts):  # type: ignore[no-untyped-def]
        seen.append(opts)
        return await original(opts)

    monkeypatch.setattr(api.driver, "container_create", spy)
    status, _ = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert status == 201
    assert seen[0].cmd == container_cmd()
    assert seen[0].env == ["MODE=test"]


async def test_same_revision_again_is_unchanged_and_touches_nothing(api: Api) -> None:
    assert (await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7)))[0] == 201
    instance = api.settings.pod_base_dir / NAME / "sysinner/app_instance.json"
    before = (instance.stat().st_mtime_ns, instance.stat().st_ino)
    calls = dict(api.driver.calls)
    container = api.driver.find(NAME)

    changed = replica(APP, 3, 7)
    changed["app"]["spec"]["env"] = ["MODE=other"]  # same revision: must still be ignored
    for body in (replica(APP, 3, 7), changed, replica(APP, 3, 6)):
        status, answer = await api.call("POST", "/api/v1/replicas", json=body)
        assert (status, answer["result"], answer["container"]) == (200, "unchanged", None)

    assert (instance.stat().st_mtime_ns, instance.stat().st_ino) == before
    # Only reads: it looked whether the container still runs that revision.
    mutating = ("container_create", "container_rename", "container_start", "container_stop")
    assert {m: api.driver.calls[m] for m in (*mutating, "container_remove")} == {
        m: calls.get(m, 0) for m in (*mutating, "container_remove")
    }
    assert api.driver.find(NAME) == container


async def test_newer_revision_replaces_the_container_and_rewrites_the_instance(api: Api) -> None:
    await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 8))
    assert (status, answer["result"]) == (200, "updated")
    # Created as .next beside the old one, swapped in by two renames, then the old one removed.
    assert api.driver.calls["container_create"] == 2
    assert api.driver.calls["container_rename"] == 1 + 2
    assert api.driver.calls["container_remove"] == 1
    assert [c.name for c in api.driver.containers.values()] == [NAME]
    assert api.driver.find(NAME).labels["io.sysinner.revision"] == "8"
    instance = api.settings.pod_base_dir / NAME / "sysinner/app_instance.json"
    assert json.loads(instance.read_text())["app"]["deploy"]["revision"] == 8


async def test_failed_create_is_undone_so_a_retry_works(api: Api) -> None:
    api.driver.fail("container_create", EngineUnreachableError("engine down"))
    status, _ = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    assert status == 503
    status, listed = await api.call("GET", "/api/v1/replicas")
    assert listed == []
    api.driver.heal()
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    assert (status, answer["result"]) == (201, "created")


async def test_list_replicas(api: Api) -> None:
    await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    await api.call("POST", "/api/v1/replicas", json=replica(APP, 1, 2))
    status, listed = await api.call("GET", "/api/v1/replicas")
    assert status == 200
    assert [(r["name"], r["revision"]) for r in listed] == [
        ("app-0a1b2c3d4e5f-0001", 2),
        (NAME, 7),
    ]
    assert AppReplicaInstance.model_validate(listed[1]["instance"]) == (
        AppReplicaInstance.model_validate(replica(APP, 3, 7))
    )


async def test_a_missing_inagent_is_skipped(
    aiohttp_client: ClientFactory, tmp_path: Path, host_prefix: Path
) -> None:
    (host_prefix / "bin" / "inagent-linux-amd64").unlink()
    api = await start_api(aiohttp_client, make_settings(tmp_path, host_prefix=host_prefix))
    status, _ = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert status == 201
    sysinner = api.settings.pod_base_dir / NAME / "sysinner"
    assert sorted(p.name for p in sysinner.iterdir()) == ["app_instance.json", "ininit"]


async def test_a_host_without_ininit_is_refused_before_anything_is_touched(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = await start_api(aiohttp_client, make_settings(tmp_path, host_prefix=tmp_path / "none"))
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert status == 503, answer
    assert answer["error"] == f"replica {NAME} cannot start: the host has no ininit script"
    assert answer["detail"] == {
        "missing": str(tmp_path / "none" / "cmd" / "inagent" / "ininit"),
        "setting": "--host.prefix",
    }
    assert api.driver.calls["container_create"] == 0
    assert not api.settings.pod_base_dir.exists()
    assert (await api.call("GET", "/api/v1/replicas"))[1] == []
    assert "no ininit script" in caplog.text


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["app"].update(id="NOT-HEX"), "app.id"),
        (lambda b: b["replica"].update(rep_id=70000), "replica.rep_id"),
        (lambda b: b["app"]["deploy"].update(revision=-1), "app.deploy.revision"),
        (lambda b: b["app"]["spec"].update(privileged=True), "app.spec.privileged"),
    ],
)
async def test_invalid_replica_is_422_naming_the_field(api: Api, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    body = replica(APP, 3, 1)
    mutate(body)
    status, answer = await api.call("POST", "/api/v1/replicas", json=body)
    assert status == 422, answer
    assert answer["detail"][0]["field"] == field
    assert api.driver.calls["container_create"] == 0
    assert not api.settings.pod_base_dir.exists()


async def test_replica_image_obeys_the_allowlist(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    api = await start_api(aiohttp_client, make_settings(tmp_path, api_image_allowlist=["ok/*"]))
    status, body = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert status == 403
    assert "allow-list" in body["error"]


async def test_deleting_the_container_forgets_the_replica(api: Api) -> None:
    await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    assert (await api.call("DELETE", f"/api/v1/containers/{NAME}"))[0] == 204
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    assert (status, answer["result"]) == (201, "created")


async def test_replicas_laid_out_before_a_restart_are_known_after_it(
    aiohttp_client: ClientFactory, tmp_path: Path, host_prefix: Path
) -> None:
    settings = make_settings(tmp_path, host_prefix=host_prefix)
    fake = FakeDriver()
    first = await start_api(aiohttp_client, settings, fake)
    await first.call("POST", "/api/v1/replicas", json=replica(APP, 3, 7))
    # A pod dir with a broken instance file is skipped, not fatal.
    broken = settings.pod_base_dir / "app-0a1b2c3d4e5f-0009"
    broken.mkdir(parents=True)
    write_atomic(broken / "app_instance.json", b"{not json")

    app, *_ = build_app(settings, fake, Clock())
    client = await aiohttp_client(app)
    resp = await client.post("/api/v1/replicas", json=replica(APP, 3, 7), headers=first.headers)
    assert resp.status == 200
    assert (await resp.json())["result"] == "unchanged"
    assert fake.calls["container_create"] == 1
