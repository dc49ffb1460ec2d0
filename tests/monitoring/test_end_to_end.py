"""The whole monitoring stack on loopback: exporter -> Prometheus -> Alertmanager -> webhook.

One stack per module, shared by the three steps of the issue, in this order:

* a managed replica whose working set crosses a test-only threshold fires
  the memory alert, Alertmanager delivers it to the exporter's webhook, and
  the exporter restarts it exactly once however often the alert is re-sent;
* an unmanaged container in the same state fires the same alert, is
  delivered the same way, and is never restarted;
* every query of the dashboard returns data from that Prometheus (last, so
  rates and the remediation counters have samples).

The rules are the repository's plus one test-only copy of the memory alert
with a 50% threshold and a 2 s ``for:``; the Alertmanager route is the
repository's with second-long timings. Logs stay under artifacts/monitoring/.

Steps 2 and 3 need ``sysinner-exporter serve`` to answer the webhook; when
it does not, they fail at once saying what it answered.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import yaml

from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerCreateOptions
from exporter.naming import container_name
from tests.monitoring.monitoring import (
    RULES,
    label_values_parts,
    load_dashboard,
    panel_queries,
    substitute,
    variable_query,
)
from tests.support.engine import TEST_IMAGE, new_app_id
from tests.support.processes import Service
from tests.support.stack import JOB, Stack, new_run_dir, require_stack
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.engine,
    pytest.mark.promtool,
    pytest.mark.prometheus,
    pytest.mark.asyncio(loop_scope="module"),
]

FAST_ALERT = "SysinnerContainerMemoryNearLimitFast"
MEMORY_LIMIT = 32 * 1024 * 1024
#: Fills 24 MiB of /dev/shm (shmem counts in the working set, ~77% of the
#: limit) at every start, so the replica is still "sick" after its restart
#: and the alert keeps being re-sent; exits on SIGTERM so restarts are quick.
HOG_CMD = [
    "/bin/sh",
    "-c",
    "head -c 24m /dev/zero > /dev/shm/hog; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
]
RESTARTED = 'sysinner_exporter_remediation_actions_total{action="restart", result="restarted"}'


@dataclass
class E2E:
    """The running stack and the containers the steps look at."""

    stack: Stack
    driver: DockerDriver
    app: str
    managed: str
    unmanaged: str
    started: dict[str, int]
    exporter: Service
    webhook: tuple[int, str]

    def require_webhook(self) -> None:
        """Fail unless the exporter's webhook accepted an (empty) Alertmanager payload."""
        status, body = self.webhook
        if status != 200:
            pytest.fail(
                f"POST /api/v1/alerts on `sysinner-exporter serve` answered {status}: {body}; "
                "remediation must be wired into serve for this step (issue 5)"
            )


def fast_rules(names: list[str]) -> dict[str, Any]:
    """Return a rule group with the memory alert at 50% for 2 s, for ``names`` only."""
    (rule,) = [
        r
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if r.get("alert") == "SysinnerContainerMemoryNearLimit"
    ]
    expr = rule["expr"]
    # Only this test's containers: the engine is shared with other tests.
    # Container names are [a-z0-9-]: nothing to escape in an RE2 alternation.
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in names), names
    selector = '{name=~"' + "|".join(names) + '"}'
    fast = expr.replace(
        "container_memory_working_set_bytes", "container_memory_working_set_bytes" + selector
    )
    fast = fast.replace("> 0.9", "> 0.5")
    assert fast.count(selector) == 1, f"alerts/rules.yml changed shape: {expr!r}"
    assert "> 0.5" in fast, f"alerts/rules.yml changed shape: {expr!r}"
    return {
        "groups": [
            {
                "name": "e2e-fast",
                "rules": [{**rule, "alert": FAST_ALERT, "expr": fast, "for": "2s"}],
            }
        ]
    }


async def _started(driver: DockerDriver, name: str) -> int:
    return (await driver.container_inspect(name)).started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def e2e(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[E2E]:
    require_stack()
    logdir = new_run_dir()
    workdir = tmp_path_factory.mktemp("monitoring-stack")

    app = new_app_id()
    managed = container_name(app, 1)
    unmanaged = f"e2e-unmanaged-{app}"
    driver = DockerDriver(stop_grace=3)
    made: list[str] = []
    stack = Stack(workdir, logdir, token=secrets.token_urlsafe(24))
    try:
        for name, cpu in ((managed, 500), (unmanaged, 0)):
            made.append(name)
            await driver.container_create(
                ContainerCreateOptions(
                    name=name,
                    image=TEST_IMAGE,
                    cmd=HOG_CMD,
                    memory_limit=MEMORY_LIMIT,
                    cpu_limit=cpu,
                )
            )
            await driver.container_start(name)
        started = {n: await _started(driver, n) for n in made}

        rules = workdir / "e2e-rules.yml"
        rules.write_text(yaml.safe_dump(fast_rules(made)))
        shutil.copy(rules, logdir / "e2e-rules.yml")
        # The naming pattern admits only this test's app: the engine is shared,
        # and no other test's container may ever be restarted by this stack.
        exporter = await stack.start_exporter(
            "--collect.all",
            "--naming.pattern",
            rf"app-(?P<app>{app})-(?P<replica>[0-9a-f]{{4}})",
        )
        webhook = await stack.probe_webhook(exporter)
        alertmanager = await stack.start_alertmanager(exporter.url + "/api/v1/alerts")
        await stack.start_prometheus(exporter, alertmanager, [RULES, rules])

        async def both_firing() -> bool:
            firing = await stack.query(f'ALERTS{{alertname="{FAST_ALERT}", alertstate="firing"}}')
            return {s["metric"].get("name") for s in firing} == {managed, unmanaged}

        await wait_until(
            both_firing, 30, f"{FAST_ALERT} firing for both containers", services=stack.services
        )
        yield E2E(stack, driver, app, managed, unmanaged, started, exporter, webhook)
    except BaseException:
        print(stack.tails())
        raise
    finally:
        try:
            await stack.close()
        finally:
            for name in made:
                await driver.container_remove(name)
            await driver.close()


@pytest.fixture
def report_logs(e2e: E2E) -> Any:
    """Print the services' log tails when the test fails."""

    class Reporter:
        failed = True

    reporter = Reporter()
    yield reporter
    if reporter.failed:
        print(e2e.stack.tails())


async def test_the_firing_alert_carries_the_webhook_labels(e2e: E2E, report_logs: Any) -> None:
    (alert,) = await e2e.stack.query(f'ALERTS{{alertname="{FAST_ALERT}", name="{e2e.managed}"}}')
    labels = alert["metric"]
    assert labels["action"] == "restart"
    assert (labels["app"], labels["replica"]) == (e2e.app, "1")
    assert labels["job"] == JOB
    (other,) = await e2e.stack.query(f'ALERTS{{alertname="{FAST_ALERT}", name="{e2e.unmanaged}"}}')
    assert "app" not in other["metric"]
    report_logs.failed = False


async def test_step2_sick_replica_is_restarted_exactly_once(e2e: E2E, report_logs: Any) -> None:
    e2e.require_webhook()
    stack, name = e2e.stack, e2e.managed
    before = e2e.started[name]

    async def restarted_in_docker() -> int | None:
        now = await _started(e2e.driver, name)
        return now if now != before else None

    after = await wait_until(
        restarted_in_docker, 40, f"{name} restarted by the webhook", services=stack.services
    )
    await wait_until(
        lambda: _value_is(stack, f'container_start_time_seconds{{name="{name}"}}', after),
        15,
        "Prometheus to see the new start time",
    )
    await wait_until(lambda: _value_is(stack, RESTARTED, 1), 15, "restarted counter = 1")
    # The replica is still sick and Alertmanager re-sends the alert every few
    # seconds: wait until the exporter has refused at least two re-sends.
    refused = 'sum(sysinner_exporter_remediation_actions_total{result=~"duplicate|cooldown"})'
    await wait_until(lambda: _value_at_least(stack, refused, 2), 30, "re-sends refused")

    assert await _started(e2e.driver, name) == after, "restarted more than once"
    assert await stack.query_value(RESTARTED) == 1
    assert (
        await stack.query_value(f'changes(container_start_time_seconds{{name="{name}"}}[5m])') == 1
    )
    report_logs.failed = False


async def test_step3_unmanaged_container_is_never_restarted(e2e: E2E, report_logs: Any) -> None:
    stack, name = e2e.stack, e2e.unmanaged
    assert await _started(e2e.driver, name) == e2e.started[name]
    # Alertmanager routes its alert to the exporter's receiver...
    am = next(s for s in stack.services if s.name == "alertmanager")
    async with stack.http.get(
        am.url + "/api/v2/alerts", params={"filter": f'name="{name}"', "active": "true"}
    ) as r:
        alerts = await r.json()
    assert alerts, "Alertmanager has no alert for the unmanaged container"
    assert {"sysinner-exporter"} <= {rcv["name"] for a in alerts for rcv in a["receivers"]}
    e2e.require_webhook()
    # ...the webhook receives it and refuses it (nothing else here is unmanaged and sick)...
    unmanaged = 'sum(sysinner_exporter_remediation_actions_total{result="unmanaged"})'
    await wait_until(lambda: _value_at_least(stack, unmanaged, 2), 30, "unmanaged alerts refused")
    # ...and the container kept its start time throughout.
    assert await _started(e2e.driver, name) == e2e.started[name]
    assert (
        await stack.query_value(f'changes(container_start_time_seconds{{name="{name}"}}[5m])') == 0
    )
    assert await stack.query_value(RESTARTED) == 1  # the managed replica's one restart only
    report_logs.failed = False


async def test_step1_every_dashboard_query_returns_data(e2e: E2E, report_logs: Any) -> None:
    dashboard = load_dashboard()
    values = {"app": e2e.app, "replica": "1", "instance": f"127.0.0.1:{e2e.exporter.port}"}
    queries = {q.where: substitute(q.expr, values) for q in panel_queries(dashboard)}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            selector, label = label_values_parts(variable_query(var))
            queries[f"variable {var['name']}"] = (
                f"count by ({label}) ({substitute(selector, values)})"
            )
    empty = dict(queries)

    async def all_have_data() -> bool:
        for where, expr in list(empty.items()):
            if await e2e.stack.query(expr):
                del empty[where]
        return not empty

    try:
        await wait_until(all_have_data, 30, "every dashboard query to return data", every=1)
    except pytest.fail.Exception:
        note = ""
        if any("remediation" in e for e in empty.values()) and e2e.webhook[0] != 200:
            note = f"\n(the remediation families need remediation wired into serve: {e2e.webhook})"
        lines = "\n".join(f"  {w}: {e}" for w, e in empty.items())
        pytest.fail(f"queries without data:\n{lines}{note}")
    report_logs.failed = False


async def _value_is(stack: Stack, expr: str, expected: float) -> bool:
    return await stack.query_value(expr) == expected


async def _value_at_least(stack: Stack, expr: str, least: float) -> bool:
    value = await stack.query_value(expr)
    return value is not None and value >= least
