"""Shared fixtures: the real engine, factories that always clean up, the API on a fake engine.

Fixtures only (and the hooks and hypothesis profile every test shares): the
helpers they and the tests call live in :mod:`tests.support`. A fixture that
needs something real calls :func:`tests.support.requirements.require`, which
fails under ``CI=true`` (CI must never be green while testing nothing real),
skips elsewhere, and fails at once in a test that lacks the matching marker.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from exporter.config import Settings
from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerCreateOptions, ContainerInfo
from exporter.naming import container_name
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, settings_for, start_api
from tests.support.engine import (
    IDLE_CMD,
    TEST_IMAGE,
    TEST_VPC_POOL,
    ContainerFactory,
    engine_answers,
    new_app_id,
)
from tests.support.ports import free_port
from tests.support.requirements import require, set_current_test

# Hypothesis fails an example that runs past 200 ms, and a run whose data
# takes long to generate: both time this machine, not the code under test.
settings.register_profile(
    "any-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("any-machine")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Let :func:`require` see which test it runs for, fixtures' setup included."""
    set_current_test(item)
    try:
        return (yield)
    finally:
        set_current_test(None)


# -- the API on a fake engine ----------------------------------------------------------
# One ``api`` for every test of the API; a module changes what is behind it by
# overriding ``api_driver`` (which containers the fake engine holds) or
# ``api_settings`` (directly, or per test with
# ``@pytest.mark.parametrize("api_settings", [{...overrides}], indirect=True)``).


@pytest.fixture
def api_driver() -> FakeDriver:
    """Return the fake engine behind ``api``: empty unless a module overrides this fixture."""
    return FakeDriver()


@pytest.fixture
def api_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Return the settings of ``api``: dirs under tmp_path, overrides from an indirect param."""
    return settings_for(tmp_path, **getattr(request, "param", {}))


@pytest.fixture
async def api(aiohttp_client: ClientFactory, api_settings: Settings, api_driver: FakeDriver) -> Api:
    """Return the API wired as ``serve`` wires it, on ``api_driver``, served on loopback."""
    return await start_api(aiohttp_client, api_settings, api_driver)


# -- the real engine -----------------------------------------------------------------


@pytest.fixture
def engine() -> None:
    """Require a real Docker engine."""
    require(engine_answers(), "a Docker engine", needs="engine")


@pytest.fixture
async def driver(engine: None) -> AsyncIterator[DockerDriver]:
    """Return a DockerDriver on the real engine, closed afterwards."""
    d = DockerDriver(stop_grace=3, vpc_pool=[TEST_VPC_POOL])
    try:
        yield d
    finally:
        await d.close()


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
    require(binary is not None, "docker-registry (Debian package)", needs="registry")
    require(engine_answers(), "a Docker engine", needs="engine")
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
