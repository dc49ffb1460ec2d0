"""Remediation when its ledger fails between a stop and its start, and restarts cut by a kill.

On the in-memory driver, wired as ``serve`` wires it: the start follows the stop and the
ledger is repaired; cut restarts are finished in the background while ``/metrics`` answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.models import ContainerState
from exporter.remediation import RESTARTING
from exporter.state import (
    StateError,
    StateStore,
)
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, alert, start_api, webhook
from tests.support.api import settings_for as make_settings
from tests.support.remediation import (
    ACT,
    NAME,
    OTHER,
    fake,
    outcomes,
    post,
    sample,
)
from tests.support.waiting import wait_for


@pytest.fixture
def api_driver() -> FakeDriver:
    return fake()


# -- item 5: a ledger that fails between the stop and the start -------------------------


def failing_store(api: Api, when: Callable[[], bool]) -> None:
    """Make the store's transactions raise, as a full disk does, while ``when()``."""
    store = api.remediation.store
    real = store.transaction

    async def transaction(fn: Any, busy_timeout: float = 10.0) -> Any:
        if when():
            raise StateError(f"state database {store.path}: database or disk is full")
        return await real(fn, busy_timeout)

    store.transaction = transaction  # type: ignore[method-assign]


async def test_a_ledger_failing_after_the_stop_still_starts_and_is_repaired(api: Api) -> None:
    full = True
    failing_store(api, lambda: full and api.driver.calls["container_stop"] >= 1)
    payload = webhook(alert({**ACT, "name": NAME}))
    body = await post(api, payload)
    assert outcomes(body) == ["restarted"]
    assert "recorded once the state database works again" in body["outcomes"][0]["detail"]
    assert api.driver.find(NAME).state is ContainerState.RUNNING
    assert api.driver.calls["container_start"] == 1
    # Said aloud: counted, owed, not ready; other alerts are 503 (nothing done for them).
    assert sample(api, "sysinner_exporter_remediation_state_write_failures_total") == 2.0
    assert sample(api, "sysinner_exporter_remediation_state_owed_writes") == 2.0
    assert sample(api, "sysinner_exporter_remediation_state_up") == 0.0
    status, ready = await api.call("GET", "/readyz")
    assert status == 503
    assert "disk is full" in ready["remediation_state_error"]
    await post(api, webhook(alert({**ACT, "name": OTHER}, fingerprint="o")), status=503)
    assert api.driver.calls["container_stop"] == 1

    full = False

    async def repaired() -> bool:
        return api.remediation.owed_writes() == 0 and api.remediation.state_up()

    await wait_for(repaired, 30, "the owed ledger writes")
    status, history = await api.call("GET", "/api/v1/remediation/history")
    assert [(h["container"], h["outcome"]) for h in history] == [(NAME, "restarted")]
    # Alertmanager's retry: it was done, once.
    assert outcomes(await post(api, payload)) == ["duplicate"]
    assert outcomes(await post(api, webhook(alert({**ACT, "name": OTHER}, fingerprint="o")))) == [
        "restarted"
    ]
    assert api.driver.calls["container_stop"] == 2


async def test_a_decision_the_ledger_refused_is_a_503_and_the_retry_acts(api: Api) -> None:
    full = True
    failing_store(api, lambda: full)
    payload = webhook(alert({**ACT, "name": NAME}))
    status, body = await api.call("POST", "/api/v1/alerts", json=payload)
    assert status == 503
    assert "disk is full" in body["detail"]
    assert api.driver.calls["container_stop"] == 0
    full = False

    async def up() -> bool:
        return api.remediation.state_up()

    await wait_for(up, 30, "the state store back")
    assert outcomes(await post(api, payload)) == ["restarted"]  # not "duplicate"
    assert api.driver.calls["container_stop"] == 1


# -- item 15: cut restarts are finished in the background --------------------------------


async def test_cut_restarts_are_finished_concurrently_while_metrics_answer(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    names = [f"app-abcdef12-{i:04x}" for i in range(1, 4)]
    store = StateStore(settings.state_dir)
    await store.open()
    for name in names:
        await store.transaction(
            lambda ledger, name=name: ledger.record_decision(  # type: ignore[misc]
                at=1.0,
                container=name,
                fingerprint=name,
                starts_at="2026-11-28T10:00:00+00:00",
                alertname="A",
                outcome=RESTARTING,
                detail="restart requested",
                dry_run=False,
            )
        )
    await store.close()
    driver = FakeDriver()
    for name in names:
        driver.add(name, ContainerState.STOPPED)
    release = asyncio.Event()
    real_start = driver.container_start

    async def slow_start(name: str) -> None:
        driver.calls["slow_start"] += 1
        await release.wait()
        await real_start(name)

    driver.container_start = slow_start  # type: ignore[method-assign]
    api = await start_api(aiohttp_client, settings, driver)

    async def all_starting() -> bool:
        return driver.calls["slow_start"] == len(names)

    # Every cut restart is under way at once, and /metrics answers meanwhile.
    await wait_for(all_starting, 30, "the cut restarts' starts")
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert {driver.find(n).state for n in names} == {ContainerState.STOPPED}
    release.set()
    await api.remediation.idle()
    assert {driver.find(n).state for n in names} == {ContainerState.RUNNING}
    status, history = await api.call("GET", "/api/v1/remediation/history")
    assert status == 200
    assert {h["outcome"] for h in history} == {"restarted"}
