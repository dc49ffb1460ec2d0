"""A restart cut by an exporter kill is finished when the state is opened again, once.

The engine test (test_crash_safety.py) cannot choose where the kill lands; here
each place is set up by hand: the decision committed as ``restarting`` and the
container as the kill would have left it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import EngineUnreachableError
from exporter.models import ContainerState
from exporter.naming import NamingScheme
from exporter.remediation import (
    RESTARTING,
    STARTING,
    AlertmanagerWebhook,
    Recheck,
    RemediationPolicy,
    Remediator,
)
from exporter.state import DecisionRecord, Ledger, StateStore
from tests.faults.hostile import RecordingDriver
from tests.support.api import alert, webhook

pytestmark = pytest.mark.faults

NAME = "app-abcdef12-0001"
DECIDED_AT = 1_800_000_000.5
FINGERPRINT = "f"
STARTS_AT = "2026-11-28T10:00:00+00:00"


async def _reopen(
    tmp_path: Path,
    driver: RecordingDriver,
    stored: str,
    dry_run: bool = False,
    recheck: Recheck | None = None,
) -> DecisionRecord:
    """Commit a decision left ``stored``, open a new Remediator on the state; return it."""
    store = StateStore(tmp_path)
    await store.open()

    def decide(ledger: Ledger) -> None:
        ledger.record_action(FINGERPRINT, STARTS_AT, NAME, DECIDED_AT, False)
        ledger.record_decision(
            at=DECIDED_AT,
            container=NAME,
            fingerprint=FINGERPRINT,
            starts_at=STARTS_AT,
            alertname="A",
            outcome=stored,
            detail="restart requested",
            dry_run=False,
        )

    await store.transaction(decide)
    await store.close()
    remediation = Remediator(
        driver,
        StateStore(tmp_path),
        NamingScheme(),
        RemediationPolicy(dry_run=dry_run),
        clock=lambda: DECIDED_AT + 5,
    )
    remediation.recheck = recheck
    await remediation.open()
    try:
        await remediation.idle()  # cut restarts are finished in the background
        (decision,) = await remediation.history(10)
    finally:
        await remediation.close()
    # Opened once more, nothing further happens: the decision is final now.
    again = Remediator(driver, StateStore(tmp_path), NamingScheme(), RemediationPolicy())
    acted = list(driver.acted)
    await again.open()
    await again.idle()
    await again.close()
    assert driver.acted == acted
    return decision


@pytest.mark.parametrize("stored", [RESTARTING, STARTING])
async def test_cut_while_stopped_the_start_is_done(tmp_path: Path, stored: str) -> None:
    # RESTARTING: the stop took effect before the kill; STARTING: the start had not.
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED)
    decision = await _reopen(tmp_path, driver, stored)
    assert decision.outcome == "restarted"
    assert driver.acted == [("start", NAME)]
    assert driver.find(NAME).state is ContainerState.RUNNING


async def test_cut_after_the_start_nothing_more_is_done(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME)
    decision = await _reopen(tmp_path, driver, STARTING)
    assert decision.outcome == "restarted"
    assert driver.acted == []


async def test_cut_before_the_stop_took_effect_the_whole_restart_is_done(tmp_path: Path) -> None:
    # Killed while waiting for a restart slot, or before the engine got the stop; the
    # container may well have been started in the decision's own second: time says nothing.
    driver = RecordingDriver()
    driver.add(NAME, started=int(DECIDED_AT))
    decision = await _reopen(tmp_path, driver, RESTARTING)
    assert decision.outcome == "restarted"
    assert driver.acted == [("stop", NAME), ("start", NAME)]


class Alertmanager:
    """Pull mode's answer to "is this alert still active?", and who asked."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.asked: list[str] = []

    async def __call__(self, fingerprint: str) -> bool:
        self.asked.append(fingerprint)
        return self.active


async def _action_kept(tmp_path: Path) -> bool:
    store = StateStore(tmp_path)
    await store.open()
    try:
        return await store.transaction(
            lambda ledger: ledger.action_seen(FINGERPRINT, STARTS_AT, NAME, False)
        )
    finally:
        await store.close()


async def test_pull_mode_cut_before_the_stop_and_the_alert_gone_nothing_is_done(
    tmp_path: Path,
) -> None:
    # The exporter may have been down for long: its stop is redone only for an alert
    # still active; one that is not costs no budget and starts no cooldown.
    driver = RecordingDriver()
    driver.add(NAME, started=int(DECIDED_AT))
    am = Alertmanager(active=False)
    decision = await _reopen(tmp_path, driver, RESTARTING, recheck=am)
    assert decision.outcome == "resolved"
    assert am.asked == [FINGERPRINT]
    assert driver.acted == []
    assert not await _action_kept(tmp_path)


async def test_pull_mode_cut_before_the_stop_and_the_alert_active_the_restart_is_done(
    tmp_path: Path,
) -> None:
    driver = RecordingDriver()
    driver.add(NAME, started=int(DECIDED_AT))
    am = Alertmanager(active=True)
    decision = await _reopen(tmp_path, driver, RESTARTING, recheck=am)
    assert decision.outcome == "restarted"
    assert am.asked == [FINGERPRINT]
    assert driver.acted == [("stop", NAME), ("start", NAME)]
    assert await _action_kept(tmp_path)


@pytest.mark.parametrize("stored", [RESTARTING, STARTING])
async def test_pull_mode_cut_while_stopped_the_start_is_done_whatever_the_alert(
    tmp_path: Path, stored: str
) -> None:
    # Starting a container the restart stopped restores service: no alert is needed.
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED)
    am = Alertmanager(active=False)
    decision = await _reopen(tmp_path, driver, stored, recheck=am)
    assert decision.outcome == "restarted"
    assert am.asked == []
    assert driver.acted == [("start", NAME)]


async def test_container_gone_meanwhile(tmp_path: Path) -> None:
    driver = RecordingDriver()
    decision = await _reopen(tmp_path, driver, RESTARTING)
    assert decision.outcome == "not-found"
    assert driver.acted == []


async def test_engine_unreachable_is_an_error_not_a_retry_forever(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED)
    driver.fail("container_inspect", EngineUnreachableError("engine down"))
    decision = await _reopen(tmp_path, driver, STARTING)
    assert decision.outcome == "error"
    assert "engine down" in decision.detail
    assert driver.acted == []


async def test_dry_run_finishes_nothing(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED)
    decision = await _reopen(tmp_path, driver, RESTARTING, dry_run=True)
    assert decision.outcome == "error"
    assert "dry-run" in decision.detail
    assert driver.acted == []


async def test_a_restart_records_its_stop_before_its_start(tmp_path: Path) -> None:
    """The ledger moves to 'starting' once the stop is done, before the start is sent."""
    seen: list[str] = []
    driver = RecordingDriver()
    driver.add(NAME)
    store = StateStore(tmp_path)
    remediation = Remediator(driver, store, NamingScheme(), RemediationPolicy())
    original_start = driver.container_start

    async def start(name_or_id: str) -> None:
        (decision,) = await remediation.history(1)
        seen.append(decision.outcome)
        await original_start(name_or_id)

    driver.container_start = start  # type: ignore[method-assign]
    await remediation.open()
    try:
        payload = AlertmanagerWebhook.model_validate(
            webhook(alert({"action": "restart", "name": NAME}))
        )
        result = await remediation.handle(payload)
    finally:
        await remediation.close()
    assert [o.outcome.value for o in result.outcomes] == ["restarted"]
    assert seen == [STARTING]
