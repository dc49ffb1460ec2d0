"""The real Docker engine as the tests use it: the image, the idle command, names, a poller."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import docker

from exporter.drivers.base import Driver
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.models import ContainerInfo
from exporter.naming import NamingScheme, container_name
from exporter.poller import Poller
from exporter.sources.base import DriverStatsSource

TEST_IMAGE = "local/busybox:latest"
#: busybox sh as PID 1 ignores SIGTERM; this loop exits on it, so stops are fast.
IDLE_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]
#: The vpc subnet pool of the tests' drivers (free_subnet picks /24s inside it).
TEST_VPC_POOL = "10.96.0.0/11"
#: A container that takes a second to stop (its TERM trap sleeps): an exporter killed
#: meanwhile cuts a restart between its stop and its start, the worst place.
SLOW_STOP_CMD = [
    "/bin/sh",
    "-c",
    "trap 'sleep 1; exit 0' TERM; while :; do sleep 3600 & wait $!; done",
]
#: ininit as the host installation would ship it; here an idle loop that exits on SIGTERM.
ININIT = "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done\n"

#: What the ``make_container`` fixture returns: ``await factory(name=None, start=True, **opts)``.
ContainerFactory = Callable[..., Awaitable[ContainerInfo]]


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


def new_app_id() -> str:
    """Return a random app id valid in the default naming scheme."""
    return secrets.token_hex(6)


def new_container_name(n: int = 1) -> str:
    """Return a managed container name of a fresh app, replica ``n``."""
    return container_name(new_app_id(), n)


def sdk_exec(sdk: docker.DockerClient, name: str, cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd`` in container ``name`` through the Docker SDK; return its exit code and output."""
    result = sdk.containers.get(name).exec_run(cmd)
    return int(result.exit_code), result.output.decode(errors="replace")


def snapshot_names(poller: Poller) -> set[str]:
    """Return the names of the containers in the poller's latest snapshot."""
    return {s.info.name for s in poller.snapshot.containers}


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


async def docker_cli(*args: str) -> tuple[int, str]:
    """Run the docker CLI; return its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def remove_containers(*names: str) -> None:
    """Remove containers with a driver of its own (the app closes its driver on shutdown)."""
    cleaner = DockerDriver()
    try:
        for name in names:
            await cleaner.container_remove(name)
    finally:
        await cleaner.close()


class EngineEvents:
    """``docker events`` of some containers, read as they come.

    ``filters`` are ``docker events --filter`` values besides ``type=container``
    (``container=NAME``, ``label=KEY=VALUE``); events whose action starts with
    one of ``ignored`` (e.g. a healthcheck's ``exec_``) are not kept.
    """

    def __init__(
        self,
        names: Sequence[str] = (),
        *,
        filters: Sequence[str] = (),
        ignored: tuple[str, ...] = (),
    ) -> None:
        self.filters = [*(f"container={n}" for n in names), *filters]
        self.ignored = ignored
        self.events: list[dict[str, Any]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    async def start(self, since: float | None = None) -> None:
        """Start reading: from ``since`` (unix seconds) when given, else from now."""
        self._proc = await asyncio.create_subprocess_exec(
            "docker",
            "events",
            *(("--since", f"{since:.3f}") if since is not None else ()),
            "--format",
            "{{json .}}",
            "--filter",
            "type=container",
            *(arg for f in self.filters for arg in ("--filter", f)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            event = json.loads(line)
            if self.ignored and str(event.get("Action", "")).startswith(self.ignored):
                continue
            event["seen_at"] = time.monotonic()
            self.events.append(event)
            self.changed.set()

    def count(self, action: str) -> Counter[str]:
        """Return how many ``action`` events (start, stop, die, ...) each container had."""
        return Counter(
            e["Actor"]["Attributes"]["name"] for e in self.events if e.get("Action") == action
        )

    def quiet_for(self, seconds: float) -> bool:
        """Return True when no event came in the last ``seconds``."""
        return not self.events or time.monotonic() - self.events[-1]["seen_at"] >= seconds

    def stops_under_way(self) -> list[str]:
        """Return the containers the engine is stopping: a kill signal seen, its stop not yet."""
        stopping: dict[str, bool] = {}
        for e in self.events:
            if e.get("Action") in ("kill", "stop"):
                stopping[e["Actor"]["Attributes"]["name"]] = e["Action"] == "kill"
        return [name for name, under_way in stopping.items() if under_way]

    async def stop(self) -> None:
        """Stop reading events."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader
