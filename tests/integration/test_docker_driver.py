"""The Docker driver's containers on the real engine (create, inspect, list, lifecycle, mounts).

The Docker SDK is the independent oracle. Stats, vpc networks and the engine's own calls
have files of their own: test_docker_stats.py, test_docker_vpc.py, test_docker_engine.py.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import aiohttp
import docker
import pytest

from exporter.confinement import MountPolicy
from exporter.drivers.docker import DockerDriver
from exporter.errors import (
    ConflictError,
    NotFoundError,
)
from exporter.models import ContainerCreateOptions, ContainerState, MountBind, PortBinding
from tests.support.engine import (
    IDLE_CMD,
    TEST_IMAGE,
    ContainerFactory,
    new_app_id,
    new_container_name,
    sdk_exec,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_for

MiB = 1024 * 1024


def is_running_pid(pid: int) -> bool:
    return Path(f"/proc/{pid}").is_dir()


@pytest.mark.engine
async def test_create_applies_every_option(
    driver: DockerDriver,
    make_container: ContainerFactory,
    sdk: docker.DockerClient,
    tmp_path: Path,
) -> None:
    (tmp_path / "hello.txt").write_text("hello from the host\n")
    host_port = free_port()
    name = new_container_name()
    before = time.time()
    info = await make_container(
        name=name,
        # httpd serves the bind mount on the published port: both are checked end to end.
        cmd=[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; httpd -p 8080 -h /data; while :; do sleep 1 & wait $!; done",
        ],
        env=["FOO=bar", "EMPTY="],
        labels={"io.sysinner.app": "test", "io.sysinner.replica": "1"},
        hostname="web1",
        cpu_limit=500,
        memory_limit=64 * MiB,
        ports=[PortBinding(host_ip="127.0.0.1", host_port=host_port, container_port=8080)],
        mounts=[{"host_path": str(tmp_path), "container_path": "/data", "read_only": True}],
        restart_policy="unless-stopped",
        dns_servers=["10.0.0.53"],
    )
    after = time.time()

    assert info.name == name
    assert info.state is ContainerState.RUNNING
    assert info.status == "running"
    assert info.pid > 0
    assert is_running_pid(info.pid)
    assert info.started >= info.created > 0
    # Unix seconds (truncated), between the calls: not nanoseconds, not another clock.
    assert int(before) <= info.started <= after
    assert info.image == TEST_IMAGE
    assert info.image_id.startswith("sha256:")
    assert info.labels == {"io.sysinner.app": "test", "io.sysinner.replica": "1"}
    assert info.cpu_limit == 500
    assert info.memory_limit == 64 * MiB
    assert info.binds == [f"{tmp_path}:/data:ro"]
    assert info.ports == {
        8080: PortBinding(host_ip="127.0.0.1", host_port=host_port, container_port=8080)
    }
    assert ipaddress.ip_address(info.ip).is_private

    # The engine's own view, read through the SDK.
    raw = sdk.api.inspect_container(name)
    assert raw["Id"] == info.id
    assert "FOO=bar" in raw["Config"]["Env"]
    assert "EMPTY=" in raw["Config"]["Env"]
    assert raw["Config"]["Hostname"] == "web1"
    assert raw["HostConfig"]["NanoCpus"] == 500_000_000
    assert raw["HostConfig"]["Memory"] == raw["HostConfig"]["MemorySwap"] == 64 * MiB
    assert raw["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert raw["HostConfig"]["Dns"] == ["10.0.0.53"]
    assert raw["Config"]["Entrypoint"][:2] == ["/bin/sh", "-c"]

    # The mount is there and read-only; the port answers on the host.
    code, out = sdk_exec(sdk, name, ["cat", "/data/hello.txt"])
    assert (code, out) == (0, "hello from the host\n")
    code, _ = sdk_exec(sdk, name, ["touch", "/data/new"])
    assert code != 0
    assert not (tmp_path / "new").exists()

    body = ""

    async def served() -> bool:
        nonlocal body
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{host_port}/hello.txt") as resp,
            ):
                body = await resp.text() if resp.status == 200 else ""
        except aiohttp.ClientError:
            return False
        return body == "hello from the host\n"

    await wait_for(served, 10, f"httpd on 127.0.0.1:{host_port}")

    listed = {c.name: c for c in await driver.container_list()}
    assert listed[name].id == info.id
    assert listed[name].state is ContainerState.RUNNING
    assert listed[name].labels == info.labels
    assert listed[name].ports[8080].host_port == host_port


@pytest.mark.engine
async def test_lifecycle_round_trip_is_idempotent(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    name = new_container_name()
    created = await make_container(name=name, start=False)
    assert created.state is ContainerState.CREATED
    assert (created.pid, created.started) == (0, 0)

    # A never-started container has no sample (the engine answers zeros at Go's zero time).
    with pytest.raises(ConflictError, match="not running"):
        await driver.container_stats(name)

    await driver.container_start(name)
    await driver.container_start(name)  # already running: success
    running = await driver.container_inspect(name)
    assert running.state is ContainerState.RUNNING
    assert running.pid > 0
    assert running.id == created.id

    await driver.container_stop(name)
    # IDLE_CMD exits 0 on SIGTERM: the stop ended with it, not with the SIGKILL (137)
    # the engine sends once the grace period is over. The exit code says so on any
    # machine; a stopwatch around the call would only say how fast this one is.
    assert sdk.api.inspect_container(name)["State"]["ExitCode"] == 0
    await driver.container_stop(name)  # already stopped: success
    stopped = await driver.container_inspect(name)
    assert stopped.state is ContainerState.STOPPED
    assert stopped.status == "exited"
    assert stopped.pid == 0
    with pytest.raises(ConflictError, match="not running"):
        await driver.container_stats(name)

    await driver.container_start(name)  # a stopped one starts again
    assert (await driver.container_inspect(name)).state is ContainerState.RUNNING

    await driver.container_remove(name)  # running: forced
    await driver.container_remove(name)  # missing: success
    await driver.container_stop(name)  # missing: success
    with pytest.raises(NotFoundError):
        await driver.container_inspect(name)
    with pytest.raises(NotFoundError):
        await driver.container_start(name)
    with pytest.raises(NotFoundError):
        await driver.container_stats(name)
    assert name not in {c.name for c in await driver.container_list()}


@pytest.mark.engine
@pytest.mark.parametrize("name", ["", ".", "..", "../../info", "x?all=1", "json", "a/b"])
async def test_names_that_no_container_has_are_not_found(driver: DockerDriver, name: str) -> None:
    # "." once reached the list endpoint (and failed outside DriverError).
    with pytest.raises(NotFoundError):
        await driver.container_inspect(name)
    with pytest.raises(NotFoundError):
        await driver.container_stats(name)


@pytest.mark.engine
async def test_a_name_cannot_reach_another_endpoint(
    driver: DockerDriver, sdk: docker.DockerClient
) -> None:
    # The engine decodes %2F, cleans the path and redirects: "../images/x" on a
    # forced DELETE once removed the image x.
    victim = f"local/victim-{new_app_id()}:latest"
    sdk.images.get(TEST_IMAGE).tag(victim)
    try:
        await driver.container_remove(f"../images/{victim}")  # no such container: success
        await driver.container_stop(f"../images/{victim}")
        with pytest.raises(NotFoundError):
            await driver.container_start(f"../images/{victim}")
        assert victim in {t for i in await driver.image_list() for t in i.repo_tags}
    finally:
        sdk.images.remove(victim)


@pytest.mark.engine
async def test_the_engines_own_slash_name_works(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    info = await make_container()
    assert (await driver.container_inspect("/" + info.name)).id == info.id
    await driver.container_stop("/" + info.name)
    assert (await driver.container_inspect(info.id)).state is ContainerState.STOPPED


@pytest.mark.engine
async def test_create_with_a_name_in_use_conflicts(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    name = new_container_name()
    first = await make_container(name=name, start=False)
    with pytest.raises(ConflictError) as err:
        await make_container(name=name, start=False)
    assert err.value.status == 409
    assert name in err.value.message
    # The name still belongs to the first container, untouched.
    assert (await driver.container_inspect(name)).id == first.id


@pytest.mark.engine
async def test_create_from_a_missing_image_is_not_found(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    name = new_container_name()
    with pytest.raises(NotFoundError) as err:
        await make_container(name=name, image="local/no-such-image:latest", start=False)
    assert err.value.status == 404
    assert "no-such-image" in err.value.message
    with pytest.raises(NotFoundError):
        await driver.container_inspect(name)


@pytest.mark.engine
async def test_rename_keeps_a_running_container_running(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    name = new_container_name()
    running = await make_container(name=name)
    taken = await make_container(name=f"{name}.prev", start=False)
    with pytest.raises(ConflictError) as err:
        await driver.container_rename(running.id, f"{name}.prev")
    assert err.value.status == 409
    await driver.container_remove(taken.id)
    await driver.container_rename(running.id, f"{name}.prev")
    renamed = await driver.container_inspect(f"{name}.prev")
    assert (renamed.id, renamed.pid, renamed.state) == (running.id, running.pid, running.state)
    with pytest.raises(NotFoundError):
        await driver.container_inspect(name)
    await driver.container_rename(f"{name}.prev", name)
    assert (await driver.container_inspect(name)).id == running.id
    with pytest.raises(NotFoundError):
        await driver.container_rename(f"{name}.missing", f"{name}.other")


@pytest.mark.engine
async def test_mount_with_uid_gid_chowns_the_host_dir(
    driver: DockerDriver, sdk: docker.DockerClient, tmp_path: Path
) -> None:
    # The driver only mounts; the mount policy makes and chowns, on the fd of its walk.
    home = tmp_path / "pod" / "home"  # missing: made, then chowned
    only_gid = tmp_path / "shared"
    only_gid.mkdir()
    name = new_container_name()
    policy = MountPolicy([str(tmp_path)])
    opts = ContainerCreateOptions(
        name=name,
        image=TEST_IMAGE,
        cmd=IDLE_CMD,
        mounts=[
            MountBind(host_path=str(home), container_path="/home", uid=2048, gid=3072),
            MountBind(host_path=str(only_gid), container_path="/shared", gid=4096),
        ],
    )
    try:
        await policy.create(driver, opts)
        await driver.container_start(name)
        st = home.stat()
        assert (st.st_uid, st.st_gid) == (2048, 3072)
        st = only_gid.stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), 4096)  # uid 0 means unchanged
        code, out = sdk_exec(sdk, name, ["stat", "-c", "%u:%g", "/home"])
        assert (code, out.strip()) == (0, "2048:3072")
    finally:
        await driver.container_remove(name)
