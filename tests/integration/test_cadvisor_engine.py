"""cAdvisor's families and the signals it lacks, on the real engine (issue 14).

Each test makes its own containers (managed names, removed afterwards),
polls them with the real driver and renders the metric table, or reads both
stats sources around the engine's own answer. Conditions are waited for with
deadlines; counters are compared with the before/engine/after sandwich: a
counter the engine read between our two reads lies between them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from docker.models.containers import Container
from prometheus_client.parser import text_string_to_metric_families

from exporter.drivers.docker import DockerDriver
from exporter.exposition import render_container_families
from exporter.fsusage import LayerSizer
from exporter.models import ContainerInfo, ContainerStats
from exporter.naming import NamingScheme, container_name
from exporter.poller import Poller
from exporter.sources.base import DriverStatsSource, SourcedStats, StatsSource
from exporter.sources.cgroup import CgroupStatsSource
from tests.integration.kernel import kernel_cgroup_path
from tests.support.engine import TEST_IMAGE, new_app_id
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

IDLE = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
BUSY = "trap 'exit 0' TERM; while :; do :; done"
SECOND_NS = 1_000_000_000
HEALTH_EVERY_S = 1

Run = Callable[..., Container]


@pytest.fixture
def run(sdk: docker.DockerClient) -> Iterator[Run]:
    """Return a factory of managed-name containers run with the SDK; all removed afterwards."""
    made: list[Container] = []

    def factory(cmd: str, **kwargs: Any) -> Container:
        kwargs.setdefault("name", container_name(new_app_id(), 1))
        container = sdk.containers.run(TEST_IMAGE, ["/bin/sh", "-c", cmd], detach=True, **kwargs)
        made.append(container)
        return container

    try:
        yield factory
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.APIError):
                container.reload()
                if container.status == "paused":
                    container.unpause()
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def poller(driver: DockerDriver, source: StatsSource | None = None) -> Poller:
    """Return a poller of managed containers with ``source`` (default: the cgroup files)."""
    return Poller(
        driver,
        source or CgroupStatsSource(),
        naming=NamingScheme(),
        process_counter=None,
        inspect_max_age=0.0,  # inspect at every poll: the test waits on inspect fields
    )


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def series_of(p: Poller, name: str) -> Series:
    """Poll once; return every sample of container ``name`` as {(metric, labels): value}."""
    snapshot = await p.poll_once()
    text = b"".join(render_container_families(snapshot)).decode()
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("name") == name:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k == "state"))
                out[(s.name, labels)] = s.value
    return out


def value(series: Series, metric: str, **labels: str) -> float | None:
    """Return one sample's value, None when the series is absent."""
    return series.get((metric, tuple(sorted(labels.items()))))


async def labels_of(p: Poller, name: str, metric: str) -> dict[str, str]:
    """Poll once; return the labels of ``metric``'s series for container ``name``."""
    snapshot = await p.poll_once()
    text = b"".join(render_container_families(snapshot)).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric and s.labels.get("name") == name:
                return dict(s.labels)
    raise AssertionError(f"no {metric} for {name}")


async def cgroup_sample(source: CgroupStatsSource, c: ContainerInfo) -> ContainerStats:
    result = (await source.read_many([c]))[c.id]
    assert isinstance(result, SourcedStats), result
    return result.stats


SANDWICHED = (
    "cpu_periods",
    "cpu_throttled_periods",
    "cpu_throttled_time",
    "net_rx_packets",
    "net_tx_packets",
    "net_rx_bytes",
    "net_tx_bytes",
)


async def test_throttling_and_packets_rise_and_agree_with_the_engines_stats(
    driver: DockerDriver, run: Run
) -> None:
    # A busy loop under --cpus 0.1, pinging its gateway meanwhile.
    sdk = run(f"ping -q -i 0.2 172.17.0.1 >/dev/null & {BUSY}", nano_cpus=100_000_000)
    c = await driver.container_inspect(sdk.id)
    source = CgroupStatsSource()
    first = await cgroup_sample(source, c)

    async def throttled_more() -> bool:
        now = await cgroup_sample(source, c)
        return (
            now.cpu_throttled_periods is not None
            and first.cpu_throttled_periods is not None
            and now.cpu_throttled_periods > first.cpu_throttled_periods + 5
            and now.net_tx_packets is not None
            and first.net_tx_packets is not None
            and now.net_tx_packets > first.net_tx_packets
        )

    await wait_for(throttled_more, timeout=30, what="throttled periods and packets to rise")

    # The engine's own answer lies between two reads of ours: counters only grow.
    for attempt in range(5):
        before = await cgroup_sample(source, c)
        engine = await driver.container_stats(c.id)
        after = await cgroup_sample(source, c)
        outside = [
            f"{f}: {getattr(before, f)} <= {getattr(engine, f)} <= {getattr(after, f)}"
            for f in SANDWICHED
            if not getattr(before, f) <= getattr(engine, f) <= getattr(after, f)
        ]
        if not outside:
            break
        assert attempt < 4, "engine outside our reads: " + "; ".join(outside)
    assert engine.cpu_throttled_periods is not None
    assert engine.cpu_periods is not None
    assert engine.cpu_throttled_periods > 0
    assert engine.cpu_throttled_periods <= engine.cpu_periods
    # Throttled time is real time: --cpus 0.1 throttles most of every period.
    assert engine.cpu_throttled_time is not None
    assert engine.cpu_throttled_time > 0

    # The families show it, from either source.
    for src in (CgroupStatsSource(), DriverStatsSource(driver)):
        p = poller(driver, src)
        series = await series_of(p, sdk.name)
        throttled = value(series, "container_cpu_cfs_throttled_periods_total")
        assert throttled is not None
        assert throttled >= engine.cpu_throttled_periods
        seconds = value(series, "container_cpu_cfs_throttled_seconds_total")
        assert seconds is not None
        assert seconds >= engine.cpu_throttled_time / SECOND_NS
        packets = value(series, "container_network_transmit_packets_total")
        assert packets is not None
        assert packets >= (engine.net_tx_packets or 0) > 0


async def test_health_reads_1_0_and_minus_1_and_id_is_the_kernels_cgroup_path(
    driver: DockerDriver, run: Run
) -> None:
    def check(cmd: str) -> dict[str, Any]:
        every = HEALTH_EVERY_S * SECOND_NS
        return {"test": ["CMD-SHELL", cmd], "interval": every, "timeout": every, "retries": 1}

    healthy = run(IDLE, healthcheck=check("true"))
    unhealthy = run(IDLE, healthcheck=check("false"))
    plain = run(IDLE)
    want = {healthy.name: 1.0, unhealthy.name: 0.0, plain.name: -1.0}
    p = poller(driver)
    seen: dict[str, float | None] = {}

    async def judged() -> bool:
        for name in want:
            seen[name] = value(await series_of(p, name), "container_health_state")
        return seen == want

    await wait_for(judged, timeout=30, what=lambda: f"health states {want} (last seen {seen})")

    engine_source = poller(driver, DriverStatsSource(driver))
    for sdk in (healthy, unhealthy, plain):
        sdk.reload()
        kernel = kernel_cgroup_path(int(sdk.attrs["State"]["Pid"]))
        assert kernel.endswith(sdk.id)
        # Whichever source reads the numbers, id is the path the kernel shows.
        for q in (p, engine_source):
            labels = await labels_of(q, sdk.name, "container_memory_usage_bytes")
            assert labels["id"] == kernel


async def test_a_child_killed_by_the_oom_killer_counts_while_the_container_lives(
    driver: DockerDriver, run: Run
) -> None:
    # busybox tail buffers the one endless line of zeros until the 16 MiB limit kills it.
    # The pipeline's subshell raises its own OOM score (raising needs no privilege): once
    # tail is gone the killer may pick any process still charged, and in CI it once chose
    # the init shell, ending the container between two polls.
    sdk = run(
        "trap 'exit 0' TERM; while :; do"
        " (echo 1000 >/proc/self/oom_score_adj; head -c 64m /dev/zero | tail >/dev/null);"
        " sleep 1; done",
        mem_limit="16m",
        memswap_limit="16m",
    )
    p = poller(driver)
    last: dict[str, float | None] = {}

    async def killed_twice() -> bool:
        series = await series_of(p, sdk.name)
        last["oom"] = value(series, "container_oom_events_total")
        last["running"] = value(series, "sysinner_container_state", state="running")
        return (last["oom"] or 0) >= 2

    await wait_for(killed_twice, timeout=40, what=lambda: f"two OOM kills (last {last})")
    # The container itself lives on: its init was not the one killed.
    assert last["running"] == 1
    sdk.reload()
    assert sdk.status == "running"
    assert sdk.attrs["State"]["OOMKilled"] is False
    series = await series_of(p, sdk.name)
    assert value(series, "sysinner_container_oom_killed") == 0
    # The engine's stats carry no OOM count: from it, the series is absent, not 0.
    engine_only = await series_of(poller(driver, DriverStatsSource(driver)), sdk.name)
    assert value(engine_only, "container_oom_events_total") is None
    assert value(engine_only, "container_memory_usage_bytes") is not None


async def test_a_crash_loop_shows_restarts_rising_and_its_exit_code(
    driver: DockerDriver, run: Run
) -> None:
    sdk = run("sleep 1; exit 3", restart_policy={"Name": "on-failure", "MaximumRetryCount": 1000})
    p = poller(driver)
    seen: list[tuple[float | None, float | None]] = []

    async def restarted_with_its_code() -> bool:
        series = await series_of(p, sdk.name)
        restarts = value(series, "sysinner_container_restarts_total")
        code = value(series, "sysinner_container_exit_code")
        seen.append((restarts, code))
        return (restarts or 0) >= 3 and code == 3

    await wait_for(
        restarted_with_its_code, timeout=45, what=lambda: f"restarts and exit 3 (seen {seen[-5:]})"
    )
    counts = [r for r, _ in seen if r is not None]
    # Rising, as the engine counts them: never down, and up from where it was first seen.
    assert counts == sorted(counts)
    assert counts[-1] > counts[0]
    sdk.reload()
    assert sdk.attrs["RestartCount"] >= counts[-1]


async def test_a_paused_container_reads_paused(driver: DockerDriver, run: Run) -> None:
    sdk = run(IDLE)
    p = poller(driver)

    async def state_is(state: str) -> bool:
        series = await series_of(p, sdk.name)
        return value(series, "sysinner_container_state", state=state) == 1

    await wait_for(lambda: state_is("running"), timeout=20, what="running")
    sdk.pause()
    await wait_for(lambda: state_is("paused"), timeout=20, what="paused")
    series = await series_of(p, sdk.name)
    assert value(series, "sysinner_container_state", state="running") == 0
    # The driver contract still calls it running (the API is unchanged)...
    assert (await driver.container_inspect(sdk.id)).state.value == "running"
    # ...and a paused container keeps its cgroup: still seen, its memory still read.
    assert value(series, "container_last_seen") is not None
    assert value(series, "container_memory_usage_bytes") is not None
    sdk.unpause()
    await wait_for(lambda: state_is("running"), timeout=20, what="running again")


async def test_a_stopped_container_has_no_last_seen(driver: DockerDriver, run: Run) -> None:
    sdk = run(IDLE)
    p = poller(driver)

    async def seen() -> bool:
        return value(await series_of(p, sdk.name), "container_last_seen") is not None

    await wait_for(seen, timeout=20, what="container_last_seen")
    await asyncio.to_thread(sdk.stop, timeout=5)

    async def gone() -> bool:
        series = await series_of(p, sdk.name)
        return (
            value(series, "sysinner_container_state", state="exited") == 1
            and value(series, "container_last_seen") is None
        )

    await wait_for(gone, timeout=20, what="the stopped container to lose container_last_seen")


async def test_the_writable_layer_is_sized_on_its_own_interval(
    driver: DockerDriver, run: Run
) -> None:
    sdk = run(f"dd if=/dev/urandom of=/blob bs=1M count=8 2>/dev/null; {IDLE}")
    p = Poller(
        driver,
        CgroupStatsSource(),
        naming=NamingScheme(),
        process_counter=None,
        layer_sizer=LayerSizer(budget=5.0),
        layer_interval=0.5,
    )
    last: dict[str, float | None] = {}

    async def sized() -> bool:
        series = await series_of(p, sdk.name)
        for metric in ("usage_bytes", "limit_bytes", "inodes_total", "inodes_free"):
            last[metric] = value(series, f"container_fs_{metric}")
        return (last["usage_bytes"] or 0) >= 8 * 1024 * 1024

    await wait_for(
        sized, timeout=30, what=lambda: f"the 8 MiB blob in the layer's usage (last {last})"
    )
    assert last["limit_bytes"] is not None
    assert last["usage_bytes"] is not None
    assert last["limit_bytes"] > last["usage_bytes"]
    assert last["inodes_total"] is not None
    assert last["inodes_free"] is not None
    assert 0 < last["inodes_free"] < last["inodes_total"]
    await p.aclose()
