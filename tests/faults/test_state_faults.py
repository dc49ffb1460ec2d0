"""A state file that is corrupt, locked or emptied, under a real ``serve`` process.

The state database is remediation's alone: when it cannot be used the
exporter still starts and serves ``/metrics``; alerts answer 503 with the
reason, ``sysinner_exporter_remediation_state_up`` and ``/readyz`` say so, and
the store is reopened with a backoff until the file is fixed. A file found
empty is opened afresh but said aloud (a warning and
``sysinner_exporter_remediation_state_lost_total``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.state import StateStore
from tests.support.api import alert, webhook
from tests.support.faults import lock_held, record
from tests.support.processes import ExporterProcess, api_exporter
from tests.support.scraping import parse_scrape
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.engine]

TOKEN = "faults-state-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MISSING = "app-0000beef-0001"
QUARANTINED = "app-0000beef-0002"


#: Another process holding the state file's write lock until its stdin closes.
async def make_state(state: Path) -> Path:
    """Write a real state file (WAL mode, schema, one quarantine) as an exporter leaves it."""
    store = StateStore(state)
    await store.open()
    await store.transaction(lambda ledger: ledger.set_quarantine(QUARANTINED, 0.0, 4e9, False))
    await store.close()
    return store.path


async def status_of(http: aiohttp.ClientSession, exp: ExporterProcess) -> dict[str, Any]:
    """Return what the exporter says about its state: metrics, readiness, an alert's answer."""
    async with http.get(exp.url + "/metrics") as r:
        assert r.status == 200
        scrape = parse_scrape(await r.text())
    async with http.get(exp.url + "/readyz") as r:
        ready = (r.status, await r.json())
    payload = webhook(alert({"action": "restart", "name": MISSING}))
    async with http.post(exp.url + "/api/v1/alerts", json=payload, headers=AUTH) as r:
        alerted = (r.status, await r.json())
    return {
        "up": scrape.value("sysinner_exporter_remediation_state_up"),
        "lost": scrape.value("sysinner_exporter_remediation_state_lost_total"),
        "ready": ready,
        "alert": alerted,
    }


async def metrics_answer(http: aiohttp.ClientSession, exp: ExporterProcess) -> bool:
    assert exp.running(), exp.tail()
    with contextlib.suppress(aiohttp.ClientError):
        async with http.get(exp.url + "/metrics") as r:
            return r.status == 200
    return False


@pytest.mark.parametrize("fault", ["corrupt", "locked"])
async def test_an_unusable_state_file_is_a_remediation_fault_not_a_crash(
    engine: None,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
    fault: str,
) -> None:
    state = tmp_path / "state"
    path = await make_state(state)
    exp = api_exporter(f"exporter-state-{fault}", TOKEN, state, tmp_path)
    lock = contextlib.ExitStack()
    try:
        if fault == "corrupt":
            path.write_bytes(b"this is not a database, it was overwritten\n" * 200)
            for side in ("-wal", "-shm"):
                path.with_name(path.name + side).unlink(missing_ok=True)
        else:
            lock.enter_context(lock_held(path))
        exp.start()
        await wait_for(lambda: metrics_answer(http, exp), 30, "/metrics")
        broken = await status_of(http, exp)
        assert broken["up"] == 0.0, broken
        assert broken["ready"][0] == 503, broken
        reason = "not a database" if fault == "corrupt" else "locked"
        assert reason in broken["ready"][1]["remediation_state_error"], broken
        assert broken["alert"][0] == 503, broken
        assert reason in broken["alert"][1]["detail"], broken
        assert exp.running()
        # Fixed: the operator moves the corrupt file aside, or the other process lets go.
        if fault == "corrupt":
            path.rename(path.with_name("state.sqlite3.corrupt"))
        lock.close()

        async def recovered() -> bool:
            now = await status_of(http, exp)
            return now["up"] == 1.0 and now["ready"][0] == 200 and now["alert"][0] == 200

        await wait_for(recovered, 60, "remediation back once the file is fixed")
        fixed = await status_of(http, exp)
        assert [o["outcome"] for o in fixed["alert"][1]["outcomes"]] == ["not-found"]
        if fault == "locked":
            # The same file: what it held (the quarantine) is still there.
            async with http.get(exp.url + "/api/v1/remediation/quarantine", headers=AUTH) as r:
                assert [q["name"] for q in await r.json()] == [QUARANTINED]
        log = exp.service.log_path.read_text() if exp.service else ""
        assert "the state database failed" in log
        assert "works again" in log
        assert "Traceback" not in log
    finally:
        lock.close()
        exp.stop()
    record(
        request,
        f"state file {fault}",
        tries=1,
        metrics_while_broken=200,
        alert_while_broken=broken["alert"][0],
        readyz_while_broken=broken["ready"][0],
        recovered=True,
    )


async def test_an_emptied_state_file_is_said_aloud(
    engine: None, tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    state = tmp_path / "state"
    path = await make_state(state)
    path.write_bytes(b"")
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    exp = api_exporter("exporter-state-empty", TOKEN, state, tmp_path)
    exp.start()
    try:
        await exp.wait_ready(http)
        now = await status_of(http, exp)
        assert now["up"] == 1.0
        assert now["lost"] == 1.0
        assert now["alert"][0] == 200
        log = exp.service.log_path.read_text() if exp.service else ""
        assert "was empty (0 bytes): started afresh" in log
        assert "quarantine" in log
    finally:
        exp.stop()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    record(request, "state file emptied", tries=1, lost_metric=now["lost"], said_in_log=True)
