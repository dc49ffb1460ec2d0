"""The exporter SIGKILLed in the middle of replica deploys, on the real engine.

A real ``sysinner-exporter serve`` deploys a newer revision of one replica of
this test's own in each round; the test follows the engine's events for the
replica's containers and kills the exporter at the round's kill point: the
N-th engine event of that deploy (create of ``.next``, each rename, the old
one's kill/stop, the new one's start, ``.prev``'s removal, ...), N spread
over the rounds. What the kill left is recorded. A new exporter then starts
on the same pod dirs and must leave exactly one ``<name>`` container, running
(nothing lost: no moment without the replica once the exporter is back); the
same revision is posted again and must end with ``<name>`` running it, no
``.next``/``.prev`` left and ``app_instance.json`` naming it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerInfo
from exporter.naming import container_name
from exporter.paths import PodPaths
from tests.support.api import replica
from tests.support.engine import ININIT, TEST_IMAGE, EngineEvents, new_app_id
from tests.support.faults import record, scaled_int
from tests.support.processes import ExporterProcess
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.engine]

TOKEN = "faults-deploy-kill-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUNDS = scaled_int(10, 30)
#: Kill points: the N-th engine event of the round's deploy, cycled over the rounds.
#: A swap makes about 8 (create, 2 renames, kill, die, stop, start, destroy).
KILL_AT_EVENT = (1, 2, 3, 4, 5, 6, 7, 8, 2, 4)


async def replica_containers(driver: DockerDriver, name: str) -> dict[str, ContainerInfo]:
    """Return this replica's containers, temporaries included, by name."""
    return {
        c.name: c
        for c in await driver.container_list()
        if c.name in (name, f"{name}.next", f"{name}.prev")
    }


def _exporter(label: str, tmp_path: Path) -> ExporterProcess:
    return ExporterProcess(
        label,
        [
            "--poll.interval",
            "1",
            "--state.dir",
            str(tmp_path / "state"),
            "--pod.base-dir",
            str(tmp_path / "pods"),
            "--host.prefix",
            str(tmp_path / "innerstack"),
        ],
        env={"EXPORTER_API_TOKEN": TOKEN, "EXPORTER_LOG_LEVEL": "debug"},
    )


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    try:
        async with http.post(f"{url}/api/v1/replicas", json=body, headers=AUTH) as r:
            return r.status, await r.json()
    except (aiohttp.ClientError, OSError) as e:  # the kill cuts the post
        return f"cut: {type(e).__name__}"


@pytest.fixture
async def replica_app(engine: None, tmp_path: Path) -> AsyncIterator[str]:
    """Return a fresh app id; every container of its replica 1 is removed afterwards."""
    (tmp_path / "innerstack" / "cmd" / "inagent").mkdir(parents=True)
    (tmp_path / "innerstack" / "cmd" / "inagent" / "ininit").write_text(ININIT)
    app_id = new_app_id()
    try:
        yield app_id
    finally:
        name = container_name(app_id, 1)
        driver = DockerDriver()
        try:
            for n in (name, f"{name}.next", f"{name}.prev"):
                await driver.container_remove(n)
        finally:
            await driver.close()


async def test_sigkill_mid_deploy_never_loses_the_replica(
    replica_app: str, tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    name = container_name(replica_app, 1)
    instance = Path(PodPaths(str(tmp_path / "pods"), name).instance_record_file())
    driver = DockerDriver()
    # Every container of the app, by the deploy's label; exec_* and top are no steps of a deploy.
    events = EngineEvents(
        filters=[f"label=io.sysinner.app={replica_app}"], ignored=("exec_", "top")
    )
    await events.start()
    exporters: list[ExporterProcess] = []
    left_at_kill: Counter[str] = Counter()
    lost_after_restart = 0
    answers: Counter[str] = Counter()
    started = time.monotonic()
    try:
        exporter = _exporter("exporter-deploy-0", tmp_path)
        exporters.append(exporter)
        exporter.start()
        await exporter.wait_ready(http)
        status, answer = await _post(http, exporter.url, replica(replica_app, 1, 1, TEST_IMAGE))
        assert status == 201, answer

        for round_no in range(ROUNDS):
            revision = round_no + 2
            kill_at = KILL_AT_EVENT[round_no % len(KILL_AT_EVENT)]
            seen_before = len(events.events)
            post = asyncio.create_task(
                _post(http, exporter.url, replica(replica_app, 1, revision, TEST_IMAGE))
            )

            async def kill_point(
                seen_before: int = seen_before,
                kill_at: int = kill_at,
                post: asyncio.Task[Any] = post,
            ) -> bool:
                return len(events.events) - seen_before >= kill_at or post.done()

            await wait_for(kill_point, 30, f"event {kill_at} of round {round_no}", every=0.002)
            exporter.kill()
            cut = await post
            answers["answered before the kill" if isinstance(cut, tuple) else "cut"] += 1
            # What the kill left, once the engine finished what it was asked.
            left = await replica_containers(driver, name)
            state = ",".join(
                f"{n.removeprefix(name) or '<name>'}:{c.state.value}"
                f":r{c.labels.get('io.sysinner.revision')}"
                for n, c in sorted(left.items())
            )
            left_at_kill[state] += 1

            exporter = _exporter(f"exporter-deploy-{round_no + 1}", tmp_path)
            exporters.append(exporter)
            exporter.start()
            await exporter.wait_ready(http)
            # Back at start: exactly <name>, running; the cut swap finished or undone.
            after = await replica_containers(driver, name)
            if list(after) != [name] or after[name].state.value != "running":
                lost_after_restart += 1
            assert list(after) == [name], (round_no, kill_at, state, list(after))
            assert after[name].state.value == "running", (round_no, state, after[name])

            status, answer = await _post(
                http, exporter.url, replica(replica_app, 1, revision, TEST_IMAGE)
            )
            assert status in (200, 201), (round_no, state, answer)
            answers[answer["result"]] += 1
            final = await replica_containers(driver, name)
            assert list(final) == [name], (round_no, state, list(final))
            info = await driver.container_inspect(name)
            assert info.state.value == "running", (round_no, state, info)
            assert info.labels["io.sysinner.revision"] == str(revision), (round_no, state)
            stored = json.loads(await asyncio.to_thread(instance.read_text))
            assert stored["app"]["deploy"]["revision"] == revision

        record(
            request,
            "exporter SIGKILL mid-deploy",
            rounds=ROUNDS,
            kill_at_events=list(KILL_AT_EVENT),
            left_at_kill=dict(left_at_kill),
            answers_after_restart=dict(answers),
            replica_lost_after_restart=lost_after_restart,
            engine_events=len(events.events),
            seconds=round(time.monotonic() - started, 1),
        )
    finally:
        for e in exporters:
            e.stop()
        await events.stop()
        await driver.close()
