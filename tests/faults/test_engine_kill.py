"""dockerd SIGKILLed and restarted under a polling, scraped exporter: nothing fails, nothing leaks.

The engine is a private dockerd (tests/faults/private_engine.py), never the
shared one. The subject is a real ``sysinner-exporter serve`` process; an
in-process twin wired as serve wires it (exporter.wiring.wire) polls the same
engine so its asyncio tasks can be counted, which no process can show from
outside.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from exporter.config import Settings
from exporter.naming import container_name
from exporter.poller import Poller
from exporter.wiring import wire
from tests.faults.private_engine import PrivateEngine
from tests.support.engine import new_app_id
from tests.support.faults import record, scaled, scaled_int
from tests.support.ports import free_port
from tests.support.processes import ExporterProcess, ProcSample, proc_sample
from tests.support.scraping import ScrapeResult, Scrapers, parse_scrape
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.engine]

INTERVAL = 1.0
POLL_TIMEOUT = 3.0
#: Prometheus-style clients per exporter, each scraping every SCRAPE_EVERY seconds.
SCRAPERS = 4
SCRAPE_EVERY = 0.1
#: Extra fds/sockets/threads allowed over the baseline: pooled engine connections
#: come and go with the poll (one per in-flight call), the rest must return.
SLACK = 2

#: The health gauges every scrape is read for, in Seen's order.
_HEALTH = (
    "sysinner_exporter_up",
    "sysinner_exporter_last_successful_poll_timestamp_seconds",
    "sysinner_exporter_poll_duration_seconds",
    "process_start_time_seconds",
)


@dataclass(frozen=True)
class Seen:
    """The health figures of one scrape."""

    at: float
    scraper: int
    up: float
    last_success: float
    duration: float
    process_start: float


def _seen(result: ScrapeResult) -> Seen | None:
    if result.status != 200:
        return None
    scrape = parse_scrape(result.text)
    values = [scrape.value(name) for name in _HEALTH]
    if any(v is None for v in values):
        return None
    up, last, duration, start = (v for v in values if v is not None)
    return Seen(result.started, result.scraper, up, last, duration, start)


@dataclass
class Twin:
    """The exporter's app in this process, so that its asyncio tasks can be counted."""

    poller: Poller
    url: str


@pytest.fixture
async def twin(
    private_engine: PrivateEngine, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Twin]:
    monkeypatch.setenv("DOCKER_HOST", private_engine.host)
    port = free_port()
    settings = Settings(
        poll_interval=INTERVAL,
        poll_timeout=POLL_TIMEOUT,
        stats_source="docker",
        web_listen_address=f"127.0.0.1:{port}",
    )
    wired = wire(settings)
    runner = web.AppRunner(wired.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Twin(wired.poller, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


@pytest.fixture
def containers(private_engine: PrivateEngine) -> Iterator[list[str]]:
    """Idle managed containers on the private engine, restarted by it when it comes back."""
    app = new_app_id()
    names = [container_name(app, i + 1) for i in range(scaled_int(3, 8))]
    try:
        for name in names:
            private_engine.run_idle(name, "--restart", "always")
        yield names
    finally:
        if private_engine.answers():
            private_engine.docker("rm", "-f", *names)


#: The longest a poll's own task may live: an inspect batch left past the poll's deadline
#: ends within one call deadline, the stats phase within two.
POLL_TASK_LIFETIME = 3 * POLL_TIMEOUT


def _exporter_tasks(current: asyncio.Task[object] | None) -> list[asyncio.Task[object]]:
    """Return this loop's tasks, leaving out the test's own and the HTTP server's."""
    mine = ("Scrapers._loop", "RequestHandler.", "test_")
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current and not any(m in _name(task) for m in mine)
    ]


def _name(task: asyncio.Task[object]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", "?"))


async def _lasting_tasks(twin: Twin) -> Counter[str]:
    """Return, by coroutine, the twin's tasks that outlive any poll's own.

    A poll's workers (its stats reads, an inspect batch it left running at its
    deadline) come and go, and under load the next poll's may already be
    running when a poll completes: a census by name catches them at random.
    So take the tasks alive after one poll and keep those still alive, polls
    later, past :data:`POLL_TASK_LIFETIME`: the poller's loop and its stream
    follower, and any task that never ends (a leak).
    """
    await asyncio.wait_for(twin.poller.wait_next_poll(), timeout=INTERVAL * 10)
    first = _exporter_tasks(asyncio.current_task())
    past = time.monotonic() + POLL_TASK_LIFETIME
    while time.monotonic() < past:  # polls go on meanwhile: the twin is still polling
        await asyncio.wait_for(twin.poller.wait_next_poll(), timeout=INTERVAL * 10)
    return Counter(_name(task) for task in first if not task.done())


async def _samples(pid: int, seconds: float) -> list[ProcSample]:
    """Sample /proc of ``pid`` ten times a second for ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.append(proc_sample(pid))
        await asyncio.sleep(0.1)
    return out


async def test_engine_sigkill_and_restart_fails_no_scrape_and_leaks_nothing(
    private_engine: PrivateEngine,
    containers: list[str],
    twin: Twin,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    cycles = scaled_int(1, 5)
    down_seconds = scaled(3.0, 5.0)
    exporter = ExporterProcess(
        "exporter-engine-kill",
        [
            "--poll.interval",
            str(INTERVAL),
            "--stats.source",
            "docker",
            "--poll.timeout",
            str(POLL_TIMEOUT),
        ],
        env={"DOCKER_HOST": private_engine.host},
    )
    exporter.start()
    seen: list[Seen] = []

    def keep(result: ScrapeResult) -> None:
        s = _seen(result)
        if s is not None:
            seen.append(s)

    budget = 60 + cycles * 40
    scrapers = Scrapers(exporter.url + "/metrics", SCRAPERS, SCRAPE_EVERY, on_scrape=keep)
    twin_scrapers = Scrapers(twin.url + "/metrics", 2, SCRAPE_EVERY)
    try:
        await exporter.wait_ready(http)
        pid = exporter.pid
        scrapers.start(http, budget)
        twin_scrapers.start(http, budget)

        async def all_containers_exported() -> bool:
            scrape = await exporter.scrape(http)
            names = {labels["name"] for labels, _ in scrape.series("container_last_seen")}
            return set(containers) <= names

        await wait_for(all_containers_exported, 20, "every container on /metrics")
        before = await _samples(pid, 2.0)
        tasks_before = await _lasting_tasks(twin)
        assert tasks_before["Poller.run"] == 1, tasks_before  # the census sees lasting tasks

        kills: list[dict[str, float]] = []
        for _ in range(cycles):
            killed_at = time.time()
            private_engine.kill()
            gone_at = time.time()  # dockerd and containerd are both gone by now

            async def up_is_zero(since: float = killed_at) -> bool:
                return any(s.at > since and s.up == 0 for s in seen)

            await wait_for(up_is_zero, INTERVAL * 3 + 3, "sysinner_exporter_up to drop to 0")
            zero_at = min(s.at for s in seen if s.at > killed_at and s.up == 0)
            # The engine stays down a while: every scrape meanwhile must still answer, up=0.
            await asyncio.sleep(down_seconds)  # the outage's length, on purpose
            # No poll that began with the engine gone counted as a success. (Told by the
            # poll's own start, not by scrape start times: a scrape begun after another
            # may be served before it, by any margin on a loaded machine.) That up never
            # flaps back to 1 is each scraper's own sequence, checked at the end.
            ghosts = [s for s in seen if s.up == 1 and s.last_success - s.duration > gone_at]
            assert not ghosts, f"up was 1 with no engine: {ghosts[:3]}"

            private_engine.start()
            answered_at = time.time()

            async def polled_again(since: float = answered_at) -> bool:
                return any(s.up == 1 and s.last_success > since for s in seen)

            await wait_for(polled_again, INTERVAL * 3 + 10, "a successful poll after the restart")
            first = min(
                (s for s in seen if s.up == 1 and s.last_success > answered_at),
                key=lambda s: s.last_success,
            )
            # The poll that succeeded started within one interval of the engine answering.
            resumed_after = (first.last_success - first.duration) - answered_at
            kills.append(
                {
                    "up_zero_after_s": round(zero_at - killed_at, 3),
                    "poll_resumed_after_s": round(resumed_after, 3),
                    "poll_done_after_s": round(first.last_success - answered_at, 3),
                }
            )
            assert resumed_after <= INTERVAL + 0.25, kills[-1]
            # ... and finished within that poll's own deadlines (--poll.timeout 3).
            assert first.last_success - answered_at <= INTERVAL + POLL_TIMEOUT + 0.5, kills[-1]
            await wait_for(all_containers_exported, 30, "every container back on /metrics")

        after = await _samples(pid, 2.0)
        tasks_after = await _lasting_tasks(twin)
        await scrapers.stop()
        await twin_scrapers.stop()

        assert exporter.running(), "the exporter exited"
        assert exporter.pid == pid, "the exporter restarted"
        assert len({s.process_start for s in seen}) == 1, "process_start_time_seconds changed"
        failed = scrapers.failures() + twin_scrapers.failures()
        assert not failed, failed[:5]
        # Each scraper saw up go 1 -> 0 -> 1 once per kill, and nothing else.
        for index in range(SCRAPERS):
            ups = [int(s.up) for s in sorted(seen, key=lambda s: s.at) if s.scraper == index]
            changes = [u for i, u in enumerate(ups) if i == 0 or u != ups[i - 1]]
            assert changes == [1] + [0, 1] * cycles, (index, changes)

        peak = {
            key: (max(getattr(s, key) for s in before), max(getattr(s, key) for s in after))
            for key in ("fds", "sockets", "threads", "tcp_established", "tcp_close_wait")
        }
        for key, (was, now) in peak.items():
            assert now <= was + SLACK, f"{key}: {was} before, {now} after: {peak}"
        assert peak["tcp_close_wait"][1] == 0, peak
        assert tasks_after == tasks_before, (tasks_before, tasks_after)

        record(
            request,
            "engine SIGKILL + restart",
            cycles=cycles,
            containers=len(containers),
            down_seconds=down_seconds,
            scrapes=len(scrapers.results) + len(twin_scrapers.results),
            failed_scrapes=len(failed),
            kills=kills,
            peak_before_after=peak,
            asyncio_tasks=sum(tasks_after.values()),
            exporter_pid_unchanged=True,
        )
    finally:
        await scrapers.stop()
        await twin_scrapers.stop()
        exporter.stop()
