"""The container image on the real engine: built by `make test-image`, run as a user would.

The image (``SYSINNER_TEST_IMAGE``, default ``sysinner-exporter:test``) runs
with the engine's socket mounted and the socket's group added, publishes its
port on 127.0.0.1 only, and must export the app containers made here, run as
uid 10001 and turn healthy through its own HEALTHCHECK.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.drivers.docker import DockerEndpoint
from tests.support.engine import ContainerFactory, engine_answers
from tests.support.ports import free_port
from tests.support.requirements import require

pytestmark = [pytest.mark.image, pytest.mark.engine]

IMAGE = os.environ.get("SYSINNER_TEST_IMAGE", "sysinner-exporter:test")
EXPORTER_UID = 10001


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI and return its result."""
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True)


def socket_path() -> str:
    """Return the engine's socket on this host."""
    path = DockerEndpoint.from_env().socket_path
    assert path is not None, "these tests mount the engine's unix socket"
    return path


@dataclass
class Running:
    """An exporter container started from the image, published on 127.0.0.1."""

    name: str
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def inspect(self) -> dict[str, Any]:
        doc: list[dict[str, Any]] = json.loads(docker("inspect", self.name).stdout)
        return doc[0]

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the container as its own user."""
        return docker("exec", self.name, *argv, check=False)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def image() -> str:
    """Require the image that `make test-image` builds."""
    require(engine_answers(), "a Docker engine", needs="engine")
    found = docker("image", "inspect", IMAGE, check=False).returncode == 0
    require(found, f"the image {IMAGE} (build it with `make test-image`)", needs="image")
    return IMAGE


@pytest.fixture
def run_exporter(image: str) -> Iterator[Any]:
    """Return a factory that runs the image detached; every container is removed afterwards."""
    started: list[str] = []

    def factory(
        *docker_args: str, env: dict[str, str] | None = None, socket: str = "rw"
    ) -> Running:
        name = f"sysinner-exporter-test-{secrets.token_hex(4)}"
        port = free_port()
        settings = {"SYSINNER_EXPORTER_POLL_INTERVAL": "1", **(env or {})}
        env_args = [f"--env={k}={v}" for k, v in settings.items()]
        started.append(name)
        docker(
            "run", "--detach", f"--name={name}", f"--publish=127.0.0.1:{port}:8733",
            f"--volume={socket_path()}:/var/run/docker.sock:{socket}",
            # The image's HEALTHCHECK command, checked every second instead of 30.
            "--health-interval=1s", *env_args, *docker_args, image,
        )  # fmt: skip
        return Running(name, port)

    try:
        yield factory
    finally:
        for name in started:
            docker("rm", "--force", "--volumes", name, check=False)


def get(url: str) -> tuple[int, str]:
    """Return the status and body of a GET, 0 when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of an exposition keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value_for(exposition: str, metric: str, /, **labels: str) -> float | None:
    """Return the value of the first sample named ``metric`` whose labels include ``labels``."""
    for (sample_name, label_set), value in samples(exposition).items():
        if sample_name == metric and set(labels.items()) <= label_set:
            return value
    return None


async def scrape_until(running: Running, ready: Any, within: float, what: str) -> str:
    """Scrape /metrics until ``ready(exposition)`` holds; fail with the logs after ``within`` s."""
    deadline = time.monotonic() + within
    body = ""
    while time.monotonic() < deadline:
        status, body = await asyncio.to_thread(get, running.url("/metrics"))
        if status == 200 and ready(body):
            return body
        await asyncio.sleep(0.5)
    pytest.fail(
        f"timed out after {within}s waiting for {what}\n"
        f"last scrape:\n{body[-2000:]}\nlogs:\n{running.logs()}"
    )


async def wait_health(running: Running, status: str, within: float) -> None:
    """Wait until the engine reports the container's HEALTHCHECK status as ``status``."""
    deadline = time.monotonic() + within
    seen = None
    while time.monotonic() < deadline:
        seen = running.inspect()["State"].get("Health", {}).get("Status")
        if seen == status:
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"health is {seen!r}, not {status!r}, after {within}s\nlogs:\n{running.logs()}")


def process_ids(pid: int) -> tuple[list[int], list[int], list[int]]:
    """Return the (uids, gids, supplementary groups) of a host pid, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = [int(v) for v in value.split()] if key in ("Uid", "Gid", "Groups") else []
    return fields["Uid"], fields["Gid"], fields["Groups"]


async def test_image_exports_app_containers_as_non_root_and_turns_healthy(
    run_exporter: Any, make_container: ContainerFactory
) -> None:
    apps = [await make_container() for _ in range(3)]
    socket_gid = os.stat(socket_path()).st_gid

    running = run_exporter(f"--group-add={socket_gid}")

    def every_app_exported(body: str) -> bool:
        return value_for(body, "sysinner_exporter_up") == 1.0 and all(
            value_for(body, "container_memory_usage_bytes", name=c.name) is not None for c in apps
        )

    body = await scrape_until(running, every_app_exported, 30, "the app containers' series")
    for c in apps:
        parsed = c.name.split("-")
        labels = {"name": c.name, "app": parsed[1], "replica": str(int(parsed[2], 16))}
        assert value_for(body, "container_last_seen", **labels) is not None, c.name
        memory = value_for(body, "container_memory_usage_bytes", name=c.name)
        assert memory is not None, c.name
        assert memory > 0, (c.name, memory)
    # Only managed containers: the exporter's own container is not tracked.
    assert value_for(body, "container_last_seen", name=running.name) is None

    pid = running.inspect()["State"]["Pid"]
    uids, gids, groups = process_ids(pid)
    assert uids == [EXPORTER_UID] * 4, uids
    assert gids == [EXPORTER_UID] * 4, gids
    assert socket_gid in groups, groups

    await wait_health(running, "healthy", 30)
    status, ready = await asyncio.to_thread(get, running.url("/readyz"))
    assert status == 200, ready


async def test_without_the_socket_group_the_exporter_serves_and_says_why(
    run_exporter: Any,
) -> None:
    running = run_exporter()

    def polled(body: str) -> bool:
        return (value_for(body, "sysinner_exporter_polls_total") or 0) >= 1

    body = await scrape_until(running, polled, 30, "a first poll")
    assert value_for(body, "sysinner_exporter_up") == 0.0
    status, ready = await asyncio.to_thread(get, running.url("/readyz"))
    assert status == 503
    assert "Permission denied" in json.loads(ready)["error"], ready
    errors = [line for line in running.logs().splitlines() if " level=error " in line]
    assert any(
        'msg="engine unreachable: cannot connect to Docker Engine via '
        'unix:///var/run/docker.sock: [Errno 13] Permission denied"' in line
        for line in errors
    ), errors
    # /healthz reflects the process, not the engine: the container still turns healthy.
    await wait_health(running, "healthy", 30)

    check = running.exec("sysinner-exporter", "check", "--web.listen-address=127.0.0.1:0")
    assert check.returncode == 1, check.stdout + check.stderr
    assert (
        "engine        FAIL  cannot connect to Docker Engine via unix:///var/run/docker.sock: "
        "[Errno 13] Permission denied" in check.stdout
    ), check.stdout
    assert "--group-add $(stat -c %g /var/run/docker.sock)" in check.stdout


async def test_image_runs_as_docker_compose_yml_runs_it(
    run_exporter: Any, make_container: ContainerFactory
) -> None:
    """Read-only socket and host trees, the host's pid namespace, settings from the environment."""
    apps = [await make_container() for _ in range(2)]
    running = run_exporter(
        f"--group-add={os.stat(socket_path()).st_gid}",
        "--pid=host",
        "--volume=/proc:/host/proc:ro",
        "--volume=/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
        env={
            "SYSINNER_EXPORTER_PROC_ROOT": "/host/proc",
            "SYSINNER_EXPORTER_CGROUP_ROOT": "/host/sys/fs/cgroup",
        },
        socket="ro",
    )

    def every_app_has_cpu(body: str) -> bool:
        # A poll may fail now and then on a busy shared engine; wait for a good one.
        return value_for(body, "sysinner_exporter_up") == 1.0 and all(
            value_for(body, "container_cpu_usage_seconds_total", name=c.name) is not None
            for c in apps
        )

    body = await scrape_until(running, every_app_has_cpu, 30, "the app containers' CPU series")

    check = running.exec("sysinner-exporter", "check", "--web.listen-address=127.0.0.1:0")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "--proc.root=/host/proc" in check.stdout
    # "stats source  ok    cgroup+docker (why)": the source is the word after the status.
    source = next(
        line.split()[3] for line in check.stdout.splitlines() if line.startswith("stats source")
    )
    # The source `check` predicts is the one serving.
    assert value_for(body, "sysinner_exporter_stats_source", source=source) == 1.0

    # Remediation keeps its SQLite state here; a named volume inherits the ownership.
    writable = running.exec("sh", "-c", "test -w /var/lib/sysinner-exporter")
    assert writable.returncode == 0, "the state dir is not writable by the exporter's user"


def test_image_labels_and_defaults(image: str) -> None:
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    for key in ("title", "description", "version", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == __version__
    assert config["User"] == f"{EXPORTER_UID}:{EXPORTER_UID}"
    assert "8733/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["sysinner-exporter"]
    assert config["Cmd"] == ["serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
