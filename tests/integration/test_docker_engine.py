"""The Docker driver's engine calls (ping, info, images) and endpoints, reachable or not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import pytest

from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import (
    DriverError,
    DriverTimeoutError,
    EngineUnreachableError,
    NotFoundError,
)
from tests.support.engine import (
    IDLE_CMD,
    TEST_IMAGE,
    ContainerFactory,
)
from tests.support.ports import free_port


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
