"""Pulled alerts judged again (issue 16): an unchanged outcome writes no new history row.

Pull mode judges an occurrence whose outcome may change (cooldown, quarantined,
operator-stopped, ...) again every minute. The same outcome again is counted in
``sysinner_exporter_remediation_actions_total`` but not written to the history
once more; a different one (the cooldown over, it restarts) is. A webhook
delivery is Alertmanager's own repeat and is still recorded each time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.config import Settings, StatsSourceKind
from exporter.naming import NamingScheme
from exporter.remediation import (
    ACTION_RESTART,
    AlertmanagerAlert,
    AlertmanagerWebhook,
    Outcome,
    RemediationPolicy,
    Remediator,
)
from exporter.state import StateStore
from exporter.testing import FakeDriver
from exporter.wiring import wire
from tests.support.api import Clock, alert, webhook
from tests.support.remediation import ACT, NAME, fake

COOLDOWN = 300.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def driver() -> FakeDriver:
    return fake()


@pytest.fixture
async def remediator(tmp_path: Path, driver: FakeDriver, clock: Clock) -> AsyncIterator[Remediator]:
    r = Remediator(
        driver,
        StateStore(tmp_path),
        NamingScheme(),
        RemediationPolicy(cooldown_seconds=COOLDOWN),
        clock=clock,
    )
    await r.open()
    try:
        yield r
    finally:
        await r.close()


def occurrence(starts_at: str) -> AlertmanagerAlert:
    """One occurrence of the same alert (one fingerprint, its own startsAt)."""
    return AlertmanagerAlert.model_validate(
        alert({**ACT, "name": NAME}, fingerprint="f1", starts_at=starts_at)
    )


async def active(_: AlertmanagerAlert) -> bool:
    return True


async def pulled(r: Remediator, a: AlertmanagerAlert) -> Outcome:
    (result,) = await r.handle_pulled([a], active)
    return result.outcome


async def rows(r: Remediator) -> list[str]:
    return [d.outcome for d in reversed(await r.history(100))]


async def test_a_pulled_occurrence_judged_again_unchanged_writes_no_new_row(
    remediator: Remediator, driver: FakeDriver, clock: Clock
) -> None:
    assert await pulled(remediator, occurrence("2026-11-28T10:00:00Z")) is Outcome.RESTARTED
    again = occurrence("2026-11-28T10:05:00Z")  # it fired again, inside the cooldown
    clock.now += 10
    assert await pulled(remediator, again) is Outcome.COOLDOWN
    for _ in range(3):  # pull mode's re-judgments, a minute apart
        clock.now += 60
        assert await pulled(remediator, again) is Outcome.COOLDOWN
    assert await rows(remediator) == ["restarted", "cooldown"]
    # Every judgment is still counted.
    assert remediator.action_counts()[(ACTION_RESTART, Outcome.COOLDOWN.value)] == 4
    # The cooldown over, the outcome changes: recorded, and acted on.
    clock.now += COOLDOWN
    assert await pulled(remediator, again) is Outcome.RESTARTED
    assert await rows(remediator) == ["restarted", "cooldown", "restarted"]
    assert driver.calls["container_stop"] == 2
    assert driver.calls["container_start"] == 2


async def test_an_outcome_that_changes_and_changes_back_is_recorded_each_time(
    remediator: Remediator, driver: FakeDriver, clock: Clock
) -> None:
    assert await pulled(remediator, occurrence("2026-11-28T10:00:00Z")) is Outcome.RESTARTED
    again = occurrence("2026-11-28T10:05:00Z")
    assert await pulled(remediator, again) is Outcome.COOLDOWN
    await remediator.hold(NAME)  # an operator stops it through the API
    await driver.container_stop(NAME)
    clock.now += 60
    assert await pulled(remediator, again) is Outcome.OPERATOR_STOPPED
    clock.now += 60
    assert await pulled(remediator, again) is Outcome.OPERATOR_STOPPED
    await driver.container_start(NAME)  # and starts it again
    await remediator.release(NAME)
    clock.now += 60
    assert await pulled(remediator, again) is Outcome.COOLDOWN
    assert await rows(remediator) == ["restarted", "cooldown", "operator-stopped", "cooldown"]


async def test_webhook_deliveries_are_each_recorded_as_before(
    remediator: Remediator, clock: Clock
) -> None:
    assert await pulled(remediator, occurrence("2026-11-28T10:00:00Z")) is Outcome.RESTARTED
    payload = AlertmanagerWebhook.model_validate(
        webhook(alert({**ACT, "name": NAME}, fingerprint="f1", starts_at="2026-11-28T10:05:00Z"))
    )
    for _ in range(2):  # Alertmanager's repeat
        clock.now += 60
        result = await remediator.handle(payload)
        assert [o.outcome for o in result.outcomes] == [Outcome.COOLDOWN]
    assert await rows(remediator) == ["restarted", "cooldown", "cooldown"]


async def test_pull_wiring_rechecks_a_cut_restart_with_the_peers(tmp_path: Path) -> None:
    # The puller answers remediation's "still active?" from the same filtered query it polls.
    served: list[dict[str, Any]] = []

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"cluster": {"status": "ready", "peers": []}})

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_get("/api/v2/status", status)
    app.router.add_get("/api/v2/alerts", alerts)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        settings = Settings(
            state_dir=tmp_path / "state",
            alertmanager_url=[str(server.make_url("")).rstrip("/")],
            stats_source=StatsSourceKind.DOCKER,
            collect_processes=False,
        )
        wired = wire(settings, driver=fake(), poll_in_background=False)
        assert wired.remediation is not None
        assert wired.alert_puller is not None
        recheck = wired.remediation.recheck
        assert recheck is not None
        assert not await recheck("f1")
        served.append(
            {
                **alert({**ACT, "name": NAME}, fingerprint="f1"),
                "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
            }
        )
        assert await recheck("f1")
        assert not await recheck("f2")
        await wired.alert_puller.client.close()
    finally:
        await server.close()
