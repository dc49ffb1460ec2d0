"""The exporter SIGKILLed in the middle of a burst of remediation restarts, on the real engine.

A real ``sysinner-exporter serve`` with a state dir restarts a few managed
containers of this test's own for a burst of distinct alerts; it is killed
right after the engine reports one of those containers stopped, which is
mid-restart. The engine's own event log is the oracle of what was done.
After a second exporter opens the same state dir, what the state database
says was acted on must match what the engine did (nothing lost, nothing
doubled), the burst delivered again must act only on what was never acted
on, budgets and cooldowns must hold across the crash, and the SQLite file
must pass ``PRAGMA integrity_check`` both as the kill left it and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerCreateOptions
from exporter.naming import container_name
from tests.support.api import alert as make_alert
from tests.support.api import webhook
from tests.support.engine import IDLE_CMD, SLOW_STOP_CMD, TEST_IMAGE, EngineEvents, new_app_id
from tests.support.faults import record, run_dir, scaled_int
from tests.support.processes import ExporterProcess, api_exporter
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.engine]

TOKEN = "faults-crash-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUDGET = 6
#: Distinct alerts per container in the burst: more than the budget.
ALERTS_EACH = 8
KILL_AT_SLOW_STOP = 2


@pytest.fixture
async def containers(engine: None) -> AsyncIterator[list[str]]:
    app = new_app_id()
    names = [container_name(app, i + 1) for i in range(scaled_int(3, 6))]
    driver = DockerDriver(stop_grace=3)
    try:
        for i, name in enumerate(names):
            await driver.container_create(
                ContainerCreateOptions(
                    name=name, image=TEST_IMAGE, cmd=SLOW_STOP_CMD if i == 0 else IDLE_CMD
                )
            )
            await driver.container_start(name)
        yield names
    finally:
        await asyncio.gather(*(driver.container_remove(n) for n in names))
        await driver.close()


def _exporter(name: str, state: Path, tmp_path: Path) -> ExporterProcess:
    return api_exporter(
        name,
        TOKEN,
        state,
        tmp_path,
        "--remediation.cooldown-seconds",
        "0",
        "--remediation.budget",
        str(BUDGET),
        "--remediation.window-seconds",
        "3600",
        env={"SYSINNER_EXPORTER_LOG_LEVEL": "debug"},
    )


def _ledger(db_path: Path) -> dict[str, Any]:
    """Return the state database's check result, actions and decisions."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        actions = db.execute("SELECT fingerprint, starts_at, container FROM actions").fetchall()
        decisions = db.execute(
            "SELECT container, fingerprint, outcome FROM decisions ORDER BY id"
        ).fetchall()
    return {"check": check, "actions": actions, "decisions": decisions}


async def _post_each(
    http: aiohttp.ClientSession, url: str, alerts: list[dict[str, Any]]
) -> list[Any]:
    """POST each alert in its own delivery, all at once; return each outcome or the error."""

    async def one(a: dict[str, Any]) -> Any:
        try:
            async with http.post(url, json=webhook(a), headers=AUTH) as r:
                body = await r.json()
                assert r.status == 200, body
                return body["outcomes"][0]["outcome"]
        except (aiohttp.ClientError, OSError) as e:  # the kill cuts deliveries in flight
            return f"cut: {type(e).__name__}"

    return list(await asyncio.gather(*(one(a) for a in alerts)))


async def test_sigkill_mid_burst_loses_and_doubles_no_decision(
    containers: list[str],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    state = tmp_path / "state"
    db_path = state / "state.sqlite3"
    alerts = [
        make_alert(
            {"alertname": "CrashBurst", "action": "restart", "name": name},
            fingerprint=f"{name}-{i}",
            starts_at=f"2026-11-28T10:00:{i:02d}Z",
        )
        for i in range(ALERTS_EACH)
        for name in containers
    ]
    first = _exporter("exporter-crash-1", state, tmp_path)
    second = _exporter("exporter-crash-2", state, tmp_path)
    events = EngineEvents(containers)
    first.start()
    try:
        await first.wait_ready(http)
        await events.start(time.time())
        url = first.url + "/api/v1/alerts"
        burst = asyncio.create_task(_post_each(http, url, alerts))

        slow = containers[0]

        async def slow_stop_under_way() -> bool:
            return events.count("kill")[slow] >= KILL_AT_SLOW_STOP or burst.done()

        await wait_for(slow_stop_under_way, 60, f"stop {KILL_AT_SLOW_STOP} of {slow}", every=0.005)
        assert not burst.done(), "the burst ended before the kill: nothing to interrupt"
        first.kill()
        killed_at = time.monotonic()
        first_outcomes = await burst
        stops_at_kill = sum(events.count("stop").values())

        # Whatever the engine was asked before the kill finishes (every stop it signalled
        # has ended, however slowly this engine stops); then it is quiet.
        async def engine_quiet() -> bool:
            return not events.stops_under_way() and events.quiet_for(2.0)

        await wait_for(engine_quiet, 60, "the engine to finish what it was asked")
        quiet_after = time.monotonic() - killed_at
        left_stopped = [n for n in containers if events.count("stop")[n] > events.count("start")[n]]
        (run_dir() / "crash-events.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in events.events)
        )
        # The file as the kill left it (WAL included) is intact.
        as_left = tmp_path / "as-left"
        as_left.mkdir()
        for f in state.iterdir():
            shutil.copy2(f, as_left / f.name)
        left = _ledger(as_left / "state.sqlite3")
        assert left["check"] == "ok", left["check"]

        second.start()
        await second.wait_ready(http)
        after_restart = _ledger(db_path)
        assert after_restart["check"] == "ok"
        starts_before_redelivery = events.count("start")
        # What the database says was acted on is what the engine did: every action is a
        # restart that ran (completed now if the kill interrupted it), and no more.
        interrupted = [d for d in left["decisions"] if d[2] in ("restarting", "starting")]
        assert slow in {c for c, _, _ in interrupted}, interrupted
        acted = Counter(c for _, _, c in after_restart["actions"])

        async def restarts_done() -> bool:
            return events.count("start") == acted and events.quiet_for(1.0)

        await wait_for(restarts_done, 30, f"engine starts {acted} (one per action)")
        outcomes = Counter(o for _, _, o in _ledger(db_path)["decisions"])
        assert outcomes["restarting"] == outcomes["starting"] == 0, outcomes

        # The burst again, as Alertmanager repeats it: recorded occurrences are
        # duplicates, the others act until the budget is used, then quarantine.
        url = second.url + "/api/v1/alerts"
        again = await _post_each(http, url, alerts)
        assert not [o for o in again if str(o).startswith("cut")], again
        recorded = {(fp, sa) for fp, sa, _ in after_restart["actions"]}
        for a, outcome in zip(alerts, again, strict=True):
            key = (a["fingerprint"], a["startsAt"].replace("Z", "+00:00"))
            if key in recorded:
                assert outcome == "duplicate", (a["fingerprint"], outcome)
            else:
                assert outcome in ("restarted", "quarantined"), (a["fingerprint"], outcome)

        # Every restart the ledger holds has its start in the engine (a quiet spell alone
        # could fall in the middle of a slow restart), and then nothing more comes.
        async def settled() -> bool:
            acted_now = Counter(c for _, _, c in _ledger(db_path)["actions"])
            return events.count("start") == acted_now and events.quiet_for(1.5)

        await wait_for(settled, 60, "the redelivery's restarts")
        final = _ledger(db_path)
        assert final["check"] == "ok"
        final_acted = Counter(c for _, _, c in final["actions"])
        starts = events.count("start")
        # Exactly the budget per container, each a start the engine saw, each alert once.
        assert final_acted == dict.fromkeys(containers, BUDGET), final_acted
        assert starts == final_acted, (starts, final_acted)
        assert len({fp for fp, _, _ in final["actions"]}) == len(final["actions"])
        # A fresh alert finds every container quarantined: the budget survived the crash.
        fresh = [
            make_alert(
                {"alertname": "CrashBurst", "action": "restart", "name": n},
                fingerprint=f"{n}-fresh",
            )
            for n in containers
        ]
        assert await _post_each(http, url, fresh) == ["quarantined"] * len(containers)
        async with http.get(second.url + "/api/v1/remediation/quarantine", headers=AUTH) as r:
            assert {q["name"] for q in await r.json()} == set(containers)
        # And every container runs: no restart was left half-done.
        driver = DockerDriver()
        try:
            states = {n: (await driver.container_inspect(n)).state.value for n in containers}
        finally:
            await driver.close()
        assert set(states.values()) == {"running"}, states

        record(
            request,
            "exporter SIGKILL mid-burst",
            containers=len(containers),
            alerts=len(alerts),
            budget=BUDGET,
            stops_at_kill=stops_at_kill,
            delivered_before_kill=Counter(str(o) for o in first_outcomes),
            actions_before_kill=len(left["actions"]),
            interrupted_restarts=len(interrupted),
            engine_starts_before_redelivery=sum(starts_before_redelivery.values()),
            redelivered=Counter(str(o) for o in again),
            actions_final=sum(final_acted.values()),
            engine_starts_final=sum(starts.values()),
            integrity_check="ok",
            containers_left_stopped_by_the_kill=len(left_stopped),
            seconds_kill_to_engine_quiet=round(quiet_after, 1),
        )
    finally:
        await events.stop()
        first.stop()
        second.stop()
