"""A flood of 10,000 Alertmanager alerts: right outcomes, no 500, no unmanaged action, intact state.

The alerts mix every kind the webhook meets: restarts of managed containers
(by name and by app + replica), exact repeats, resolved and unlabelled ones,
managed names the engine lacks, hostile and unmanaged names, labels that
disagree, and bulky labels. The app is wired as ``serve`` wires it, on a
driver that records every action, with a clock that moves a minute per batch
so cooldowns expire and budgets run out during the flood.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.config import Settings
from exporter.state import HISTORY_KEPT
from tests.faults.hostile import HOSTILE_NAMES, RecordingDriver
from tests.support.api import AUTH, Api, Clock, webhook
from tests.support.api import alert as make_alert
from tests.support.api import settings_for as make_settings
from tests.support.faults import record, scaled_int
from tests.support.scraping import parse_scrape

pytestmark = pytest.mark.faults

APP = "abcdef12"
MANAGED = [f"app-{APP}-{i:04x}" for i in range(1, 6)]
MISSING = f"app-{APP}-0fff"
BATCH = 500
IN_FLIGHT = 4
#: The fake clock moves this much per batch: cooldowns (300 s) pass, the window (3600 s) not.
TICK = 60.0
COOLDOWN, BUDGET, WINDOW = 300.0, 3, 3600.0

#: Outcomes each kind of alert may have; anything else is wrong.
ALLOWED = {
    "managed": {"restarted", "cooldown", "quarantined", "duplicate"},
    "repeat": {"restarted", "cooldown", "quarantined", "duplicate"},
    "missing": {"not-found"},
    "unmanaged": {"unmanaged", "ignored"},
    "resolved": {"ignored"},
    "no-action": {"ignored"},
    "disagree": {"ignored"},
}
KINDS = [
    ("managed", 35),
    ("repeat", 10),
    ("missing", 5),
    ("unmanaged", 20),
    ("resolved", 10),
    ("no-action", 10),
    ("disagree", 10),
]


@dataclass
class Flood:
    server_url: str
    driver: RecordingDriver
    clock: Clock
    db: Path
    http: aiohttp.ClientSession


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        remediation_cooldown_seconds=COOLDOWN,
        remediation_budget=BUDGET,
        remediation_window_seconds=WINDOW,
    )


@pytest.fixture
def api_driver() -> RecordingDriver:
    driver = RecordingDriver()
    for name in MANAGED:
        driver.add(name)
    driver.add("postgres")
    return driver


@pytest.fixture
async def flood(api: Api, api_driver: RecordingDriver) -> AsyncIterator[Flood]:
    """The ``api`` fixture's loopback server, flooded by a client of the test's own."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        yield Flood(
            f"http://127.0.0.1:{api.client.port}",
            api_driver,
            api.clock,
            api.settings.state_dir / "state.sqlite3",
            http,
        )


def _alert(kind: str, n: int, rng: random.Random, sent: list[dict[str, Any]]) -> dict[str, Any]:
    starts = f"2026-11-28T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    base = {"alertname": "SysinnerFlood", "action": "restart"}
    name = rng.choice(MANAGED)
    if kind == "managed":
        if rng.random() < 0.5:
            labels = {**base, "name": name}
        else:
            replica = int(name.rsplit("-", 1)[1], 16)
            labels = {**base, "app": APP, "replica": str(replica)}
        if rng.random() < 0.2:  # bulky: many and long labels ride along
            labels |= {f"extra_{i}": "x" * 40 for i in range(20)}
        return make_alert(labels, fingerprint=f"fp{n:06d}", starts_at=starts)
    if kind == "repeat" and sent:
        return dict(rng.choice(sent))
    if kind in ("repeat", "missing"):
        return make_alert({**base, "name": MISSING}, fingerprint=f"fp{n:06d}", starts_at=starts)
    if kind == "unmanaged":
        choice = rng.randrange(3)
        if choice == 0:
            labels = {**base, "name": rng.choice(HOSTILE_NAMES)}
        elif choice == 1:
            labels = {**base, "app": rng.choice(["../x", "ABCDEF12", "x" * 40, ""]), "replica": "1"}
        else:
            labels = {**base, "app": APP, "replica": rng.choice(["-1", "0x1", "1/2", "", " 1"])}
        return make_alert(labels, fingerprint=f"fp{n:06d}", starts_at=starts)
    if kind == "resolved":
        return make_alert(
            {**base, "name": name}, fingerprint=f"fp{n:06d}", starts_at=starts, status="resolved"
        )
    if kind == "no-action":
        labels = {"alertname": "SysinnerFlood", "name": name}
        if rng.random() < 0.5:
            labels["action"] = rng.choice(["delete", "Restart", "restart ", ""])
        return make_alert(labels, fingerprint=f"fp{n:06d}", starts_at=starts)
    assert kind == "disagree"
    other = MANAGED[(MANAGED.index(name) + 1) % len(MANAGED)]
    labels = {**base, "name": name, "app": APP, "replica": str(int(other[-4:], 16))}
    return make_alert(labels, fingerprint=f"fp{n:06d}", starts_at=starts)


async def test_webhook_flood_of_10000_alerts(flood: Flood, request: pytest.FixtureRequest) -> None:
    total = scaled_int(10_000, 50_000)
    rng = random.Random(20261129)
    population = [k for k, weight in KINDS for _ in range(weight)]
    kinds: list[str] = []
    alerts: list[dict[str, Any]] = []
    sent_managed: list[dict[str, Any]] = []
    for n in range(total):
        kind = rng.choice(population)
        a = _alert(kind, n, rng, sent_managed)
        if kind == "repeat" and a["labels"].get("name") == MISSING:
            kind = "missing"
        if kind == "managed":
            sent_managed.append(a)
        kinds.append(kind)
        alerts.append(a)
    batches = [range(i, min(i + BATCH, total)) for i in range(0, total, BATCH)]
    url = flood.server_url + "/api/v1/alerts"
    outcomes: dict[int, str] = {}
    statuses: Counter[int] = Counter()
    wrong: list[tuple[str, str, dict[str, Any]]] = []
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def post(batch: range) -> None:
        async with gate:
            flood.clock.now += TICK
            async with flood.http.post(
                url, json=webhook(*(alerts[i] for i in batch)), headers=AUTH
            ) as r:
                statuses[r.status] += 1
                body = await r.json()
            assert r.status == 200, body
            assert [o["index"] for o in body["outcomes"]] == list(range(len(batch)))
            for i, o in zip(batch, body["outcomes"], strict=True):
                outcomes[i] = o["outcome"]
                if o["outcome"] not in ALLOWED[kinds[i]]:
                    wrong.append((kinds[i], o["outcome"], alerts[i]["labels"]))

    # Malformed deliveries ride along; each gets its clear 4xx.
    bad: list[tuple[int, dict[str, Any]]] = [
        (422, {"data": json.dumps({**webhook(), "version": "3"})}),
        (422, {"data": json.dumps(webhook(*alerts[:1001]))}),
        (422, {"data": json.dumps({**webhook(), "alerts": [{"status": "firing"}]})}),
        (400, {"data": '{"version": "4", "alerts": ['}),
        (400, {"data": "[" * 5000}),
    ]

    async def post_bad(expected: int, kw: dict[str, Any]) -> None:
        async with flood.http.post(
            url, headers={**AUTH, "Content-Type": "application/json"}, **kw
        ) as r:
            statuses[r.status] += 1
            assert r.status == expected, (expected, r.status, await r.text())

    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(post(b) for b in batches), *(post_bad(s, kw) for s, kw in bad)),
        timeout=scaled_int(240, 1200),
    )
    seconds = time.monotonic() - started

    assert not wrong, wrong[:10]
    assert len(outcomes) == total
    assert not [s for s in statuses if s >= 500], statuses
    by_outcome = Counter(outcomes.values())
    restarted = by_outcome["restarted"]
    # Only managed containers the engine has were touched, each restart a stop then a start.
    acted = Counter(flood.driver.acted)
    assert {name for _, name in acted} <= set(MANAGED), acted
    assert {verb for verb, _ in acted} <= {"stop", "start"}, acted
    assert sum(n for (verb, _), n in acted.items() if verb == "stop") == restarted
    assert sum(n for (verb, _), n in acted.items() if verb == "start") == restarted
    assert flood.driver.calls["container_stop"] == restarted

    # The state database is intact and agrees with what was done.
    with sqlite3.connect(flood.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        actions = db.execute("SELECT container, at FROM actions ORDER BY container, at").fetchall()
        decisions = Counter(
            outcome for (outcome,) in db.execute("SELECT outcome FROM decisions").fetchall()
        )
    assert len(actions) == restarted
    assert decisions["restarting"] == decisions["starting"] == 0
    recorded = sum(by_outcome[o] for o in ("restarted", "cooldown", "quarantined", "duplicate"))
    # not-found (another host's container) is answered without a history row.
    if recorded <= HISTORY_KEPT:
        assert decisions["restarted"] == restarted
        assert sum(decisions.values()) == recorded
    else:  # the history keeps the newest HISTORY_KEPT decisions (the actions stay)
        assert decisions["restarted"] <= restarted
        assert HISTORY_KEPT <= sum(decisions.values()) <= recorded
    # Cooldown and budget held for every container: restarts at least a cooldown
    # apart, and never more than the budget inside one window.
    per_container: dict[str, list[float]] = {}
    for container, at in actions:
        per_container.setdefault(container, []).append(at)
    for container, times in per_container.items():
        assert all(b - a >= COOLDOWN for a, b in itertools.pairwise(times)), times
        over = zip(times, times[BUDGET:], strict=False)
        assert all(b - a >= WINDOW for a, b in over), (container, times)
    # The metric counted every alert judged.
    async with flood.http.get(flood.server_url + "/metrics") as r:
        scrape = parse_scrape(await r.text())
    judged = sum(v for _, v in scrape.series("sysinner_exporter_remediation_actions_total"))
    assert judged == total
    record(
        request,
        "webhook flood",
        alerts=total,
        batches=len(batches),
        malformed_deliveries=len(bad),
        seconds=round(seconds, 1),
        alerts_per_second=round(total / seconds),
        http_statuses=dict(statuses),
        outcomes=dict(by_outcome),
        kinds=dict(Counter(kinds)),
        restarts=restarted,
        unmanaged_actions=0,
        integrity_check="ok",
    )
