"""Remediation on the real engine when its ledger fails, and when an operator stopped a container.

Another process takes the state file's write lock at the moment the engine
begins to stop a container for an alert, and holds it past the exporter's
wait: the start must still be sent, the failure logged and counted, the
ledger completed once the lock is let go, and Alertmanager's retry must find
the alert done (once). A lock held while the alert is decided is a 503 with
nothing done, and the retry acts. A container stopped through the API stays
stopped whatever alerts come, until it is started through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerCreateOptions
from exporter.naming import container_name
from tests.support.api import alert, webhook
from tests.support.engine import SLOW_STOP_CMD, TEST_IMAGE, EngineEvents, new_app_id
from tests.support.faults import lock_held, record, scaled_int
from tests.support.processes import ExporterProcess
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.engine]

TOKEN = "faults-ledger-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def container(engine: None) -> AsyncIterator[str]:
    """Return a running managed container that takes about a second to stop."""
    name = container_name(new_app_id(), 1)
    driver = DockerDriver(stop_grace=5)
    try:
        await driver.container_create(
            ContainerCreateOptions(name=name, image=TEST_IMAGE, cmd=SLOW_STOP_CMD)
        )
        await driver.container_start(name)
        yield name
    finally:
        await driver.container_remove(name)
        await driver.close()


@pytest.fixture
async def exporter(tmp_path: Path) -> AsyncIterator[ExporterProcess]:
    exp = ExporterProcess(
        "exporter-ledger",
        [
            "--poll.interval",
            "1",
            "--state.dir",
            str(tmp_path / "state"),
            "--pod.base-dir",
            str(tmp_path / "pods"),
            "--host.prefix",
            str(tmp_path / "innerstack"),
            "--remediation.cooldown-seconds",
            "0",
            "--remediation.budget",
            "100",
        ],
        env={"EXPORTER_API_TOKEN": TOKEN},
    )
    exp.start()
    try:
        yield exp
    finally:
        exp.stop()


async def post_alert(
    http: aiohttp.ClientSession, exp: ExporterProcess, name: str, fingerprint: str
) -> tuple[int, Any]:
    payload = webhook(alert({"action": "restart", "name": name}, fingerprint=fingerprint))
    async with http.post(
        exp.url + "/api/v1/alerts",
        json=payload,
        headers=AUTH,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as r:
        return r.status, await r.json()


async def engine_state(name: str) -> str:
    driver = DockerDriver()
    try:
        return (await driver.container_inspect(name)).state.value
    finally:
        await driver.close()


async def test_the_start_follows_the_stop_while_another_process_locks_the_ledger(
    container: str,
    exporter: ExporterProcess,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    db = tmp_path / "state" / "state.sqlite3"
    await exporter.wait_ready(http)
    events = EngineEvents([container])
    await events.start(time.time())
    rounds = scaled_int(3, 10)
    seen: list[dict[str, Any]] = []
    try:
        for i in range(rounds):
            kills = events.count("kill")[container]
            delivery = asyncio.create_task(post_alert(http, exporter, container, f"lock-{i}"))

            async def stopping(
                kills: int = kills, delivery: asyncio.Task[tuple[int, Any]] = delivery
            ) -> bool:
                return events.count("kill")[container] > kills or delivery.done()

            await wait_for(stopping, 30, "the engine to begin the stop", every=0.005)
            assert not delivery.done(), delivery.result()
            starts_before = events.count("start")[container]
            with lock_held(db):
                # The lock outlasts the exporter's wait: the answer comes while it is held.
                status, body = await delivery
                assert status == 200, body
                (answer,) = body["outcomes"]
                assert answer["outcome"] == "restarted", answer
                assert "recorded once the state database works again" in answer["detail"]

                async def started(starts_before: int = starts_before) -> bool:
                    return events.count("start")[container] > starts_before

                await wait_for(started, 30, "the engine to start the container again")
                assert await engine_state(container) == "running"
                scrape = await exporter.scrape(http)
                failures = scrape.value("sysinner_exporter_remediation_state_write_failures_total")
                assert failures is not None
                assert failures >= 2 * (i + 1)
                assert (scrape.value("sysinner_exporter_remediation_state_owed_writes") or 0) >= 1

            async def repaired() -> bool:
                scrape = await exporter.scrape(http)
                return (
                    scrape.value("sysinner_exporter_remediation_state_owed_writes") == 0
                    and scrape.value("sysinner_exporter_remediation_state_up") == 1
                )

            await wait_for(repaired, 60, "the owed ledger writes once the lock is gone")
            with contextlib.closing(sqlite3.connect(db)) as conn:
                (outcome,) = conn.execute(
                    "SELECT outcome FROM decisions WHERE fingerprint = ?", (f"lock-{i}",)
                ).fetchone()
            assert outcome == "restarted"
            # Alertmanager's retry: done once, so a duplicate and no second restart.
            status, body = await post_alert(http, exporter, container, f"lock-{i}")
            assert (status, body["outcomes"][0]["outcome"]) == (200, "duplicate")
            seen.append({"round": i, "answer": answer["outcome"], "ledger": outcome})
        assert events.count("start")[container] == rounds
        assert events.count("kill")[container] == rounds
        log = exporter.service.log_path.read_text() if exporter.service else ""
        assert "ledger write owed" in log
        assert "works again" in log
    finally:
        await events.stop()
    record(
        request,
        "state file locked mid-restart",
        rounds=rounds,
        engine_starts=events.count("start")[container],
        engine_stops=events.count("kill")[container],
        left_stopped=0,
        retries_answered="duplicate",
        ledger_outcomes=[s["ledger"] for s in seen],
    )


async def test_a_lock_at_decision_time_is_a_503_and_the_retry_restarts(
    container: str,
    exporter: ExporterProcess,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    db = tmp_path / "state" / "state.sqlite3"
    await exporter.wait_ready(http)
    with lock_held(db):
        status, body = await post_alert(http, exporter, container, "decide")
        assert status == 503, body
        assert "locked" in body["detail"]
    assert await engine_state(container) == "running"

    async def accepted() -> bool:
        status, body = await post_alert(http, exporter, container, "decide")
        assert status in (200, 503), body
        return status == 200 and body["outcomes"][0]["outcome"] == "restarted"

    await wait_for(accepted, 60, "the retry to restart", every=0.5)
    record(request, "state file locked at decision", tries=1, first="503", retry="restarted")


async def test_an_alert_leaves_a_container_stopped_through_the_api_stopped(
    container: str,
    exporter: ExporterProcess,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    await exporter.wait_ready(http)
    api = exporter.url + f"/api/v1/containers/{container}"
    async with http.post(api + "/stop", headers=AUTH) as r:
        assert r.status == 200, await r.text()
    for i in range(3):
        status, body = await post_alert(http, exporter, container, f"held-{i}")
        assert (status, body["outcomes"][0]["outcome"]) == (200, "operator-stopped"), body
    assert await engine_state(container) != "running"
    async with http.post(api + "/start", headers=AUTH) as r:
        assert r.status == 200, await r.text()
    status, body = await post_alert(http, exporter, container, "after-start")
    assert (status, body["outcomes"][0]["outcome"]) == (200, "restarted"), body
    assert await engine_state(container) == "running"
    record(request, "alert on an operator-stopped container", alerts=3, restarted=0)
