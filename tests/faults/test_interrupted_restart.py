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
from exporter.remediation import RESTARTING, RemediationPolicy, Remediator
from exporter.state import DecisionRecord, StateStore
from tests.faults.hostile import RecordingDriver

pytestmark = pytest.mark.faults

NAME = "app-abcdef12-0001"
DECIDED_AT = 1_800_000_000.5


async def _reopen(tmp_path: Path, driver: RecordingDriver, dry_run: bool = False) -> DecisionRecord:
    """Commit a 'restarting' decision, open a new Remediator on the state; return the decision."""
    store = StateStore(tmp_path)
    await store.open()
    await store.transaction(
        lambda ledger: ledger.record_decision(
            at=DECIDED_AT,
            container=NAME,
            fingerprint="f",
            starts_at="2026-11-28T10:00:00+00:00",
            alertname="A",
            outcome=RESTARTING,
            detail="restart requested",
            dry_run=False,
        )
    )
    await store.close()
    remediation = Remediator(
        driver,
        StateStore(tmp_path),
        NamingScheme(),
        RemediationPolicy(dry_run=dry_run),
        clock=lambda: DECIDED_AT + 5,
    )
    await remediation.open()
    try:
        (decision,) = await remediation.history(10)
    finally:
        await remediation.close()
    # Opened once more, nothing further happens: the decision is final now.
    again = Remediator(driver, StateStore(tmp_path), NamingScheme(), RemediationPolicy())
    acted = list(driver.acted)
    await again.open()
    await again.close()
    assert driver.acted == acted
    return decision


async def test_cut_between_stop_and_start_the_start_is_done(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED, started=int(DECIDED_AT) - 100)
    decision = await _reopen(tmp_path, driver)
    assert decision.outcome == "restarted"
    assert driver.acted == [("start", NAME)]
    assert driver.find(NAME).state is ContainerState.RUNNING


async def test_cut_after_the_start_nothing_more_is_done(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, started=int(DECIDED_AT))  # started in the decision's own second
    decision = await _reopen(tmp_path, driver)
    assert decision.outcome == "restarted"
    assert driver.acted == []


async def test_cut_before_the_stop_the_whole_restart_is_done(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, started=int(DECIDED_AT) - 100)
    decision = await _reopen(tmp_path, driver)
    assert decision.outcome == "restarted"
    assert driver.acted == [("stop", NAME), ("start", NAME)]


async def test_container_gone_meanwhile(tmp_path: Path) -> None:
    driver = RecordingDriver()
    decision = await _reopen(tmp_path, driver)
    assert decision.outcome == "not-found"
    assert driver.acted == []


async def test_engine_unreachable_is_an_error_not_a_retry_forever(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED)
    driver.fail("container_inspect", EngineUnreachableError("engine down"))
    decision = await _reopen(tmp_path, driver)
    assert decision.outcome == "error"
    assert "engine down" in decision.detail
    assert driver.acted == []


async def test_dry_run_finishes_nothing(tmp_path: Path) -> None:
    driver = RecordingDriver()
    driver.add(NAME, ContainerState.STOPPED)
    decision = await _reopen(tmp_path, driver, dry_run=True)
    assert decision.outcome == "error"
    assert "dry-run" in decision.detail
    assert driver.acted == []
