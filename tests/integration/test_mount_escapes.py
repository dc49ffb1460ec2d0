"""Issue 12's host escapes, attacked on the real engine as a token holder or a tenant would.

Each test plays the attack that gave the host away and asserts that nothing
outside the pod base is read, written, chowned or mounted: a marker file in
a dir of the test's own outside every prefix stands for the host's ``/etc``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.naming import container_name
from exporter.paths import SYSINNER_DIR
from exporter.wiring import wire
from tests.support.api import TOKEN, ClientFactory, authed_call, replica
from tests.support.engine import TEST_IMAGE, new_app_id
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

ININIT = "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done\n"
#: How many creates race the swapping container in the chown test, per variant.
CHOWN_TRIES = 40


@dataclass
class Attack:
    """The app wired as serve wires it on the real engine, and what the test made."""

    client: TestClient[web.Request, web.Application]
    driver: DockerDriver
    settings: Settings
    outside: Path
    marker: str
    names: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> Path:
        """Return the pod base, the only mount prefix here."""
        return self.settings.pod_base_dir

    def name(self) -> str:
        """Return a fresh managed name, removed after the test."""
        made = container_name(new_app_id(), 1)
        self.names.append(made)
        return made

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Send an authenticated request; return (status, decoded JSON or None)."""
        return await authed_call(self.client, method, path, **kwargs)

    async def create(self, name: str, *mounts: dict[str, Any], **opts: Any) -> tuple[int, Any]:
        """POST a create of ``name`` with ``mounts``."""
        body = {"name": name, "image": TEST_IMAGE, "mounts": list(mounts), **opts}
        return await self.call("POST", "/api/v1/containers", json=body)


@pytest.fixture
def sdk(engine: None) -> Iterator[docker.DockerClient]:
    """Return a Docker SDK client (the independent oracle), closed afterwards."""
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def attack(
    engine: None, aiohttp_client: ClientFactory, tmp_path: Path
) -> AsyncIterator[Attack]:
    """The app on the real engine, its pod base and host prefix under ``tmp_path``."""
    host_prefix = tmp_path / "innerstack"
    (host_prefix / "cmd" / "inagent").mkdir(parents=True)
    (host_prefix / "cmd" / "inagent" / "ininit").write_text(ININIT)
    (host_prefix / "bin").mkdir()
    for arch in ("amd64", "arm64"):
        (host_prefix / "bin" / f"inagent-linux-{arch}").write_bytes(b"#!/bin/sh\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = f"host-secret-{secrets.token_hex(8)}"
    (outside / "marker").write_text(marker)
    settings = Settings(
        api_token=TOKEN,
        state_dir=tmp_path / "state",
        pod_base_dir=tmp_path / "pods",
        host_prefix=host_prefix,
    )
    driver = DockerDriver(stop_grace=1)
    wired = wire(settings, driver=driver, poll_in_background=False)
    made = Attack(await aiohttp_client(wired.app), driver, settings, outside, marker)
    try:
        yield made
    finally:
        cleaner = DockerDriver()
        try:
            for name in made.names:
                await cleaner.container_remove(name)
        finally:
            await cleaner.close()
        # Containers ran as root: their files may be root's, the test is root too.
        shutil.rmtree(settings.pod_base_dir, ignore_errors=True)


def _logs(sdk: docker.DockerClient, name: str) -> str:
    return bytes(sdk.containers.get(name).logs()).decode(errors="replace")


def _restarts(sdk: docker.DockerClient, name: str) -> int:
    return int(sdk.api.inspect_container(name)["RestartCount"])


async def test_a_mount_checked_at_create_cannot_be_redirected_before_a_start(
    attack: Attack, sdk: docker.DockerClient
) -> None:
    """Item 1: B mounts x/d ro; A mounts x rw and swaps d for a symlink to the host."""
    victim_b, attacker_a = attack.name(), attack.name()
    # B shows its mount at every start and exits 3, so the engine's own restart
    # policy starts it again and again (each start resolves the bind anew).
    status, body = await attack.create(
        victim_b,
        {
            "host_path": str(attack.prefix / "x" / "d"),
            "container_path": "/mnt/d",
            "read_only": True,
        },
        cmd=["/bin/sh", "-c", "echo start; cat /mnt/d/marker; sleep 0.5; exit 3"],
        restart_policy="on-failure",
    )
    assert status == 201, body
    swap = f"rm -rf /x/d && ln -s {attack.outside} /x/d && echo swapped; sleep 600"
    status, body = await attack.create(
        attacker_a,
        {"host_path": str(attack.prefix / "x"), "container_path": "/x"},
        cmd=["/bin/sh", "-c", swap],
    )
    assert status < 500, body
    if status == 201:
        assert (await attack.call("POST", f"/api/v1/containers/{attacker_a}/start"))[0] == 200

        async def swapped() -> bool:
            return "swapped" in _logs(sdk, attacker_a)

        await wait_for(swapped, 15, "the attacker to swap x/d")
    else:
        assert status == 403, body
        assert str(attack.prefix / "x" / "d") in body["error"], body

    # Started through the API, then by the engine's restart policy, then by
    # the engine's own restart (as a reboot or `docker restart` would).
    status, body = await attack.call("POST", f"/api/v1/containers/{victim_b}/start")
    assert status in (200, 409), body

    async def restarted_twice() -> bool:
        return _restarts(sdk, victim_b) >= 2

    await wait_for(restarted_twice, 30, "the engine to restart B twice")
    sdk.containers.get(victim_b).restart(timeout=1)

    async def started_again() -> bool:
        return _logs(sdk, victim_b).count("start") >= 4

    await wait_for(started_again, 30, "B's fourth start")
    assert attack.marker not in _logs(sdk, victim_b)
    assert not (attack.prefix / "x" / "d").is_symlink()


def _swapper_cmd(where: str, target: Path) -> list[str]:
    """Return a loop swapping ``where`` between a dir and a symlink to ``target``."""
    loop = (
        f"while :; do rm -rf {where}; mkdir {where}; rm -rf {where}; ln -s {target} {where}; done"
    )
    return ["/bin/sh", "-c", f"mkdir -p {os.path.dirname(where)}; {loop}"]


@pytest.mark.parametrize("swapper_mount", ["y through the API", "the prefix's parent, foreign"])
async def test_chown_never_follows_a_symlink_swapped_in_during_the_check(
    attack: Attack, sdk: docker.DockerClient, swapper_mount: str, tmp_path: Path
) -> None:
    """Item 2: y/d swaps between a dir and a symlink to a host file while creates chown it."""
    victim = attack.outside / "victim"
    victim.write_text("precious")
    os.chmod(victim, 0o600)
    before = victim.stat()
    swapper = attack.name()
    if swapper_mount.startswith("y"):
        status, body = await attack.create(
            swapper,
            {"host_path": str(attack.prefix / "y"), "container_path": "/y"},
            cmd=_swapper_cmd("/y/d", victim),
        )
        assert status == 201, body
        assert (await attack.call("POST", f"/api/v1/containers/{swapper}/start"))[0] == 200
    else:
        # Not through the API: a container the operator made that can write
        # above the prefix. Only the walk itself stands between it and the host.
        sdk.containers.run(
            TEST_IMAGE,
            _swapper_cmd("/t/pods/y/d", victim),
            name=swapper,
            detach=True,
            volumes={str(tmp_path): {"bind": "/t", "mode": "rw"}},
        )

    async def swapping() -> bool:
        return (attack.prefix / "y" / "d").is_symlink() or (attack.prefix / "y" / "d").is_dir()

    await wait_for(swapping, 15, "the swapper to start swapping")
    answers: dict[int, int] = {}
    for _ in range(CHOWN_TRIES):
        name = attack.name()
        status, body = await attack.create(
            name,
            {
                "host_path": str(attack.prefix / "y" / "d"),
                "container_path": "/d",
                "uid": 4242,
                "gid": 4242,
            },
        )
        answers[status] = answers.get(status, 0) + 1
        # 400: the foreign swapper removed d between the walk and the engine's own check.
        assert status in (201, 400, 403), body
        after = victim.stat()
        assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
            before.st_uid,
            before.st_gid,
            0o600,
        ), f"try {sum(answers.values())}: the host file was chowned"
        if status == 201:
            await attack.driver.container_remove(name)
    if swapper_mount.startswith("y"):
        # The swapper's writable view of y is on d's resolution path: never allowed.
        assert answers == {403: CHOWN_TRIES}
    else:
        # Some tries met a dir and were chowned (that dir, not the file), some met a link.
        assert answers.get(403, 0) > 0, answers
    assert victim.read_text() == "precious"


async def _deploy(attack: Attack, app_id: str, revision: int) -> tuple[int, Any]:
    return await attack.call(
        "POST", "/api/v1/replicas", json=replica(app_id, 1, revision=revision, image=TEST_IMAGE)
    )


async def _running(attack: Attack, name: str) -> None:
    async def running() -> bool:
        return (await attack.driver.container_inspect(name)).state.value == "running"

    await wait_for(running, 15, f"{name} running its ininit")


def _tenant(sdk: docker.DockerClient, name: str, script: str) -> None:
    result = sdk.containers.get(name).exec_run(["/bin/sh", "-c", script])
    assert result.exit_code == 0, result.output


async def test_a_tenant_cannot_aim_the_deploys_temporary_files_at_the_host(
    attack: Attack, sdk: docker.DockerClient
) -> None:
    """Item 3a: symlinks planted where the next deploy writes its temporary files."""
    app_id = new_app_id()
    name = container_name(app_id, 1)
    attack.names.append(name)
    victim = attack.outside / "victim"
    victim.write_text("precious")
    os.chmod(victim, 0o600)
    status, body = await _deploy(attack, app_id, 1)
    assert status == 201, body
    await _running(attack, name)
    plant = " && ".join(
        f"ln -sf {victim} {SYSINNER_DIR}/{planted}"
        for planted in (
            "ininit.tmp",
            "inagent.tmp",
            "ininit",
            "app_instance.json",
            "app_instance.json.tmp",
            ".app_instance.json.tmp",
            ".ininit.tmp",
            ".inagent.tmp",
        )
    )
    _tenant(sdk, name, plant)
    status, body = await _deploy(attack, app_id, 2)
    assert status == 200, body
    assert body["result"] == "updated"
    await _running(attack, name)
    after = victim.stat()
    assert victim.read_text() == "precious"
    assert stat.S_IMODE(after.st_mode) == 0o600
    seen = sdk.containers.get(name).exec_run(["cat", f"{SYSINNER_DIR}/app_instance.json"])
    assert json.loads(seen.output)["app"]["deploy"]["revision"] == 2


async def test_a_tenant_cannot_point_the_sysinner_dir_at_the_host(
    attack: Attack, sdk: docker.DockerClient
) -> None:
    """Item 3b: /home/action renamed, a new action/.sysinner made a symlink to a host dir."""
    app_id = new_app_id()
    name = container_name(app_id, 1)
    attack.names.append(name)
    target = attack.outside / "hostdir"
    target.mkdir()
    status, body = await _deploy(attack, app_id, 1)
    assert status == 201, body
    await _running(attack, name)
    _tenant(
        sdk,
        name,
        f"mv /home/action /home/action.moved && mkdir /home/action && "
        f"ln -s {target} /home/action/.sysinner",
    )
    status, body = await _deploy(attack, app_id, 2)
    assert (status, body["result"]) == (200, "updated"), body
    await _running(attack, name)
    assert os.listdir(target) == []
    # The new revision runs from the pod's own sysinner dir, whatever the tenant did to its home.
    seen = sdk.containers.get(name).exec_run(["cat", f"{SYSINNER_DIR}/app_instance.json"])
    assert json.loads(seen.output)["app"]["deploy"]["revision"] == 2
    sources = [m["Source"] for m in sdk.api.inspect_container(name)["Mounts"]]
    assert all(not s.startswith(str(attack.outside)) for s in sources), sources
    assert all(s.startswith(str(attack.prefix) + "/") for s in sources), sources
