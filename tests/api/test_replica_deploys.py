"""Replica deploys on the in-memory driver: validation first, create before remove, rollback.

The real-engine twins are in tests/integration/test_replica_deploys_engine.py
and, for a kill of the exporter mid-deploy, tests/faults/test_deploy_kill.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Settings
from exporter.errors import DriverError
from exporter.models import ContainerState
from exporter.paths import PodPaths
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, Clock, replica, start_api
from tests.support.api import settings_for as make_settings

APP = "0a1b2c3d4e5f"
NAME = "app-0a1b2c3d4e5f-0003"


@pytest.fixture
def host_prefix(tmp_path: Path) -> Path:
    prefix = tmp_path / "innerstack"
    (prefix / "cmd" / "inagent").mkdir(parents=True)
    (prefix / "cmd" / "inagent" / "ininit").write_text("#!/bin/sh\nexec sleep 1000\n")
    return prefix


@pytest.fixture
def api_settings(tmp_path: Path, host_prefix: Path) -> Settings:
    return make_settings(tmp_path, host_prefix=host_prefix)


def names(driver: FakeDriver) -> list[str]:
    return sorted(c.name for c in driver.containers.values())


def instance_revision(api: Api) -> int | None:
    path = Path(PodPaths(str(api.settings.pod_base_dir), NAME).instance_record_file())
    return json.loads(path.read_text())["app"]["deploy"]["revision"] if path.exists() else None


async def running_revision_1(api: Api) -> str:
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert status == 201, answer
    return api.driver.find(NAME).id


Mutate = Callable[[dict[str, Any]], None]

SPEC_ERRORS: list[tuple[Mutate, str, str]] = [
    (lambda s: s.update(image="local/busybox :latest"), "app.spec.image", "whitespace"),
    (lambda s: s.update(env=["A=1", "B=2", "=x"]), "app.spec.env.2", "'=x' is not KEY=VALUE"),
    (lambda s: s.update(env=["A=1", "B\u0000=2"]), "app.spec.env.1", "NUL"),
    (lambda s: s.update(memory_limit=1), "app.spec.memory_limit", "at least 6291456 bytes"),
    (lambda s: s.update(labels={"": "x"}), "app.spec.labels", "non-empty"),
    (
        lambda s: s.update(ports=[{"container_port": 80}, {"container_port": 80}]),
        "app.spec.ports",
        "container port 80/tcp twice",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "message"), SPEC_ERRORS)
async def test_an_invalid_spec_names_its_field_and_touches_nothing(
    api: Api, mutate: Mutate, field: str, message: str
) -> None:
    old = await running_revision_1(api)
    calls = dict(api.driver.calls)
    body = replica(APP, 3, 2)
    mutate(body["app"]["spec"])
    status, answer = await api.call("POST", "/api/v1/replicas", json=body)
    assert status == 422, answer
    assert answer["error"].startswith(f"invalid {field}: "), answer
    assert message in answer["error"], answer
    assert "ContainerCreateOptions" not in answer["error"]
    assert answer["detail"][0]["field"] == field
    assert api.driver.find(NAME).id == old
    assert api.driver.find(NAME).state is ContainerState.RUNNING
    for method in ("container_create", "container_rename", "container_stop", "container_remove"):
        assert api.driver.calls[method] == calls.get(method, 0), method
    assert instance_revision(api) == 1


async def test_a_missing_image_is_404_naming_the_field_and_touches_nothing(api: Api) -> None:
    old = await running_revision_1(api)
    status, answer = await api.call(
        "POST", "/api/v1/replicas", json=replica(APP, 3, 2, image="local/typo:latest")
    )
    assert status == 404, answer
    assert answer["error"].startswith("app.spec.image: the engine has no image"), answer
    assert answer["detail"] == [
        {
            "field": "app.spec.image",
            "message": "No such image: local/typo:latest",
            "type": "not_found",
        }
    ]
    assert names(api.driver) == [NAME]
    assert api.driver.find(NAME).id == old
    assert instance_revision(api) == 1


def fail_start_of_new_containers(driver: FakeDriver, old_id: str) -> None:
    """Make the engine refuse to start any container but ``old_id``."""
    original = driver.container_start

    async def start(name_or_id: str) -> None:
        if driver.find(name_or_id).id != old_id:
            driver.calls["container_start"] += 1
            raise DriverError(500, "OCI runtime create failed: exec format error")
        await original(name_or_id)

    driver.container_start = start  # type: ignore[method-assign]


async def test_a_refused_start_rolls_back_to_the_old_revision(api: Api) -> None:
    old = await running_revision_1(api)
    fail_start_of_new_containers(api.driver, old)
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 2))
    assert status == 502, answer
    assert answer["error"] == (
        f"replica {NAME} revision 2 did not start: the engine refused its start; "
        "revision 1 keeps running"
    )
    assert answer["detail"]["message"] == "OCI runtime create failed: exec format error"
    assert names(api.driver) == [NAME]
    info = api.driver.find(NAME)
    assert (info.id, info.state) == (old, ContainerState.RUNNING)
    assert instance_revision(api) == 1
    listed = (await api.call("GET", "/api/v1/replicas"))[1]
    assert [r["revision"] for r in listed] == [1]


async def test_a_stopped_old_revision_is_put_back_stopped(api: Api) -> None:
    old = await running_revision_1(api)
    await api.driver.container_stop(NAME)
    fail_start_of_new_containers(api.driver, old)
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 2))
    assert status == 502, answer
    assert answer["error"].endswith("revision 1 is back, stopped as it was")
    info = api.driver.find(NAME)
    assert (info.id, info.state) == (old, ContainerState.STOPPED)


async def test_a_container_that_exits_at_once_is_an_error_not_201(api: Api) -> None:
    original = api.driver.container_start

    async def start_then_exit(name_or_id: str) -> None:
        await original(name_or_id)
        info = api.driver.find(name_or_id)
        api.driver._replace(info, state=ContainerState.STOPPED, status="exited", pid=0)

    api.driver.container_start = start_then_exit  # type: ignore[method-assign]
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert status == 502, answer
    assert "it exited right after start (state exited)" in answer["error"]
    assert answer["error"].endswith("no container is left")
    assert names(api.driver) == []
    assert instance_revision(api) is None
    assert (await api.call("GET", "/api/v1/replicas"))[1] == []


async def test_unchanged_only_while_the_container_runs_that_revision(api: Api) -> None:
    await running_revision_1(api)
    # Removed behind the exporter's back (the engine, an operator): re-posting recreates it.
    await api.driver.container_remove(NAME)
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert (status, answer["result"]) == (201, "created"), answer
    assert api.driver.find(NAME).labels["io.sysinner.revision"] == "1"
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert (status, answer["result"]) == (200, "unchanged")


async def test_after_a_failed_deploy_and_a_restart_both_revisions_can_be_posted(
    aiohttp_client: ClientFactory, tmp_path: Path, host_prefix: Path
) -> None:
    settings = make_settings(tmp_path, host_prefix=host_prefix)
    fake = FakeDriver()
    first = await start_api(aiohttp_client, settings, fake)
    old = await running_revision_1(first)
    bad = replica(APP, 3, 2, image="local/typo:latest")
    assert (await first.call("POST", "/api/v1/replicas", json=bad))[0] == 404

    second = await start_api(aiohttp_client, settings, fake, Clock())
    # The rollback (revision 1 again) finds revision 1 running.
    status, answer = await second.call("POST", "/api/v1/replicas", json=replica(APP, 3, 1))
    assert (status, answer["result"]) == (200, "unchanged")
    assert fake.find(NAME).id == old
    # Revision 2, once its image is there, deploys (it was never taken as deployed).
    await fake.image_pull("local/typo:latest")
    status, answer = await second.call("POST", "/api/v1/replicas", json=bad)
    assert (status, answer["result"]) == (200, "updated")
    assert names(fake) == [NAME]
    assert fake.find(NAME).labels["io.sysinner.revision"] == "2"


def deployed(revision: str) -> dict[str, str]:
    """Return the labels a replica deploy of NAME gives its containers."""
    return {"io.sysinner.app": APP, "io.sysinner.replica": "3", "io.sysinner.revision": revision}


def cut_deploy(fake: FakeDriver, leftovers: dict[str, ContainerState]) -> None:
    """Put the containers a deploy cut by a kill would leave."""
    for suffix, state in leftovers.items():
        # The old revision is 1 (as <name>, or as .prev once renamed); the new one is 2.
        new = suffix == ".next" or (suffix == "" and ".prev" in leftovers)
        rev = "2" if new else "1"
        fake.add(NAME + suffix, state, labels=deployed(rev))


CUT_DEPLOYS: list[tuple[str, dict[str, ContainerState], str, ContainerState]] = [
    (
        "next created",
        {"": ContainerState.RUNNING, ".next": ContainerState.STARTING},
        "1",
        ContainerState.RUNNING,
    ),
    (
        "old renamed",
        {".prev": ContainerState.RUNNING, ".next": ContainerState.STARTING},
        "1",
        ContainerState.RUNNING,
    ),
    (
        "new renamed",
        {".prev": ContainerState.RUNNING, "": ContainerState.STARTING},
        "1",
        ContainerState.RUNNING,
    ),
    (
        "old stopped",
        {".prev": ContainerState.STOPPED, "": ContainerState.STARTING},
        "1",
        ContainerState.RUNNING,
    ),
    (
        "new started",
        {".prev": ContainerState.STOPPED, "": ContainerState.RUNNING},
        "2",
        ContainerState.RUNNING,
    ),
    ("old stopped only", {".prev": ContainerState.STOPPED}, "1", ContainerState.RUNNING),
]


@pytest.mark.parametrize(
    ("what", "leftovers", "revision", "state"), CUT_DEPLOYS, ids=[c[0] for c in CUT_DEPLOYS]
)
async def test_a_cut_deploy_is_finished_or_undone_at_start(
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    host_prefix: Path,
    what: str,
    leftovers: dict[str, ContainerState],
    revision: str,
    state: ContainerState,
) -> None:
    fake = FakeDriver()
    cut_deploy(fake, leftovers)
    api = await start_api(aiohttp_client, make_settings(tmp_path, host_prefix=host_prefix), fake)
    assert names(fake) == [NAME], what
    info = fake.find(NAME)
    assert (info.labels["io.sysinner.revision"], info.state) == (revision, state), what
    # And the replica's next post acts on a clean slate.
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 3))
    assert (status, answer["result"]) == (200, "updated"), answer
    assert names(fake) == [NAME]


async def test_a_cut_deploy_is_repaired_by_the_next_post_when_start_could_not(
    aiohttp_client: ClientFactory, tmp_path: Path, host_prefix: Path
) -> None:
    fake = FakeDriver()
    cut_deploy(fake, {".prev": ContainerState.RUNNING, ".next": ContainerState.STARTING})
    fake.fail("container_list")  # the engine does not answer while the exporter starts
    api = await start_api(aiohttp_client, make_settings(tmp_path, host_prefix=host_prefix), fake)
    assert names(fake) == [NAME + ".next", NAME + ".prev"]
    fake.heal()
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 2))
    assert (status, answer["result"]) == (200, "updated"), answer
    assert names(fake) == [NAME]


async def test_delete_removes_the_leftovers_of_a_cut_deploy_too(api: Api) -> None:
    await running_revision_1(api)
    api.driver.add(NAME + ".next", ContainerState.STARTING, labels=deployed("2"))
    assert (await api.call("DELETE", f"/api/v1/containers/{NAME}"))[0] == 204
    assert names(api.driver) == []
    assert (await api.call("GET", "/api/v1/replicas"))[1] == []


async def test_a_leftover_name_the_exporter_did_not_make_is_never_touched(
    aiohttp_client: ClientFactory, tmp_path: Path, host_prefix: Path
) -> None:
    # Named like a cut deploy's leftovers, but made by someone else (no deploy's labels):
    # not the exporter's, so neither the start-up repair nor a DELETE removes or renames it.
    fake = FakeDriver()
    fake.add(NAME, labels=deployed("1"))
    fake.add(NAME + ".next", ContainerState.STARTING)
    fake.add(NAME + ".prev", ContainerState.STOPPED, labels={"io.sysinner.revision": "1"})
    api = await start_api(aiohttp_client, make_settings(tmp_path, host_prefix=host_prefix), fake)
    assert names(fake) == [NAME, NAME + ".next", NAME + ".prev"]
    assert fake.calls["container_rename"] == 0
    assert (await api.call("DELETE", f"/api/v1/containers/{NAME}"))[0] == 204
    assert names(fake) == [NAME + ".next", NAME + ".prev"]


async def test_a_revision_that_already_runs_is_adopted_not_restarted(
    aiohttp_client: ClientFactory, tmp_path: Path, host_prefix: Path
) -> None:
    fake = FakeDriver()
    # A deploy of revision 2 cut after its start: .prev removed, the instance file not written.
    running = fake.add(NAME, labels={"io.sysinner.revision": "2"})
    api = await start_api(aiohttp_client, make_settings(tmp_path, host_prefix=host_prefix), fake)
    status, answer = await api.call("POST", "/api/v1/replicas", json=replica(APP, 3, 2))
    assert (status, answer["result"]) == (200, "unchanged"), answer
    assert fake.find(NAME) == running
    assert fake.calls["container_create"] == fake.calls["container_start"] == 0
    assert instance_revision(api) == 2
    assert [r["revision"] for r in (await api.call("GET", "/api/v1/replicas"))[1]] == [2]


async def test_deploy_locks_are_dropped_once_no_deploy_needs_them(api: Api) -> None:
    for rep_id in range(40):
        body = replica(APP, rep_id, 1)
        assert (await api.call("POST", "/api/v1/replicas", json=body))[0] == 201
    assert (await api.call("DELETE", f"/api/v1/containers/{NAME}"))[0] == 204
    assert api.deployer._locks == {}
    assert api.deployer._lock_users == {}
