"""Pull mode against Debian's Alertmanager on loopback (issue 16 item 1).

A real 2-peer cluster (``--cluster.listen-address``/``--cluster.peer`` on
127.0.0.1) serves the alerts; the remediator runs in-process on the fake
driver so each test sees exactly which lifecycle calls were made. Covered:
one restart per alert across both peers and the webhook, another host's
alert and a silenced alert never acted on, an alert resolved between fetch
and action, one peer killed, both down (nothing restarted, /readyz and the
metrics say so), a peer whose cluster is not ready.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.amcluster import AlertmanagerCluster, alertmanager_binary, free_port, postable
from exporter.alertpull import AlertmanagerAlert, AlertmanagerClient, AlertPuller, PullErrorKind
from exporter.config import Settings, StatsSourceKind
from exporter.naming import NamingScheme
from exporter.remediation import Outcome, RemediationPolicy, Remediator
from exporter.state import StateStore
from exporter.testing import FakeDriver
from exporter.wiring import wire
from tests.support.api import ClientFactory
from tests.support.requirements import require
from tests.support.waiting import wait_for

SICK = "app-abcdef12-000a"
HEALTHY = "app-abcdef12-000b"
ELSEWHERE = "app-99999999-0001"  # another host's container
ACT = {"action": "restart", "alertname": "SysinnerContainerMemoryNearLimit"}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[AlertmanagerCluster]:
    require(
        alertmanager_binary() is not None,
        "prometheus-alertmanager (make system-deps)",
        needs="prometheus",
    )
    async with AlertmanagerCluster(tmp_path / "am", peers=2) as c:
        yield c


@contextlib.asynccontextmanager
async def remediator_on(tmp_path: Path, driver: FakeDriver) -> AsyncIterator[Remediator]:
    r = Remediator(driver, StateStore(tmp_path / "state"), NamingScheme(), RemediationPolicy())
    await r.open()
    try:
        yield r
    finally:
        await r.close()


def fleet_driver() -> FakeDriver:
    driver = FakeDriver()
    driver.add(SICK)
    driver.add(HEALTHY)
    return driver


def puller_for(
    urls: list[str], remediator: Remediator, driver: FakeDriver, instance: str | None = None
) -> AlertPuller:
    return AlertPuller(
        AlertmanagerClient(urls, timeout=3.0),
        remediator,
        interval=1.0,
        instance=instance,
        names_here=lambda: {c.name for c in driver.containers.values()},
    )


async def poll(puller: AlertPuller) -> list[str]:
    """Poll once and let the hand-over finish; return the names handed over."""
    handed = await puller.poll_once()
    await puller.idle()
    return [a.labels.get("name", "") for a in handed]


def lifecycle_calls(driver: FakeDriver) -> int:
    return driver.calls["container_stop"] + driver.calls["container_start"]


def decisions(tmp_path: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.sqlite3")) as db:
        return [(str(c), str(o)) for c, o in db.execute("SELECT container, outcome FROM decisions")]


def actions(tmp_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.sqlite3")) as db:
        return int(db.execute("SELECT COUNT(*) FROM actions").fetchone()[0])


@pytest.mark.prometheus
async def test_one_restart_per_alert_across_peers_polls_and_the_webhook(
    cluster: AlertmanagerCluster, tmp_path: Path
) -> None:
    driver = fleet_driver()
    await cluster.post_alerts(
        [postable({**ACT, "name": SICK}), postable({**ACT, "name": ELSEWHERE})]
    )
    async with remediator_on(tmp_path, driver) as remediator:
        puller = puller_for(cluster.urls, remediator, driver)
        try:
            assert await poll(puller) == [SICK]  # the other host's alert is not even handed over
            assert driver.calls["container_stop"] == 1
            assert driver.calls["container_start"] == 1
            assert puller.up
            # Later polls find the same occurrence active: nothing is handed over again.
            for _ in range(3):
                assert await poll(puller) == []
            # The same alert pushed by the webhook too: one decision, a duplicate.
            peer = cluster.peers[1]
            (served,) = await cluster.active(peer, {"name": SICK})
            webhook_alert = AlertmanagerAlert.model_validate(
                {**served, "status": "firing", "fingerprint": served["fingerprint"]}
            )
            again = await remediator._judge([webhook_alert], None)
            assert [o.outcome for o in again] == [Outcome.DUPLICATE]
            assert lifecycle_calls(driver) == 2
            assert (SICK, "restarted") in decisions(tmp_path)
            assert all(c != ELSEWHERE for c, _ in decisions(tmp_path))
            assert remediator.not_here == 0
        finally:
            await puller.client.close()


@pytest.mark.prometheus
async def test_instance_label_selects_this_hosts_alerts(
    cluster: AlertmanagerCluster, tmp_path: Path
) -> None:
    driver = fleet_driver()
    await cluster.post_alerts(
        [
            postable({**ACT, "name": SICK, "instance": "host-b:8733"}),
            postable({**ACT, "name": HEALTHY, "instance": "host-a:8733"}),
        ]
    )
    async with remediator_on(tmp_path, driver) as remediator:
        puller = puller_for(cluster.urls, remediator, driver, instance="host-a:8733")
        try:
            assert await poll(puller) == [HEALTHY]
            assert driver.calls["container_stop"] == 1
        finally:
            await puller.client.close()


@pytest.mark.prometheus
async def test_a_silenced_alert_is_never_acted_on(
    cluster: AlertmanagerCluster, tmp_path: Path
) -> None:
    driver = fleet_driver()
    await cluster.post_alerts([postable({**ACT, "name": SICK})])
    await cluster.silence({"name": SICK})

    async def silenced_everywhere() -> bool:
        found = [await cluster.active(p, {"name": SICK}) for p in cluster.peers]
        return found == [[], []]

    # Posted to one peer, gossiped to the other.
    await wait_for(silenced_everywhere, 30, "the silence on both peers")
    async with remediator_on(tmp_path, driver) as remediator:
        puller = puller_for(cluster.urls, remediator, driver)
        try:
            for _ in range(3):
                assert await poll(puller) == []
            assert puller.up
            assert lifecycle_calls(driver) == 0
            assert decisions(tmp_path) == []
        finally:
            await puller.client.close()


@pytest.mark.prometheus
async def test_an_alert_resolved_between_fetch_and_action_restarts_nothing(
    cluster: AlertmanagerCluster, tmp_path: Path
) -> None:
    driver = fleet_driver()
    labels = {**ACT, "name": SICK}
    firing = postable(labels)
    await cluster.post_alerts([firing])
    async with remediator_on(tmp_path, driver) as remediator:
        puller = puller_for(cluster.urls, remediator, driver)
        real_confirm = puller.confirm
        confirmed: list[bool] = []

        async def resolve_then_confirm(alert: AlertmanagerAlert) -> bool:
            # Prometheus resolves the alert after the fetch, before the stop.
            await cluster.post_alerts(
                [{**firing, "endsAt": postable(labels, resolved=True)["endsAt"]}]
            )

            async def gone() -> bool:
                return [await cluster.active(p, {"name": SICK}) for p in cluster.peers] == [[], []]

            await wait_for(gone, 30, "the alert resolved on both peers")
            answer = await real_confirm(alert)
            confirmed.append(answer)
            return answer

        puller.confirm = resolve_then_confirm  # type: ignore[method-assign]
        try:
            assert await poll(puller) == [SICK]
            assert confirmed == [False]
            assert lifecycle_calls(driver) == 0
            assert decisions(tmp_path) == [(SICK, "resolved")]
            assert actions(tmp_path) == 0  # the budget and cooldown were not charged
        finally:
            await puller.client.close()


@pytest.mark.prometheus
async def test_one_peer_killed_the_other_serves(
    cluster: AlertmanagerCluster, tmp_path: Path
) -> None:
    driver = fleet_driver()
    await cluster.post_alerts([postable({**ACT, "name": SICK})])
    cluster.peers[0].stop(signal.SIGKILL)
    async with remediator_on(tmp_path, driver) as remediator:
        puller = puller_for(cluster.urls, remediator, driver)
        try:
            assert await poll(puller) == [SICK]
            assert puller.up
            assert puller.error_counts()[PullErrorKind.UNREACHABLE] >= 1
            assert driver.calls["container_stop"] == 1
            assert driver.calls["container_start"] == 1
        finally:
            await puller.client.close()


@pytest.mark.prometheus
async def test_peers_that_disagree_on_a_resolve_do_not_hand_an_occurrence_twice(
    cluster: AlertmanagerCluster, tmp_path: Path
) -> None:
    # Peers do not gossip alerts: Prometheus sends each its own copy, so a resolve can
    # reach one peer and not yet the other. Found in the fleet benchmark's agent mode,
    # where the occurrence was handed over again (a `duplicate` history row each).
    driver = fleet_driver()
    alert = postable({**ACT, "name": SICK})
    await cluster.post_alerts([alert])
    async with remediator_on(tmp_path, driver) as remediator:
        puller = puller_for(cluster.urls, remediator, driver)
        try:
            assert await poll(puller) == [SICK]
            # The resolve reaches peer 0 only; the puller keeps asking peer 0.
            first, second = cluster.peers
            resolved = {**alert, "endsAt": postable({}, resolved=True)["endsAt"]}
            async with cluster.http.post(first.url + "/api/v2/alerts", json=[resolved]) as r:
                assert r.status == 200
            assert await cluster.active(first, {"name": SICK}) == []
            assert await poll(puller) == []
            # Peer 0 goes; peer 1 has not heard of the resolve: the same occurrence, active.
            first.stop(signal.SIGKILL)
            assert len(await cluster.active(second, {"name": SICK})) == 1
            assert await poll(puller) == []
            assert puller.up
            assert decisions(tmp_path) == [(SICK, "restarted")]
            assert lifecycle_calls(driver) == 2
        finally:
            await puller.client.close()


async def test_alertmanager_down_nothing_restarted_metrics_flow_readyz_says_so(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    driver = fleet_driver()
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    settings = Settings(
        state_dir=tmp_path / "state",
        poll_interval=1.0,
        alertmanager_url=dead,
        alertmanager_poll_interval=1.0,
        stats_source=StatsSourceKind.DOCKER,
        collect_processes=False,
    )
    wired = wire(settings, driver=driver, poll_in_background=False)
    puller = wired.alert_puller
    assert puller is not None
    client = await aiohttp_client(wired.app)
    await wired.poller.poll_once()

    async def polled_twice() -> bool:
        return puller.polls >= 2

    await wait_for(polled_twice, 30, "two polls of the dead peers")
    # Ready all the same: the metrics flow, and a readiness probe that pulled every exporter
    # of a fleet out of its Service for one Alertmanager outage would stall rollouts. The
    # body and the metrics say that nothing can be restarted meanwhile.
    async with client.get("/readyz") as r:
        ready: dict[str, Any] = await r.json()
        assert r.status == 200, ready
    assert ready["ready"] is True
    assert ready["engine_up"] is True
    assert ready["alertmanager_up"] is False
    assert "127.0.0.1" in ready["alertmanager_error"]
    async with client.get("/metrics") as r:
        text = await r.text()
    assert "sysinner_exporter_alertmanager_up 0.0" in text
    assert 'sysinner_exporter_alertmanager_errors_total{kind="unreachable"}' in text
    assert f'name="{SICK}"' in text  # container metrics keep flowing
    assert "sysinner_exporter_up 1.0" in text
    assert lifecycle_calls(driver) == 0


async def test_a_peer_whose_cluster_is_not_ready_is_not_acted_on(tmp_path: Path) -> None:
    # A settling peer may not have the cluster's silences yet: its alerts are not used.
    served = {"alerts": 0}

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"cluster": {"status": "settling", "peers": []}})

    async def alerts(request: web.Request) -> web.Response:
        served["alerts"] += 1
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/api/v2/status", status)
    app.router.add_get("/api/v2/alerts", alerts)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    driver = fleet_driver()
    try:
        async with remediator_on(tmp_path, driver) as remediator:
            puller = puller_for([str(server.make_url("")).rstrip("/")], remediator, driver)
            try:
                assert await poll(puller) == []
                assert not puller.up
                assert puller.error_counts()[PullErrorKind.NOT_READY] == 1
                assert "settling" in (puller.error or "")
                assert served["alerts"] == 0
            finally:
                await puller.client.close()
    finally:
        await server.close()


def test_pull_flags_parse_and_refuse_a_bad_url() -> None:
    s = Settings(alertmanager_url="http://127.0.0.1:9093/, http://127.0.0.1:9094")  # type: ignore[arg-type]
    assert s.alertmanager_url == ["http://127.0.0.1:9093", "http://127.0.0.1:9094"]
    assert s.alertmanager_poll_interval == 10.0
    with pytest.raises(ValueError, match="alertmanager_url"):
        Settings(alertmanager_url="ftp://x")  # type: ignore[arg-type]


class _StubRemediator:
    """Judges every pulled alert 'restarted' at once: the puller's own memory is under test."""

    policy = RemediationPolicy()

    def __init__(self) -> None:
        self.handed = 0

    def target(self, labels: dict[str, str]) -> str | None:
        return labels.get("name")

    async def handle_pulled(self, alerts: list[AlertmanagerAlert], confirm: Any) -> list[Any]:
        from exporter.remediation import AlertOutcome

        self.handed += len(alerts)
        return [
            AlertOutcome(index=i, fingerprint=a.fingerprint, container=None, outcome="restarted")
            for i, a in enumerate(alerts)
        ]


def _api_alert(i: int) -> dict[str, Any]:
    return {
        "labels": {**ACT, "name": f"app-00000000-{i:04x}"},
        "annotations": {},
        "startsAt": "2026-11-28T10:00:00Z",
        "endsAt": "2026-11-28T11:00:00Z",
        "fingerprint": f"{i:016x}",
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }


@contextlib.asynccontextmanager
async def _stub_peer(served: dict[str, list[dict[str, Any]]]) -> AsyncIterator[str]:
    """Serve ``served["alerts"]`` as a ready peer's answer; yield its URL."""

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"cluster": {"status": "ready"}})

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response(served["alerts"])

    app = web.Application()
    app.router.add_get("/api/v2/status", status)
    app.router.add_get("/api/v2/alerts", alerts)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def _stub_puller(
    served: dict[str, list[dict[str, Any]]], names: set[str], now: list[float]
) -> AsyncIterator[tuple[AlertPuller, _StubRemediator]]:
    """Yield a puller of this host's ``names`` on a stub peer, its clock ``now[0]``."""
    stub = _StubRemediator()
    async with _stub_peer(served) as url:
        puller = AlertPuller(
            AlertmanagerClient([url]),
            stub,  # type: ignore[arg-type]
            names_here=lambda: names,
            clock=lambda: now[0],
        )
        try:
            yield puller, stub
        finally:
            await puller.client.close()


async def test_an_answer_past_the_bound_is_cut_and_the_memory_ends_after_the_alerts() -> None:
    from exporter.alertpull import FORGET_SECONDS, MAX_ALERTS

    total = MAX_ALERTS + 500
    served = {"alerts": [_api_alert(i) for i in range(total)]}
    names = {f"app-00000000-{i:04x}" for i in range(total)}
    now = [1000.0]
    async with _stub_puller(served, names, now) as (puller, stub):
        assert len(await poll(puller)) == MAX_ALERTS, puller.error
        assert stub.handed == MAX_ALERTS
        assert len(puller._handed) == MAX_ALERTS
        assert await poll(puller) == []  # final outcomes: not handed again
        served["alerts"] = []  # every alert resolved
        now[0] += FORGET_SECONDS  # remembered that long after the last answer with them
        assert await poll(puller) == []
        assert len(puller._handed) == MAX_ALERTS
        now[0] += 1.0
        assert await poll(puller) == []
        assert len(puller._handed) == 0
        assert stub.handed == MAX_ALERTS


async def test_the_memory_of_handed_occurrences_has_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exporter import alertpull

    monkeypatch.setattr(alertpull, "MAX_REMEMBERED", 3)
    served = {"alerts": [_api_alert(i) for i in range(3)]}
    names = {f"app-00000000-{i:04x}" for i in range(5)}
    now = [1000.0]
    async with _stub_puller(served, names, now) as (puller, stub):
        assert len(await poll(puller)) == 3
        now[0] += 1.0
        served["alerts"] = [_api_alert(i) for i in (1, 3, 4)]  # 0 and 2 resolved, 3 and 4 new
        assert len(await poll(puller)) == 2
        now[0] += 1.0
        assert len(await poll(puller)) == 0  # past the bound: 0 and 2, seen least lately, go
        assert {fingerprint for fingerprint, _ in puller._handed} == {
            f"{i:016x}" for i in (1, 3, 4)
        }
        assert stub.handed == 5
