"""The poller and /metrics on the real engine, checked against the engine's own stats."""

from __future__ import annotations

import asyncio
import shutil
import time
from asyncio.subprocess import PIPE
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Settings
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.poller import Poller
from exporter.wiring import wire
from tests.integration.kernel import kernel_cgroup_path
from tests.support.cpu_burn import TICK_NS, burn_own_cpu
from tests.support.engine import ContainerFactory, new_app_id
from tests.support.requirements import require
from tests.support.socket_proxy import UnixSocketProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

#: CPU the container's shell burns before it idles, in clock ticks of 10 ms.
BURN_TICKS = 10
# Burn until the shell's own CPU time reaches BURN_TICKS (not a fixed loop, whose
# cost differs by machine), then idle and exit on SIGTERM: the counter stops moving.
BURN_THEN_IDLE = [
    "/bin/sh",
    "-c",
    f"{burn_own_cpu(BURN_TICKS)}; trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
]


async def _serve(
    aiohttp_client: ClientFactory,
    driver: DockerDriver,
    *,
    background: bool,
    interval: float = 10.0,
    discovery: str = "events",
) -> tuple[Client, Poller]:
    # Stats from the engine itself, processes counted from the kernel's files.
    settings = Settings(
        poll_interval=interval, poll_timeout=5, stats_source="docker", discovery_mode=discovery
    )
    wired = wire(settings, driver=driver, poll_in_background=background)
    return await aiohttp_client(wired.app), wired.poller


async def _families(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture
def own_driver(engine: None) -> DockerDriver:
    """A driver the app under test owns (the app closes it on shutdown)."""
    return DockerDriver(stop_grace=3)


async def test_metrics_has_managed_series_with_labels_and_unmanaged_is_left_out(
    aiohttp_client: ClientFactory, own_driver: DockerDriver, make_container: ContainerFactory
) -> None:
    app_id = new_app_id()
    managed = [await make_container(name=f"app-{app_id}-{r:04x}") for r in (1, 2, 0xFF)]
    unmanaged = await make_container(name=f"sysinner-test-{new_app_id()}")
    client, poller = await _serve(aiohttp_client, own_driver, background=False)
    await poller.poll_once()
    families = await _families(client)

    cpu = {labels["name"]: labels for labels, _ in families["container_cpu_usage_seconds_total"]}
    for c in managed:
        labels = cpu[c.name]
        # cAdvisor's id: the cgroup path the kernel shows for the container's init.
        assert labels["id"] == kernel_cgroup_path(c.pid)
        assert labels["id"].endswith(c.id)
        assert labels["image"] == "local/busybox:latest"
        assert labels["app"] == app_id
        assert labels["replica"] == str(int(c.name[-4:], 16))
    assert cpu[managed[2].name]["replica"] == "255"
    assert unmanaged.name not in cpu
    for name in (
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_fs_writes_bytes_total",
        "container_start_time_seconds",
        "container_last_seen",
        "container_processes",
    ):
        assert {c.name for c in managed} <= {lab["name"] for lab, _ in families[name]}, name
    procs = {lab["name"]: v for lab, v in families["container_processes"]}
    assert all(procs[c.name] >= 1 for c in managed)
    assert families["sysinner_exporter_up"] == [({}, 1.0)]


async def test_cpu_and_memory_match_the_engines_own_stats(
    aiohttp_client: ClientFactory,
    own_driver: DockerDriver,
    make_container: ContainerFactory,
    sdk: docker.DockerClient,
) -> None:
    c = await make_container(cmd=BURN_THEN_IDLE, memory_limit=64 * 1024 * 1024)
    container = sdk.containers.get(c.id)

    def engine_cpu_ns() -> int:
        stats = container.stats(stream=False, one_shot=True)
        return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])

    last = -1

    async def cpu_settled() -> bool:
        nonlocal last
        now = await asyncio.to_thread(engine_cpu_ns)
        settled = now > 0 and now == last
        last = now
        return settled

    await wait_for(cpu_settled, timeout=60, what="the burn to finish", every=0.5)
    client, poller = await _serve(aiohttp_client, own_driver, background=False)

    async def poll_then_engine() -> tuple[dict[str, float], dict[str, Any]]:
        """Return our series of the container after a poll, then the engine's own stats."""
        await poller.poll_once()
        engine = await asyncio.to_thread(container.stats, stream=False, one_shot=True)
        ours = {
            name: value
            for name, samples in (await _families(client)).items()
            for labels, value in samples
            if labels.get("name") == c.name
        }
        return ours, engine

    # The kernel's memory usage counter is fuzzy by the charges it batches per CPU
    # (64 pages each on current kernels: the more CPUs, the more fuzz), and this
    # container uses about 0.5 MiB: two reads in a row may differ by more than 5%
    # (0.25 MiB was seen here). So an unlucky pair is read again; a unit or definition
    # mismatch never agrees and fails at the deadline, which only stops a hang.
    deadline = time.monotonic() + 30
    while True:
        ours, engine = await poll_then_engine()
        engine_memory = engine["memory_stats"]["usage"]
        if ours["container_memory_usage_bytes"] == pytest.approx(engine_memory, rel=0.05):
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"memory never agreed: ours {ours['container_memory_usage_bytes']:.0f}, "
                f"the engine's {engine_memory}"
            )
        await asyncio.sleep(0.5)

    engine_cpu = engine["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
    # The burn shows, so the comparison below is of a real figure.
    assert engine_cpu > (BURN_TICKS - 1) * TICK_NS / 1e9
    assert ours["container_cpu_usage_seconds_total"] == pytest.approx(engine_cpu, rel=0.05)
    assert ours["container_spec_memory_limit_bytes"] == 64 * 1024 * 1024


async def test_a_removed_container_is_gone_after_one_poll(
    aiohttp_client: ClientFactory, own_driver: DockerDriver, make_container: ContainerFactory
) -> None:
    keep = await make_container()
    doomed = await make_container()
    client, poller = await _serve(aiohttp_client, own_driver, background=False)
    await poller.poll_once()
    names = {lab["name"] for lab, _ in (await _families(client))["container_last_seen"]}
    assert {keep.name, doomed.name} <= names

    helper = DockerDriver()
    try:
        await helper.container_remove(doomed.id)
    finally:
        await helper.close()
    await poller.poll_once()
    text = await (await client.get("/metrics")).text()
    assert doomed.id not in text
    assert keep.id in text


@pytest.mark.promtool
async def test_exposition_passes_promtool_check_metrics(
    aiohttp_client: ClientFactory,
    own_driver: DockerDriver,
    make_container: ContainerFactory,
    tmp_path: Path,
) -> None:
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool (Debian package prometheus)", needs="promtool")
    assert promtool is not None
    await make_container(labels={"team": "core"})
    client, poller = await _serve(aiohttp_client, own_driver, background=False)
    await poller.poll_once()
    body = await (await client.get("/metrics")).read()
    assert b"container_cpu_usage_seconds_total{" in body
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(body), timeout=30)
    assert proc.returncode == 0, err.decode() + out.decode()
    assert out.decode().strip() == ""
    assert err.decode().strip() == ""


@pytest.mark.parametrize(
    ("discovery", "counted_as"),
    [("events", "events"), ("poll", "list")],  # the lost stream, or the failed list
)
async def test_engine_gone_while_serving_then_back_recovers_without_restart(
    aiohttp_client: ClientFactory,
    engine: None,
    make_container: ContainerFactory,
    tmp_path: Path,
    discovery: str,
    counted_as: str,
) -> None:
    await make_container()
    target = DockerEndpoint.from_env().socket_path
    assert target is not None
    proxy = UnixSocketProxy(str(tmp_path / "engine.sock"), target)
    await proxy.start()
    driver = DockerDriver(DockerEndpoint.parse(f"unix://{proxy.path}"), timeout=3, stats_timeout=3)
    interval = 0.5
    client, poller = await _serve(
        aiohttp_client, driver, background=True, interval=interval, discovery=discovery
    )
    try:

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_for(ready, timeout=20, what="the first successful poll")

        await proxy.stop()

        async def down() -> bool:
            resp = await client.get("/metrics")
            assert resp.status == 200
            return "sysinner_exporter_up 0.0" in await resp.text()

        await wait_for(down, timeout=10, what="up to drop to 0")
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200

        await proxy.start()
        # Recovery at the next poll, counted in polls rather than seconds: the first poll
        # to end may have begun while the engine was away, the one after it began once it
        # was back and succeeds. The deadline only stops a hang.
        async with asyncio.timeout(60):
            first = await poller.wait_next_poll()
            second = await poller.wait_next_poll()
        assert second.engine_up, (first.error, second.error)
        assert (await client.get("/readyz")).status == 200
        text = await (await client.get("/metrics")).text()
        assert "sysinner_exporter_up 1.0" in text
        assert poller.health.errors[counted_as] >= 1
    finally:
        await proxy.stop()
