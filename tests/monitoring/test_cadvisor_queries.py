"""Coming from cAdvisor, end to end: popular dashboards' and alerts' queries on a real Prometheus.

Our own copies of the queries of the Docker dashboards most people import
(grafana.com 193, 893, 179 and Grafana's docker-mixin) and of
awesome-prometheus-alerts' cAdvisor rules, run against a real Prometheus
scraping the exporter every second. The alert rules' Kubernetes selectors
(``container!=""``) read ``name!=""`` on Docker, as the issue says. Each
dashboard query must return data for this test's containers; each rule must
return its container when it should fire (the instant query is the alert's
condition) and not the others.

The docker-mixin selects ``id=~"/system.slice/docker.+"``, the systemd
driver's layout; this engine uses cgroupfs (``/docker/<id>``), where
cAdvisor writes that path, so the copy here matches either layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import docker
import pytest
import pytest_asyncio
from docker.models.containers import Container

from exporter.naming import container_name
from tests.monitoring.monitoring import known_metric_names, metric_names
from tests.support.engine import TEST_IMAGE, new_app_id
from tests.support.stack import Stack, new_run_dir, require_stack
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.engine,
    pytest.mark.promtool,
    pytest.mark.prometheus,
    pytest.mark.asyncio(loop_scope="module"),
]

SECOND_NS = 1_000_000_000
#: Container ids as cAdvisor writes them, under either cgroup driver.
DOCKER_IDS = 'id=~"/docker/.+|/system.slice/docker.+"'


@dataclass
class Fleet:
    """The stack and this test's containers, by role."""

    stack: Stack
    busy: str  # CPU-limited (throttled), pinging, its memory near the limit
    unhealthy: str  # a healthcheck that always fails
    victim: str  # removed during the test: ContainerKilled
    victim_removed: bool = False


def _hog_and_spin() -> list[str]:
    # 56 MiB of /dev/shm in a 64 MiB limit (87% working set), a ping for
    # packets, and a busy loop throttled by --cpus 0.1.
    return [
        "/bin/sh",
        "-c",
        "head -c 56m /dev/zero > /dev/shm/hog; ping -q -i 0.2 172.17.0.1 >/dev/null & "
        "trap 'exit 0' TERM; while :; do :; done",
    ]


IDLE = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    require_stack()
    app = new_app_id()
    names = [container_name(app, r) for r in (1, 2, 3)]
    sdk = docker.from_env()
    made: list[Container] = []
    stack = Stack(
        tmp_path_factory.mktemp("cadvisor-stack"), new_run_dir(), token=secrets.token_urlsafe(24)
    )
    try:
        every = SECOND_NS
        made.append(
            sdk.containers.run(
                TEST_IMAGE,
                _hog_and_spin(),
                name=names[0],
                detach=True,
                nano_cpus=100_000_000,
                mem_limit="64m",
                memswap_limit="64m",
            )
        )
        made.append(
            sdk.containers.run(
                TEST_IMAGE,
                IDLE,
                name=names[1],
                detach=True,
                healthcheck={
                    "test": ["CMD-SHELL", "false"],
                    "interval": every,
                    "timeout": every,
                    "retries": 1,
                },
            )
        )
        made.append(sdk.containers.run(TEST_IMAGE, IDLE, name=names[2], detach=True))
        # Only this test's app is managed: the engine is shared with other tests.
        exporter = await stack.start_exporter(
            "--naming.pattern", rf"app-(?P<app>{app})-(?P<replica>[0-9a-f]{{4}})"
        )
        alertmanager = await stack.start_alertmanager(exporter.url + "/api/v1/alerts")
        await stack.start_prometheus(exporter, alertmanager, [])

        async def all_scraped() -> bool:
            seen = await stack.query(f'container_last_seen{{name=~"{"|".join(names)}"}}')
            return len(seen) == len(names)

        await wait_until(all_scraped, 30, "every container scraped", services=stack.services)
        yield Fleet(stack, names[0], names[1], names[2])
    except BaseException:
        print(stack.tails())
        raise
    finally:
        try:
            await stack.close()
        finally:
            for c in made:
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
            sdk.close()


def _mine(fleet: Fleet) -> str:
    return "|".join((fleet.busy, fleet.unhealthy, fleet.victim))


# Dashboard queries, as the dashboards write them but for {name} selectors
# narrowed to this test's containers (the engine is shared).
DASHBOARD_QUERIES = {
    # grafana.com 193, "Docker monitoring"
    "193 running containers": 'count(container_last_seen{image!="", NAME})',
    "193 memory": 'sum by (name) (container_memory_usage_bytes{image!="", NAME})',
    "193 cpu": 'sum by (name) (rate(container_cpu_user_seconds_total{image!="", NAME}[1m]))',
    "193 network": (
        'sum by (name) (rate(container_network_receive_bytes_total{image!="", NAME}[1m]))'
    ),
    # grafana.com 893, "Docker and system monitoring"
    "893 cpu": "sum by (name) (rate(container_cpu_usage_seconds_total{NAME}[1m])) * 100",
    "893 rss": "sum by (name) (container_memory_rss{NAME})",
    "893 swap": "sum by (name) (container_memory_swap{NAME})",
    "893 sent": "sum by (name) (rate(container_network_transmit_bytes_total{NAME}[1m]))",
    # grafana.com 179, "Docker and Host Monitoring w/ Prometheus"
    "179 host memory": 'container_memory_usage_bytes{id="/"}',
    "179 host cpu": (
        'sum(rate(container_cpu_usage_seconds_total{id="/"}[1m])) / on() machine_cpu_cores'
    ),
    "179 host network": 'sum(rate(container_network_receive_bytes_total{id="/"}[1m]))',
    "179 max usage": "container_memory_max_usage_bytes{NAME}",
    "179 machine memory": "machine_memory_bytes",
    "179 container fs": "sum by (name) (container_fs_usage_bytes{NAME})",
    # Grafana's docker-mixin
    "mixin cpu": (
        f"sum by (name) (rate(container_cpu_usage_seconds_total{{{DOCKER_IDS}, NAME}}[1m]))"
    ),
    "mixin memory": f"sum by (name) (container_memory_usage_bytes{{{DOCKER_IDS}, NAME}})",
    "mixin network": (
        f"sum by (name) (rate(container_network_transmit_bytes_total{{{DOCKER_IDS}, NAME}}[1m]))"
    ),
    "mixin containers": f"count(container_last_seen{{{DOCKER_IDS}, NAME}})",
}

# awesome-prometheus-alerts' cAdvisor rules (container!="" read as name!=""), and
# the container each must return now; None: it must return data without firing here.
ALERT_RULES: dict[str, tuple[str, str | None]] = {
    "ContainerHighMemoryUsage": (
        '(sum by (instance, name) (container_memory_working_set_bytes{name!="", NAME})'
        " / sum by (instance, name) (container_spec_memory_limit_bytes > 0) * 100) > 80",
        "busy",
    ),
    "ContainerHighThrottleRate": (
        'sum by (name) (increase(container_cpu_cfs_throttled_periods_total{name!="", NAME}[1m]))'
        ' / sum by (name) (increase(container_cpu_cfs_periods_total{name!="", NAME}[1m]))'
        " > (25 / 100)",
        "busy",
    ),
    "ContainerUnhealthy": ('container_health_state{name!="", NAME} == 0', "unhealthy"),
    "ContainerVolumeUsage (its data: the disk is far from full)": (
        '(1 - (sum by (instance) (container_fs_inodes_free{name!="", NAME})'
        " / sum by (instance) (container_fs_inodes_total{NAME}))) * 100",
        None,
    ),
    "ContainerHighCpuUtilization (its data)": (
        'sum by (instance, name) (rate(container_cpu_usage_seconds_total{name!="", NAME}[1m]))'
        " * 100",
        None,
    ),
}


def _narrow(expr: str, fleet: Fleet) -> str:
    return expr.replace("NAME", f'name=~"{_mine(fleet)}"')


async def test_popular_dashboards_queries_return_data(fleet: Fleet) -> None:
    empty: dict[str, str] = {}

    async def all_have_data() -> bool:
        empty.clear()
        for what, expr in DASHBOARD_QUERIES.items():
            if not await fleet.stack.query(_narrow(expr, fleet)):
                empty[what] = expr
        return not empty

    await wait_until(
        all_have_data, 40, f"data for every dashboard query (empty: {empty})", every=1.0
    )
    # The host's root container is a single series per family, name="" (absent).
    host = await fleet.stack.query('container_memory_usage_bytes{id="/"}')
    assert len(host) == 1
    assert "name" not in host[0]["metric"]
    running = await fleet.stack.query_value(
        _narrow(DASHBOARD_QUERIES["193 running containers"], fleet)
    )
    assert running == 3


async def test_awesome_alerts_cadvisor_rules_fire_for_their_container(fleet: Fleet) -> None:
    role = {"busy": fleet.busy, "unhealthy": fleet.unhealthy}
    seen: dict[str, set[str]] = {}

    async def each_fires_for_its_own() -> bool:
        for alert, (expr, _) in ALERT_RULES.items():
            result = await fleet.stack.query(_narrow(expr, fleet))
            seen[alert] = {s["metric"].get("name", "") for s in result}
        return all(
            (seen[a] == {role[who]}) if who else bool(seen[a])
            for a, (_, who) in ALERT_RULES.items()
        )

    await wait_until(
        each_fires_for_its_own, 60, f"each rule returning its container (seen {seen})", every=1.0
    )


async def test_container_killed_fires_for_a_container_that_vanished(fleet: Fleet) -> None:
    # awesome-prometheus-alerts' ContainerKilled is `time() - container_last_seen > 60`;
    # 5 s here, so the test waits seconds, not a minute: what it proves is that the
    # series outlives the container (cAdvisor's sample timestamp) for the lookback.
    rule = 'time() - container_last_seen{name="VICTIM"} > 5'.replace("VICTIM", fleet.victim)
    assert re.fullmatch(r"[a-z0-9-]+", fleet.victim)
    assert not await fleet.stack.query(rule)  # alive: seen at every poll
    sdk = docker.from_env()
    try:
        await _remove(sdk, fleet.victim)
    finally:
        sdk.close()

    async def fired() -> bool:
        return bool(await fleet.stack.query(rule))

    await wait_until(fired, 30, "ContainerKilled for the removed container", every=1.0)
    # Still there to query: the last sample, stamped with the last poll that saw it.
    last = await fleet.stack.query(f'container_last_seen{{name="{fleet.victim}"}}')
    assert len(last) == 1
    # The others, alive, never fire it.
    others = f'time() - container_last_seen{{name=~"{fleet.busy}|{fleet.unhealthy}"}} > 5'
    assert not await fleet.stack.query(others)


async def _remove(sdk: docker.DockerClient, name: str) -> None:
    container = await asyncio.to_thread(sdk.containers.get, name)
    await asyncio.to_thread(container.remove, force=True)


async def test_the_queries_here_name_only_metrics_the_exporter_serves() -> None:
    known = known_metric_names()
    for expr in [*DASHBOARD_QUERIES.values(), *(e for e, _ in ALERT_RULES.values())]:
        names = metric_names(expr.replace("NAME", 'name="x"'))
        assert names, expr
        assert names <= known, f"{expr}: {names - known}"
