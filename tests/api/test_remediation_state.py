"""Remediation's state: bounded for every outcome, kept honest when the store fails.

On the in-memory driver, wired as ``serve`` wires it: the history's row and
byte bounds, per-name memory, the dedupe key, quarantine clears, operator
stops. A ledger that fails and cut restarts: ``test_remediation_state_faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from exporter.models import ContainerState
from exporter.state import (
    ALERTNAME_MAX_CHARS,
    HISTORY_BYTES_EVERY,
    HISTORY_KEPT,
    HISTORY_MAX_BYTES,
    WAL_MAX_BYTES,
    Ledger,
    StateStore,
)
from exporter.testing import FakeDriver
from tests.support.api import Api, ClientFactory, Clock, alert, start_api, webhook
from tests.support.api import settings_for as make_settings
from tests.support.remediation import (
    ACT,
    NAME,
    OTHER,
    count,
    fake,
    file_bytes,
    outcomes,
    post,
    sample,
)

#: The state file (main + WAL) stays under this whatever is pushed at it: the history's
#: text bound, SQLite's own overhead per row and page, the WAL's limit.
STATE_FILE_MAX_BYTES = 2 * HISTORY_MAX_BYTES + WAL_MAX_BYTES


@pytest.fixture
def api_driver() -> FakeDriver:
    return fake()


# -- item 7: the history's bound holds for every outcome -------------------------------


@pytest.mark.parametrize("bulky", [False, True], ids=["rows", "bytes"])
async def test_12000_alerts_keep_the_history_bounded(api: Api, bulky: bool) -> None:
    total = HISTORY_KEPT + 2_000
    # Bulky: every field at its longest, so the byte bound binds before the row bound.
    alertname = "A" * 1_000 if bulky else "Sick"
    fingerprint = "f" * 240 if bulky else ""
    batch = 200 if bulky else 1_000  # a delivery stays well under --api.max-body-bytes
    for first in range(0, total, batch):
        # One container, a new alert each: one restart, then a cooldown row each.
        alerts = [
            alert(
                {"action": "restart", "alertname": alertname, "name": NAME},
                fingerprint=f"{fingerprint}{i}",
            )
            for i in range(first, first + batch)
        ]
        assert set(outcomes(await post(api, webhook(*alerts)))) <= {"restarted", "cooldown"}
    rows, text_bytes = await api.remediation.store.transaction(Ledger.history_size)
    assert rows <= HISTORY_KEPT
    # The byte bound is checked every HISTORY_BYTES_EVERY rows: at most that many more.
    row_bytes_max = 300 + ALERTNAME_MAX_CHARS + 100
    assert text_bytes <= HISTORY_MAX_BYTES + HISTORY_BYTES_EVERY * row_bytes_max
    if bulky:
        assert rows < HISTORY_KEPT  # the bytes bound it
    else:
        assert rows == HISTORY_KEPT
    assert file_bytes(api) <= STATE_FILE_MAX_BYTES, file_bytes(api)
    print(f"\nFIGURES rows={rows} text_bytes={text_bytes} file_bytes={file_bytes(api)}")
    # The newest decisions are the ones kept.
    status, newest = await api.call("GET", "/api/v1/remediation/history?limit=1")
    assert status == 200
    assert newest[0]["fingerprint"] == f"{fingerprint}{total - 1}"
    assert len(newest[0]["alertname"]) <= ALERTNAME_MAX_CHARS


async def test_alerts_for_other_hosts_containers_write_no_history(api: Api) -> None:
    # Issue 16 item 2: a fan-out receiver posts every alert of a fleet to every host.
    total, batch = 3_000, 1_000
    for first in range(0, total, batch):
        alerts = [
            alert({**ACT, "name": f"app-00000000-{i:04x}"}, fingerprint=str(i))
            for i in range(first, first + batch)
        ]
        assert set(outcomes(await post(api, webhook(*alerts)))) == {"not-found"}
    await api.remediation.idle()
    assert count(api, "decisions") == 0
    assert sample(api, "sysinner_exporter_remediation_not_here_total") == float(total)
    not_found = {"action": "restart", "result": "not-found"}
    assert sample(api, "sysinner_exporter_remediation_actions_total", **not_found) == total
    # A container this host has is still judged and recorded.
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME})))) == ["restarted"]
    await api.remediation.idle()
    assert count(api, "decisions") == 1
    assert sample(api, "sysinner_exporter_remediation_not_here_total") == float(total)


# -- item 8: per-name memory ends with the name -----------------------------------------


async def test_12000_missing_names_leave_no_per_name_memory(api: Api) -> None:
    total, batch = 12_000, 1_000
    peak = 0
    for first in range(0, total, batch):
        alerts = [
            alert({**ACT, "name": f"app-00000000-{i:04x}"}, fingerprint=str(i))
            for i in range(first, first + batch)
        ]
        task = asyncio.create_task(post(api, webhook(*alerts)))
        while not task.done():
            peak = max(peak, api.remediation.tracked_names())
            await asyncio.sleep(0)
        assert set(outcomes(await task)) == {"not-found"}
        assert api.remediation.tracked_names() == 0
    assert peak <= batch  # at most the names of the deliveries in flight


async def test_clearing_quarantines_of_names_never_restarted_stores_nothing(api: Api) -> None:
    for i in range(3_000):
        status, body = await api.call(
            "DELETE", f"/api/v1/remediation/quarantine/app-00000000-{i:04x}"
        )
        assert (status, body["was_quarantined"]) == (200, False)
    assert count(api, "budget_reset") == 0
    assert api.remediation.tracked_names() == 0
    # A container restarted inside the window keeps its reset until the window passes.
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME})))) == ["restarted"]
    status, _ = await api.call("DELETE", f"/api/v1/remediation/quarantine/{NAME}")
    assert count(api, "budget_reset") == 1
    api.clock.now += api.settings.remediation_window_seconds + 1
    other = webhook(alert({**ACT, "name": OTHER}, fingerprint="other"))
    assert outcomes(await post(api, other)) == ["restarted"]  # a restart prunes
    assert count(api, "budget_reset") == 0


# -- item 15: the dedupe key names the container -----------------------------------------


async def test_one_alert_occurrence_for_two_containers_restarts_both(api: Api) -> None:
    same = {"fingerprint": "f00d", "starts_at": "2026-11-28T10:00:00Z"}
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME}, **same)))) == ["restarted"]
    assert outcomes(await post(api, webhook(alert({**ACT, "name": OTHER}, **same)))) == [
        "restarted"
    ]
    assert outcomes(await post(api, webhook(alert({**ACT, "name": OTHER}, **same)))) == [
        "duplicate"
    ]
    assert api.driver.calls["container_start"] == 2


async def test_a_version_1_state_is_migrated_keeping_its_dedupe_memory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db:
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
                container TEXT, fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL,
                alertname TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '', dry_run INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE actions (fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL,
                dry_run INTEGER NOT NULL, container TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (fingerprint, starts_at, dry_run));
            CREATE INDEX actions_container ON actions (container, dry_run, at);
            INSERT INTO actions VALUES ('f', '2026-11-28T10:00:00+00:00', 0,
                'app-abcdef12-000a', 1800000000.0);
            """
        )
    store = StateStore(state)
    await store.open()
    try:
        assert store.lost is None
        seen = await store.transaction(
            lambda ledger: (
                ledger.action_seen("f", "2026-11-28T10:00:00+00:00", NAME, False),
                ledger.action_seen("f", "2026-11-28T10:00:00+00:00", OTHER, False),
            )
        )
    finally:
        await store.close()
    assert seen == (True, False)


# -- item 12: an operator's stop stands ------------------------------------------------


async def test_an_alert_leaves_a_container_the_operator_stopped(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, remediation_cooldown_seconds=0)
    driver, clock = fake(), Clock()
    api = await start_api(aiohttp_client, settings, driver, clock)
    status, body = await api.call("POST", f"/api/v1/containers/{NAME}/stop")
    assert (status, body["state"]) == (200, "stopped")
    body = await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="a")))
    assert outcomes(body) == ["operator-stopped"]
    assert "start it" in body["outcomes"][0]["detail"]
    assert driver.find(NAME).state is ContainerState.STOPPED
    assert driver.calls["container_start"] == 0
    # The stop is in the ledger: a new exporter on the same state respects it too.
    await api.client.close()
    api = await start_api(aiohttp_client, settings, driver, clock)
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="b")))) == [
        "operator-stopped"
    ]
    assert driver.calls["container_start"] == 0
    # Started through the API: remediation may act on it again.
    status, _ = await api.call("POST", f"/api/v1/containers/{NAME}/start")
    assert status == 200
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME}, fingerprint="c")))) == [
        "restarted"
    ]
    assert count(api, "operator_stops") == 0


async def test_a_container_started_by_other_means_is_handed_back(api: Api) -> None:
    status, _ = await api.call("POST", f"/api/v1/containers/{NAME}/stop")
    assert status == 200
    await api.driver.container_start(NAME)  # `docker start`, the engine's restart policy
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME})))) == ["restarted"]
    await api.remediation.idle()
    assert count(api, "operator_stops") == 0


async def test_an_operator_stop_ends_with_its_container(api: Api) -> None:
    status, _ = await api.call("POST", f"/api/v1/containers/{NAME}/stop")
    assert status == 200
    assert api.remediation.held() != {}
    await api.driver.container_remove(NAME)
    assert outcomes(await post(api, webhook(alert({**ACT, "name": NAME})))) == ["not-found"]
    await api.remediation.idle()
    assert api.remediation.held() == {}
    assert count(api, "operator_stops") == 0
