"""POST /api/v1/alerts: restart the right replica, once, within cooldown and budget."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import DriverError
from exporter.models import ContainerState
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, Clock, alert, start_api, webhook
from tests.support.api import settings_for as make_settings

APP = "abcdef12"
NAME = "app-abcdef12-000a"  # replica 10, as the metrics label it: replica="10"
OTHER = "app-abcdef12-000b"
ACT = {"action": "restart", "alertname": "ReplicaSick"}


def fake_with_containers() -> FakeDriver:
    fake = FakeDriver()
    fake.add(NAME)
    fake.add(OTHER)
    fake.add("postgres")
    return fake


@pytest.fixture
def api_driver() -> FakeDriver:
    return fake_with_containers()


async def post(api: Api, payload: dict[str, Any]) -> list[dict[str, Any]]:
    status, body = await api.call("POST", "/api/v1/alerts", json=payload)
    assert status == 200, body
    return list(body["outcomes"])


def outcomes(results: list[dict[str, Any]]) -> list[str]:
    return [r["outcome"] for r in results]


def restarts(api: Api) -> int:
    assert api.driver.calls["container_stop"] == api.driver.calls["container_start"]
    return api.driver.calls["container_stop"]


def actions(api: Api, result: str) -> float | None:
    return api.registry.get_sample_value(
        "sysinner_exporter_remediation_actions_total", {"action": "restart", "result": result}
    )


def quarantined_gauge(api: Api) -> float | None:
    return api.registry.get_sample_value("sysinner_exporter_remediation_quarantined")


async def test_one_firing_alert_restarts_once(api: Api) -> None:
    before = api.driver.find(NAME)
    other_before = api.driver.find(OTHER)
    results = await post(api, webhook(alert({**ACT, "app": APP, "replica": "10"})))
    assert results == [
        {
            "index": 0,
            "fingerprint": "f00d",
            "container": NAME,
            "outcome": "restarted",
            "detail": "stopped and started",
        }
    ]
    after = api.driver.find(NAME)
    assert after.state is ContainerState.RUNNING
    assert after.started > before.started
    assert after.pid != before.pid
    assert restarts(api) == 1
    assert api.driver.find(OTHER) == other_before  # untouched
    assert actions(api, "restarted") == 1.0
    assert actions(api, "cooldown") == 0.0


async def test_alert_by_name_label(api: Api) -> None:
    results = await post(api, webhook(alert({**ACT, "name": OTHER})))
    assert outcomes(results) == ["restarted"]
    assert results[0]["container"] == OTHER


async def test_same_alert_posted_50_times_concurrently_restarts_once(api: Api) -> None:
    api.driver.delays["container_stop"] = 0.05  # widen the race window
    payload = webhook(alert({**ACT, "name": NAME}))
    all_results = await asyncio.gather(*(post(api, payload) for _ in range(50)))
    flat = [r["outcome"] for results in all_results for r in results]
    assert flat.count("restarted") == 1
    assert flat.count("duplicate") == 49
    assert restarts(api) == 1
    assert actions(api, "duplicate") == 49.0


async def test_distinct_alerts_posted_concurrently_respect_the_cooldown(api: Api) -> None:
    api.driver.delays["container_stop"] = 0.05
    payloads = [webhook(alert({**ACT, "name": NAME}, fingerprint=f"fp{i}")) for i in range(10)]
    all_results = await asyncio.gather(*(post(api, p) for p in payloads))
    flat = [r["outcome"] for results in all_results for r in results]
    assert sorted(set(flat)) == ["cooldown", "restarted"]
    assert flat.count("restarted") == 1
    assert restarts(api) == 1


async def test_cooldown_then_restart_after_it(api: Api) -> None:
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="a")))) == [
        "restarted"
    ]
    api.clock.now += 299
    results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="b")))
    assert outcomes(results) == ["cooldown"]
    assert "1s left" in results[0]["detail"]
    api.clock.now += 2
    results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="c")))
    assert outcomes(results) == ["restarted"]
    assert restarts(api) == 2


async def test_repeat_of_the_same_occurrence_is_a_duplicate_even_after_the_cooldown(
    api: Api,
) -> None:
    payload = webhook(alert({**ACT, "name": NAME}))
    assert outcomes(await post(api, payload)) == ["restarted"]
    api.clock.now += 4 * 3600  # Alertmanager's default repeat_interval
    assert outcomes(await post(api, payload)) == ["duplicate"]
    # The same alert firing anew (a new startsAt) is a new occurrence.
    again = webhook(alert({**ACT, "name": NAME}, starts_at="2026-11-28T14:00:00Z"))
    assert outcomes(await post(api, again)) == ["restarted"]
    assert restarts(api) == 2


async def test_startsat_is_compared_as_a_time_not_text(api: Api) -> None:
    assert outcomes(
        await post(api, webhook(alert({**ACT, "name": NAME}, starts_at="2026-11-28T10:00:00Z")))
    ) == ["restarted"]
    same = webhook(alert({**ACT, "name": NAME}, starts_at="2026-11-28T12:00:00.000+02:00"))
    assert outcomes(await post(api, same)) == ["duplicate"]


async def test_fourth_alert_in_the_window_is_quarantined(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, remediation_cooldown_seconds=0)
    api = await start_api(aiohttp_client, settings, fake_with_containers())
    for i in range(3):
        results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint=f"fp{i}")))
        assert outcomes(results) == ["restarted"]
        api.clock.now += 60
    assert quarantined_gauge(api) == 0.0
    with caplog.at_level(logging.WARNING, logger="exporter.remediation"):
        results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="fp3")))
    assert outcomes(results) == ["quarantined"]
    assert "budget of 3" in results[0]["detail"]
    assert f"{NAME} quarantined" in caplog.text
    assert restarts(api) == 3
    assert quarantined_gauge(api) == 1.0
    assert actions(api, "quarantined") == 1.0

    # Still quarantined later in the window, for new alerts too; other containers are not.
    api.clock.now += 1800
    results = await post(
        api,
        webhook(
            alert({**ACT, "name": NAME}, fingerprint="fp4"),
            alert({**ACT, "name": OTHER}, fingerprint="fp5"),
        ),
    )
    assert outcomes(results) == ["quarantined", "restarted"]
    status, listed = await api.call("GET", "/api/v1/remediation/quarantine")
    assert status == 200
    assert [q["name"] for q in listed] == [NAME]

    # The window passes: the quarantine ends and the budget is whole again.
    api.clock.now += 3600
    assert quarantined_gauge(api) == 0.0
    results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="fp6")))
    assert outcomes(results) == ["restarted"]


async def test_quarantine_is_cleared_by_delete(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, remediation_cooldown_seconds=0, remediation_budget=1)
    api = await start_api(aiohttp_client, settings, fake_with_containers())
    await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="a")))
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="b")))) == [
        "quarantined"
    ]
    assert quarantined_gauge(api) == 1.0

    status, body = await api.call("DELETE", f"/api/v1/remediation/quarantine/{NAME}")
    assert (status, body) == (200, {"name": NAME, "was_quarantined": True})
    assert quarantined_gauge(api) == 0.0
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="c")))) == [
        "restarted"
    ]
    assert restarts(api) == 2

    status, body = await api.call("DELETE", f"/api/v1/remediation/quarantine/{OTHER}")
    assert (status, body) == (200, {"name": OTHER, "was_quarantined": False})
    status, body = await api.call("DELETE", "/api/v1/remediation/quarantine/postgres")
    assert status == 403


async def test_state_survives_recreating_the_app(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, remediation_budget=2, remediation_cooldown_seconds=100)
    fake = fake_with_containers()
    clock = Clock()
    first = await start_api(aiohttp_client, settings, fake, clock)
    await post(first, webhook(alert({**ACT, "name": NAME}, fingerprint="a")))
    clock.now += 101
    await post(first, webhook(alert({**ACT, "name": NAME}, fingerprint="b")))
    clock.now += 101
    assert outcomes(await post(first, webhook(alert({**ACT, "name": NAME}, fingerprint="c")))) == [
        "quarantined"
    ]
    await post(first, webhook(alert({**ACT, "name": OTHER}, fingerprint="d")))
    await first.client.close()  # runs the app's cleanup: the state store is closed

    second = await start_api(aiohttp_client, settings, fake, clock)
    assert quarantined_gauge(second) == 1.0
    results = await post(
        second,
        webhook(
            alert({**ACT, "name": NAME}, fingerprint="e"),  # still quarantined
            alert({**ACT, "name": OTHER}, fingerprint="d"),  # the same occurrence: duplicate
            alert({**ACT, "name": OTHER}, fingerprint="f"),  # in OTHER's cooldown
        ),
    )
    assert outcomes(results) == ["quarantined", "duplicate", "cooldown"]
    assert fake.calls["container_stop"] == 3
    status, history = await second.call("GET", "/api/v1/remediation/history")
    assert status == 200
    assert len(history) == 7


async def test_common_labels_alone_restart_nothing(api: Api) -> None:
    payload = webhook(
        alert({"alertname": "ReplicaSick"}, fingerprint="a"),
        alert({"alertname": "ReplicaSick", "action": "restart"}, fingerprint="b"),
        common={"action": "restart", "name": NAME, "app": APP, "replica": "10"},
    )
    results = await post(api, payload)
    assert outcomes(results) == ["ignored", "ignored"]
    assert "no name or app+replica" in results[1]["detail"]
    assert restarts(api) == 0
    assert api.driver.calls["container_inspect"] == 0


async def test_resolved_and_unlabelled_alerts_are_ignored(api: Api) -> None:
    payload = webhook(
        alert({**ACT, "name": NAME}, status="resolved"),
        alert({"alertname": "X", "name": NAME}, fingerprint="b"),
        alert({"action": "page", "name": NAME}, fingerprint="c"),
    )
    payload["status"] = "resolved"
    results = await post(api, payload)
    assert outcomes(results) == ["ignored", "ignored", "ignored"]
    assert results[0]["detail"] == "alert is resolved"
    assert restarts(api) == 0


async def test_dry_run_touches_nothing(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, remediation_dry_run=True)
    api = await start_api(aiohttp_client, settings, fake_with_containers())
    before = dict(api.driver.containers)
    status, body = await api.call(
        "POST", "/api/v1/alerts", json=webhook(alert({**ACT, "name": NAME}))
    )
    assert status == 200
    assert body["dry_run"] is True
    assert outcomes(body["outcomes"]) == ["dry-run"]
    # The dry run still applies the cooldown, so it previews what a live run would do.
    again = webhook(alert({**ACT, "name": NAME}, fingerprint="other"))
    assert outcomes(await post(api, again)) == ["cooldown"]
    assert api.driver.calls["container_stop"] == 0
    assert api.driver.calls["container_start"] == 0
    assert api.driver.containers == before
    status, history = await api.call("GET", "/api/v1/remediation/history")
    assert history[-1]["dry_run"] is True
    assert history[-1]["outcome"] == "dry-run"


async def test_unmanaged_and_missing_targets(api: Api) -> None:
    results = await post(
        api,
        webhook(
            alert({**ACT, "name": "postgres"}, fingerprint="a"),
            alert({**ACT, "app": APP, "replica": "0a"}, fingerprint="b"),  # hex: not as exported
            alert({**ACT, "name": "app-abcdef12-00ff"}, fingerprint="c"),
            alert({**ACT, "name": NAME, "app": APP, "replica": "11"}, fingerprint="d"),
        ),
    )
    assert outcomes(results) == ["unmanaged", "unmanaged", "not-found", "ignored"]
    assert "disagree" in results[3]["detail"]
    assert restarts(api) == 0
    assert api.driver.find("postgres").state is ContainerState.RUNNING


async def test_failed_restart_is_an_error_outcome_and_counts(api: Api) -> None:
    api.driver.fail("container_start", DriverError(500, "cannot start: oci runtime"))
    results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="a")))
    assert outcomes(results) == ["error"]
    assert "oci runtime" in results[0]["detail"]
    status, history = await api.call("GET", f"/api/v1/remediation/history?container={NAME}")
    assert status == 200
    assert [h["outcome"] for h in history] == ["error"]
    # The attempt counts: no retry storm while the cooldown runs.
    api.driver.heal()
    results = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="b")))
    assert outcomes(results) == ["cooldown"]


async def test_global_concurrency_limit(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, remediation_concurrency=1)
    fake = FakeDriver()
    names = [f"app-abcdef12-{i:04x}" for i in range(1, 5)]
    for n in names:
        fake.add(n)
    in_flight = 0
    peak = 0
    original = fake.container_stop

    async def counting_stop(name: str) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.02)
            await original(name)
        finally:
            in_flight -= 1

    fake.container_stop = counting_stop  # type: ignore[method-assign]
    api = await start_api(aiohttp_client, settings, fake)
    payload = webhook(*(alert({**ACT, "name": n}, fingerprint=n) for n in names))
    assert outcomes(await post(api, payload)) == ["restarted"] * 4
    assert peak == 1


async def test_history_is_newest_first_and_limited(api: Api) -> None:
    for i in range(3):
        await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint=f"fp{i}")))
    status, history = await api.call("GET", "/api/v1/remediation/history?limit=2")
    assert status == 200
    assert [h["fingerprint"] for h in history] == ["fp2", "fp1"]
    assert [h["outcome"] for h in history] == ["cooldown", "cooldown"]
    status, history = await api.call("GET", f"/api/v1/remediation/history?container={OTHER}")
    assert history == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda p: p["alerts"][0]["labels"].update(replica=10), "alerts.0.labels.replica"),
        (lambda p: p.pop("alerts"), "alerts"),
    ],
)
async def test_invalid_payload_is_422_naming_the_field(api: Api, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    payload = webhook(alert({**ACT, "name": NAME}))
    mutate(payload)
    status, body = await api.call("POST", "/api/v1/alerts", json=payload)
    assert status == 422, body
    assert body["detail"][0]["field"] == field
    assert restarts(api) == 0


async def test_metrics_count_every_result(api: Api) -> None:
    await post(
        api,
        webhook(
            alert({**ACT, "name": NAME}, fingerprint="a"),
            alert({**ACT, "name": "postgres"}, fingerprint="b"),
            alert({"name": NAME}, fingerprint="c"),
        ),
    )
    assert actions(api, "restarted") == 1.0
    assert actions(api, "unmanaged") == 1.0
    assert actions(api, "ignored") == 1.0
    assert actions(api, "not-found") == 0.0
    assert quarantined_gauge(api) == 0.0
