"""Shared fixtures: the real engine, factories that always clean up, helpers to wait.

Tests that need the real engine or promtool use :func:`require`, which fails
under ``CI=true`` (CI must never be green while testing nothing real) and
skips elsewhere with the reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from exporter.drivers.base import Driver
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.models import ContainerCreateOptions, ContainerInfo
from exporter.naming import NamingScheme, container_name
from exporter.poller import Poller
from exporter.sources.base import DriverStatsSource

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "local/busybox:latest"
#: busybox sh as PID 1 ignores SIGTERM; this loop exits on it, so stops are fast.
IDLE_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Hypothesis fails an example that runs past 200 ms, and a run whose data
# takes long to generate: both time this machine, not the code under test.
settings.register_profile(
    "any-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("any-machine")


def require(condition: bool, what: str) -> None:
    """Fail under CI, skip elsewhere, when something real the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true forbids skipping")
    pytest.skip(f"{what} is missing (run `make engine` / `make system-deps`)")


def engine_answers() -> bool:
    """Return True when a Docker engine answers at DOCKER_HOST (default socket)."""
    endpoint = DockerEndpoint.from_env()
    if endpoint.socket_path is None:
        return True  # a TCP engine: let the test itself find out
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(endpoint.socket_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def poller_on(driver: Driver, naming: NamingScheme | None = None, **options: Any) -> Poller:
    """Return a Poller that reads stats through ``driver`` itself, counting no processes.

    ``options`` go to the Poller as they are (``process_counter`` included).
    """
    return Poller(
        driver,
        DriverStatsSource(driver),
        naming=naming or NamingScheme(),
        **{"process_counter": None, **options},
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_app_id() -> str:
    """Return a random app id valid in the default naming scheme."""
    return secrets.token_hex(6)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float,  # noqa: ASYNC109 - a polling deadline, not a cancellable wait
    what: str,
    every: float = 0.1,
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


@pytest.fixture
def engine() -> None:
    """Require a real Docker engine."""
    require(engine_answers(), "a Docker engine")


#: The vpc subnet pool of the tests' drivers (free_subnet picks /24s inside it).
TEST_VPC_POOL = "10.96.0.0/11"


@pytest.fixture
async def driver(engine: None) -> AsyncIterator[DockerDriver]:
    """Return a DockerDriver on the real engine, closed afterwards."""
    d = DockerDriver(stop_grace=3, vpc_pool=[TEST_VPC_POOL])
    try:
        yield d
    finally:
        await d.close()


ContainerFactory = Callable[..., Awaitable[ContainerInfo]]


@pytest.fixture
async def make_container(driver: DockerDriver) -> AsyncIterator[ContainerFactory]:
    """Return a factory of containers on the real engine; all are removed afterwards.

    ``await make_container(name=None, start=True, **create_options)``: the
    name defaults to a fresh managed name; ``cmd`` to an idle loop that
    exits on SIGTERM.
    """
    made: list[str] = []

    async def factory(name: str | None = None, start: bool = True, **opts: Any) -> ContainerInfo:
        name = name or container_name(new_app_id(), len(made) + 1)
        opts.setdefault("image", TEST_IMAGE)
        opts.setdefault("cmd", IDLE_CMD)
        made.append(name)
        info = await driver.container_create(ContainerCreateOptions(name=name, **opts))
        if start:
            await driver.container_start(name)
            info = await driver.container_inspect(name)
        return info

    try:
        yield factory
    finally:
        # Remove in a fresh driver too if the fixture's own one was closed by the test.
        cleaner = DockerDriver()
        try:
            await asyncio.gather(*(cleaner.container_remove(n) for n in made))
        finally:
            await cleaner.close()


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """Run Debian's docker-registry on 127.0.0.1 and push the test image; yield host:port."""
    binary = shutil.which("docker-registry")
    require(binary is not None, "docker-registry (Debian package)")
    require(engine_answers(), "a Docker engine")
    assert binary is not None
    port = free_port()
    workdir = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = (workdir / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"docker-registry did not listen: {(workdir / 'registry.log').read_text()}"
                    )
                time.sleep(0.1)
        tagged = f"{address}/test/busybox:latest"
        subprocess.run(["docker", "tag", TEST_IMAGE, tagged], check=True)
        subprocess.run(["docker", "push", tagged], check=True, capture_output=True)
        subprocess.run(["docker", "rmi", tagged], check=True, capture_output=True)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
