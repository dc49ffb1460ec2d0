"""The Docker driver against the real engine; the Docker SDK is the independent oracle."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import random
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from exporter.confinement import MountPolicy
from exporter.drivers import docker_json as dj
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import (
    ConflictError,
    DriverError,
    DriverTimeoutError,
    EngineUnreachableError,
    NotFoundError,
)
from exporter.models import ContainerCreateOptions, ContainerState, MountBind, PortBinding
from exporter.naming import container_name
from tests.support.cpu_burn import TICK_NS, burn_own_cpu
from tests.support.engine import IDLE_CMD, TEST_IMAGE, TEST_VPC_POOL, ContainerFactory, new_app_id
from tests.support.ports import free_port
from tests.support.requirements import require
from tests.support.waiting import wait_for

MiB = 1024 * 1024
#: CPU the stats test's worker burns, in clock ticks of 10 ms.
BURN_TICKS = 10


def fresh_name(n: int = 1) -> str:
    return container_name(new_app_id(), n)


def engine_block_device(sdk: docker.DockerClient) -> str:
    """Return the block device that holds the engine's data root (where containers write)."""
    root = sdk.info()["DockerRootDir"]
    best, device = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point, source = fields[4], fields[fields.index("-") + 2]
        inside = root == mount_point or root.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, device = mount_point, source
    return device


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def is_running_pid(pid: int) -> bool:
    return Path(f"/proc/{pid}").is_dir()


def free_subnet(sdk: docker.DockerClient) -> str:
    """Return a /24 in the tests' vpc pool that no engine network overlaps."""
    taken = [
        ipaddress.ip_network(cfg["Subnet"])
        for net in sdk.api.networks()
        for cfg in ((net.get("IPAM") or {}).get("Config") or [])
        if cfg.get("Subnet")
    ]
    while True:
        pool = ipaddress.ip_network(TEST_VPC_POOL)
        subnet = random.choice(list(pool.subnets(new_prefix=24)))
        if not any(subnet.overlaps(t) for t in taken if t.version == 4):
            return str(subnet)


def exec_out(sdk: docker.DockerClient, name: str, cmd: list[str]) -> tuple[int, str]:
    result = sdk.containers.get(name).exec_run(cmd)
    return int(result.exit_code), result.output.decode(errors="replace")


# -- create, inspect, list ---------------------------------------------------


@pytest.mark.engine
async def test_create_applies_every_option(
    driver: DockerDriver,
    make_container: ContainerFactory,
    sdk: docker.DockerClient,
    tmp_path: Path,
) -> None:
    (tmp_path / "hello.txt").write_text("hello from the host\n")
    host_port = free_port()
    name = fresh_name()
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
    code, out = exec_out(sdk, name, ["cat", "/data/hello.txt"])
    assert (code, out) == (0, "hello from the host\n")
    code, _ = exec_out(sdk, name, ["touch", "/data/new"])
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
    name = fresh_name()
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
    name = fresh_name()
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
    name = fresh_name()
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
    name = fresh_name()
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
    name = fresh_name()
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
        code, out = exec_out(sdk, name, ["stat", "-c", "%u:%g", "/home"])
        assert (code, out.strip()) == (0, "2048:3072")
    finally:
        await driver.container_remove(name)


@pytest.mark.engine
async def test_vpc_address_and_shared_network(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    subnet = free_subnet(sdk)
    net = ipaddress.ip_network(subnet)
    first_ip, second_ip = str(net.network_address + 10), str(net.network_address + 11)
    names = [fresh_name(1), fresh_name(2)]
    try:
        a = await make_container(name=names[0], vpc_subnet=subnet, vpc_ipv4=first_ip)
        b = await make_container(name=names[1], vpc_subnet=subnet, vpc_ipv4=second_ip)
        assert (a.ip, b.ip) == (first_ip, second_ip)

        code, out = exec_out(sdk, names[0], ["ip", "-4", "addr", "show"])
        assert code == 0
        assert f"inet {first_ip}/24" in out

        # One network for the subnet, made by the driver and shared by both.
        same = [
            n
            for n in sdk.api.networks()
            if any(c.get("Subnet") == subnet for c in (n.get("IPAM") or {}).get("Config") or [])
        ]
        assert [n["Name"] for n in same] == [dj.vpc_network_name(subnet)]
        for name in names:
            nets = sdk.api.inspect_container(name)["NetworkSettings"]["Networks"]
            assert list(nets) == [dj.vpc_network_name(subnet)]

        # They reach each other on it.
        code, out = exec_out(sdk, names[1], ["ping", "-c", "1", "-W", "2", first_ip])
        assert code == 0, out
    finally:
        # Containers first: a network with endpoints cannot be removed.
        for name in names:
            await driver.container_remove(name)
        for n in sdk.networks.list(names=[dj.vpc_network_name(subnet)]):
            n.remove()
    assert not sdk.networks.list(names=[dj.vpc_network_name(subnet)])


@pytest.mark.engine
async def test_vpc_uses_an_existing_network_of_that_subnet(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    subnet = free_subnet(sdk)
    own = sdk.networks.create(
        f"test-net-{new_app_id()}",
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]),
    )
    name = fresh_name()
    try:
        address = str(ipaddress.ip_network(subnet).network_address + 20)
        info = await make_container(name=name, vpc_subnet=subnet, vpc_ipv4=address)
        assert info.ip == address
        nets = sdk.api.inspect_container(name)["NetworkSettings"]["Networks"]
        assert list(nets) == [own.name]
        assert not sdk.networks.list(names=[dj.vpc_network_name(subnet)])
    finally:
        await driver.container_remove(name)
        own.remove()


# -- stats -------------------------------------------------------------------


@pytest.mark.engine
async def test_stats_count_cpu_block_io_and_network(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    device = engine_block_device(sdk)
    require(
        is_block_device(device),
        f"a block device under the engine's data root ({device!r})",
        needs="engine",
    )
    # The receiver, on the default bridge, reads one connection to the end. Its nc
    # gets a stdin that never ends: at end of stdin busybox nc would hang up early.
    receiver = await make_container(
        cmd=[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; sleep 100000 | nc -l -p 5000 >/dev/null; "
            "while :; do sleep 1 & wait $!; done",
        ]
    )
    assert receiver.ip
    # The worker writes 4 MiB past the page cache, burns BURN_TICKS of CPU (a figure
    # reached, not a fixed loop whose cost differs by machine), and sends 1 MiB to the
    # receiver. Block I/O lists stay empty on cgroup v1 until some container has a
    # throttle, and the model has no throttle option: the SDK makes this one.
    script = (
        "trap 'exit 0' TERM; "
        "(until dd if=/dev/zero bs=1024 count=1024 2>/dev/null | nc $PEER 5000; "
        "do sleep 1; done) & "
        "dd if=/dev/zero of=/tmp/blob bs=1M count=4 oflag=direct; "
        f"{burn_own_cpu(BURN_TICKS)}; "
        "while :; do sleep 1 & wait $!; done"
    )
    worker = fresh_name(9)
    sdk.containers.create(
        TEST_IMAGE,
        ["/bin/sh", "-c", script],
        name=worker,
        environment={"PEER": receiver.ip},
        device_write_bps=[{"Path": device, "Rate": 100 * MiB}],
    )
    try:
        await driver.container_start(worker)
        # Counters once everything is done: cpu time, the 4 MiB, the 1 MiB.
        last: dict[str, Any] = {}

        async def worked() -> bool:
            s = await driver.container_stats(worker)
            last.update(dataclasses.asdict(s))
            return (
                s.cpu_total_usage > (BURN_TICKS - 1) * TICK_NS
                and s.blk_write_bytes >= 4 * MiB
                and s.blk_write_ops >= 4
                and s.net_tx_bytes > 1 * MiB
                and s.net_rx_bytes > 0
            )

        await wait_for(worked, 30, "the worker's counters to move")
        asked_at = time.time()
        s = await driver.container_stats(worker)
        answered_at = time.time()
        assert s.memory_usage > 0
        assert s.cpu_user_usage + s.cpu_system_usage > 0
        # The one-shot sample is taken during the call, in unix seconds.
        assert asked_at <= s.time <= answered_at
        # Counters never go backwards.
        for key in ("cpu_total_usage", "blk_write_bytes", "net_tx_bytes"):
            assert getattr(s, key) >= last[key]

        async def received() -> bool:
            r = await driver.container_stats(receiver.name)
            return r.net_rx_bytes > 1 * MiB and r.net_tx_bytes > 0

        await wait_for(received, 15, "the receiver to count the 1 MiB")
    finally:
        await driver.container_remove(worker)
    with pytest.raises(NotFoundError):
        await driver.container_inspect(worker)


# -- engine, images ----------------------------------------------------------


@pytest.mark.engine
async def test_ping_and_info(driver: DockerDriver, sdk: docker.DockerClient) -> None:
    await driver.ping()
    info = await driver.info()
    version = sdk.version()
    assert info.name == driver.name() == "docker"
    assert info.version == version["Version"]
    assert info.api_version == version["ApiVersion"]
    assert info.arch == version["Arch"]
    assert info.kernel == sdk.info()["KernelVersion"]
    assert info.image_num >= 1


@pytest.mark.engine
async def test_image_list_sees_the_test_image(
    driver: DockerDriver, sdk: docker.DockerClient
) -> None:
    images = await driver.image_list()
    mine = [i for i in images if TEST_IMAGE in i.repo_tags]
    assert len(mine) == 1
    assert mine[0].id == sdk.images.get(TEST_IMAGE).id
    assert mine[0].size > 0
    assert mine[0].created > 0


@pytest.mark.engine
@pytest.mark.registry
async def test_image_pull_from_a_local_registry(
    driver: DockerDriver, sdk: docker.DockerClient, registry: str
) -> None:
    image = f"{registry}/test/busybox:latest"
    try:
        await driver.image_pull(image)
        tags = {t for i in await driver.image_list() for t in i.repo_tags}
        assert image in tags
        assert sdk.images.get(image).id == sdk.images.get(TEST_IMAGE).id
        # The default tag is latest.
        await driver.image_pull(f"{registry}/test/busybox")
    finally:
        sdk.images.remove(image)


@pytest.mark.engine
@pytest.mark.registry
async def test_image_pull_of_an_unknown_repository_is_not_found(
    driver: DockerDriver, registry: str
) -> None:
    with pytest.raises(NotFoundError):
        await driver.image_pull(f"{registry}/test/no-such-repo:latest")


@pytest.mark.engine
async def test_image_pull_from_an_unreachable_registry_fails_fast(driver: DockerDriver) -> None:
    image = f"127.0.0.1:{free_port()}/nothing:latest"
    t0 = time.monotonic()
    with pytest.raises(DriverError) as err:
        await driver.image_pull(image)
    assert time.monotonic() - t0 < 30
    assert err.value.message


async def test_unreachable_engine_is_reported_fast(tmp_path: Path) -> None:
    for host in ("unix:///nonexistent.sock", f"unix://{tmp_path}/docker.sock"):
        d = DockerDriver(DockerEndpoint.parse(host), timeout=10)
        try:
            t0 = time.monotonic()
            with pytest.raises(EngineUnreachableError, match="cannot connect"):
                await d.ping()
            with pytest.raises(EngineUnreachableError):
                await d.container_list()
            with pytest.raises(EngineUnreachableError):
                await d.container_stats("app-abc123def456-0001")
            assert time.monotonic() - t0 < 10
        finally:
            await d.close()


async def test_an_engine_that_never_answers_times_out(tmp_path: Path) -> None:
    sock = tmp_path / "silent.sock"
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, keep the connection

    server = await asyncio.start_unix_server(silent, path=str(sock))
    d = DockerDriver(DockerEndpoint.parse(f"unix://{sock}"), timeout=0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(DriverTimeoutError, match=r"no answer within 0\.3s"):
            await d.ping()
        with pytest.raises(DriverTimeoutError):
            await d.container_list()
        assert time.monotonic() - t0 < 5
    finally:
        await d.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_an_engine_that_hangs_up_is_unreachable(tmp_path: Path) -> None:
    sock = tmp_path / "rude.sock"

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_unix_server(hang_up, path=str(sock))
    d = DockerDriver(DockerEndpoint.parse(f"unix://{sock}"), timeout=5)
    try:
        with pytest.raises(EngineUnreachableError, match="lost the Docker Engine"):
            await d.ping()
    finally:
        await d.close()
        server.close()
        await server.wait_closed()


async def test_tcp_engine_that_refuses_is_unreachable() -> None:
    d = DockerDriver(DockerEndpoint.parse(f"tcp://127.0.0.1:{free_port()}"), timeout=10)
    try:
        t0 = time.monotonic()
        with pytest.raises(EngineUnreachableError):
            await d.ping()
        assert time.monotonic() - t0 < 10
    finally:
        await d.close()


@pytest.mark.engine
async def test_concurrent_calls_share_one_driver(
    driver: DockerDriver, make_container: ContainerFactory
) -> None:
    made = await asyncio.gather(*(make_container(cmd=IDLE_CMD) for _ in range(4)))
    stats = await asyncio.gather(*(driver.container_stats(c.id) for c in made))
    assert all(s.memory_usage > 0 for s in stats)
    names = {c.name for c in await driver.container_list()}
    assert {c.name for c in made} <= names


# -- endpoints ---------------------------------------------------------------


def test_endpoint_unix() -> None:
    ep = DockerEndpoint.parse("unix:///var/run/docker.sock")
    assert ep.socket_path == "/var/run/docker.sock"
    assert ep.ssl_context is None
    assert DockerEndpoint.parse("unix://run/docker.sock").socket_path == "run/docker.sock"


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("tcp://10.0.0.5:2375", "http://10.0.0.5:2375"),
        ("tcp://docker.example", "http://docker.example:2375"),
        ("tcp://127.0.0.1:12345", "http://127.0.0.1:12345"),
        ("http://127.0.0.1:2375", "http://127.0.0.1:2375"),
        ("tcp://[::1]:2375", "http://[::1]:2375"),
    ],
)
def test_endpoint_tcp(host: str, base_url: str) -> None:
    ep = DockerEndpoint.parse(host)
    assert ep.base_url == base_url
    assert ep.socket_path is None
    assert ep.ssl_context is None


def test_endpoint_from_env() -> None:
    assert DockerEndpoint.from_env({}).socket_path == "/var/run/docker.sock"
    ep = DockerEndpoint.from_env({"DOCKER_HOST": "tcp://10.1.2.3:4567"})
    assert ep.base_url == "http://10.1.2.3:4567"


def test_endpoint_tls_needs_the_certificates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DOCKER_CERT_PATH.*ca\.pem"):
        DockerEndpoint.parse("tcp://10.0.0.5", tls_verify=True, cert_path=str(tmp_path))


@pytest.mark.parametrize(
    "host",
    [
        "ssh://user@host",
        "npipe:////./pipe/docker_engine",
        "/var/run/docker.sock",
        "unix://",
        "tcp://",
    ],
)
def test_endpoint_refuses_what_it_cannot_reach(host: str) -> None:
    with pytest.raises(ValueError, match="DOCKER_HOST"):
        DockerEndpoint.parse(host)
