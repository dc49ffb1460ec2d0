"""Container churn on the real engine during thousands of scrapes.

Containers of one fresh app id are created, started and removed several
times a second while a real ``sysinner-exporter serve`` polls every 0.5 s
and ten scrapers read /metrics every 100 ms. Every scrape is checked for
duplicated series and for containers that should be gone: a container
removed at T must be absent from every snapshot whose poll started after T,
and (its destroy event taking it off at once) from every scrape that starts
more than a second after T. A started one must appear within one interval
(and the poll that shows it).
The snapshot's completion time is on every container series
(``container_last_seen``); the poll's duration is the exporter's own gauge.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.drivers.docker import DockerDriver
from exporter.models import ContainerCreateOptions
from exporter.naming import container_name
from tests.support.engine import IDLE_CMD, TEST_IMAGE, new_app_id
from tests.support.faults import RSS_SLOPE_LIMIT, record, scaled, scaled_int
from tests.support.processes import ExporterProcess, RssSampler
from tests.support.scraping import ScrapeResult, Scrapers, parse_scrape
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.engine]

INTERVAL = 0.5
SCRAPERS = 10
SCRAPE_EVERY = 0.1
#: Containers started per second, and how long each lives (seconds).
RATE = 4.0
LIFETIME = (1.0, 3.0)
#: The longest a removed container may stay on /metrics (seconds, from its removal).
LINGER_LIMIT = 1.0


@dataclass
class Churn:
    """The containers made and removed, and when each removal returned (wall clock)."""

    app: str
    created: list[str] = field(default_factory=list)
    started_at: dict[str, float] = field(default_factory=dict)
    removed_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Observed:
    """What the scrapes showed."""

    scrapes: int = 0
    duplicates: list[str] = field(default_factory=list)
    # name -> [(scrape started, snapshot completed)] for each scrape that showed it
    shown: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    polls: dict[float, float] = field(default_factory=dict)  # completed -> duration
    phases: dict[str, float] = field(default_factory=dict)  # phase -> longest seen
    invalid: list[str] = field(default_factory=list)


async def _one_container(driver: DockerDriver, churn: Churn, index: int) -> None:
    name = container_name(churn.app, index)
    churn.created.append(name)
    try:
        await driver.container_create(
            ContainerCreateOptions(name=name, image=TEST_IMAGE, cmd=IDLE_CMD)
        )
        await driver.container_start(name)
        churn.started_at[name] = time.time()
        await asyncio.sleep(random.uniform(*LIFETIME))  # the container's life, on purpose
    except Exception as e:  # noqa: BLE001 - counted; the churn goes on
        churn.errors.append(f"{name}: {e!r}")
    finally:
        await driver.container_remove(name)
        churn.removed_at[name] = time.time()


async def _churn(driver: DockerDriver, churn: Churn, seconds: float, most: int) -> None:
    running: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    index = 0
    while time.monotonic() - started < seconds and index < most:
        index += 1
        task = asyncio.create_task(_one_container(driver, churn, index))
        running.add(task)
        task.add_done_callback(running.discard)
        await asyncio.sleep(max(index / RATE - (time.monotonic() - started), 0.0))
    await asyncio.gather(*running)


async def _remove_all(names: list[str]) -> None:
    cleaner = DockerDriver()
    try:
        await asyncio.gather(*(cleaner.container_remove(n) for n in names))
    finally:
        await cleaner.close()


async def test_churn_leaves_no_series_behind_and_no_duplicates(
    engine: None, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    seconds = scaled(20.0, 60.0)
    most = scaled_int(80, 200)
    churn = Churn(new_app_id())
    seen = Observed()
    mine = re.compile(f"app-{churn.app}-[0-9a-f]{{4}}")

    def check(result: ScrapeResult) -> None:
        if result.status != 200:
            return
        seen.scrapes += 1
        scrape = parse_scrape(result.text)
        seen.duplicates.extend(scrape.duplicates)
        for labels, completed in scrape.series("container_last_seen"):
            if mine.fullmatch(name := labels.get("name", "")):
                seen.shown.setdefault(name, []).append((result.started, completed))
        duration = scrape.value("sysinner_exporter_poll_duration_seconds")
        last = scrape.value("sysinner_exporter_last_successful_poll_timestamp_seconds")
        if duration is not None and last is not None:
            seen.polls[last] = duration
        for labels, seconds in scrape.series("sysinner_exporter_poll_phase_duration_seconds"):
            phase = labels["phase"]
            seen.phases[phase] = max(seen.phases.get(phase, 0.0), seconds)
        if seen.scrapes % 25 == 1:
            try:
                list(text_string_to_metric_families(result.text))
            except ValueError as e:
                seen.invalid.append(repr(e))

    exporter = ExporterProcess("exporter-churn", ["--poll.interval", str(INTERVAL)])
    exporter.start()
    scrapers = Scrapers(exporter.url + "/metrics", SCRAPERS, SCRAPE_EVERY, on_scrape=check)
    sampler: RssSampler | None = None
    driver = DockerDriver(stop_grace=1)
    try:
        await exporter.wait_ready(http)
        sampler = RssSampler(exporter.pid)
        sampler.start()
        scrapers.start(http, seconds + 60)
        churn_started = time.monotonic()
        work: Awaitable[None] = _churn(driver, churn, seconds, most)
        await asyncio.wait_for(work, seconds + 60)
        churn_seconds = time.monotonic() - churn_started
        all_gone_at = time.time()

        async def none_of_mine_left() -> bool:
            scrape = await exporter.scrape(http)
            return not any(
                labels["name"] in churn.removed_at
                for labels, _ in scrape.series("container_last_seen")
            )

        await wait_for(none_of_mine_left, INTERVAL * 4 + 5, "the last removed container to go")
        await scrapers.stop()
        await sampler.stop()

        assert not scrapers.failures(), scrapers.failures()[:5]
        assert not seen.duplicates, sorted(set(seen.duplicates))[:10]
        assert not seen.invalid, seen.invalid[:3]
        assert not churn.errors, churn.errors[:5]
        assert set(churn.created) == set(churn.removed_at)
        durations = sorted(seen.polls.values())
        longest = durations[-1]
        # A container removed at T is in no snapshot whose poll started after T: the
        # next poll drops it. (A poll lasts at most `longest`.)
        late = []
        lingered = 0.0
        for name, shown in seen.shown.items():
            gone = churn.removed_at[name]
            for scraped, completed in shown:
                if completed - longest > gone:
                    late.append((name, completed - gone))
                lingered = max(lingered, scraped - gone)
        assert not late, late[:5]
        # Its destroy event takes it off at once, whatever poll is under way.
        assert lingered <= LINGER_LIMIT, lingered
        # A started one shows once the next poll is done (a scrape every 100 ms sees it).
        appeared = {
            name: min(scraped for scraped, _ in shown) - churn.started_at[name]
            for name, shown in seen.shown.items()
            if name in churn.started_at
        }
        slowest_appearance = max(appeared.values())

        slope = sampler.slope_kib_per_s(skip_seconds=5)
        # The first half holds the warm-up (allocator arenas, caches); a leak goes on.
        late_slope = sampler.slope_kib_per_s(skip_seconds=churn_seconds / 2)
        rss = [s.rss_kib for s in sampler.samples]
        record(
            request,
            "container churn (main engine)",
            containers=len(churn.created),
            containers_seen_on_metrics=len(seen.shown),
            churn_seconds=round(churn_seconds, 1),
            containers_per_second=round(len(churn.created) / churn_seconds, 2),
            scrapes=seen.scrapes,
            failed_scrapes=len(scrapers.failures()),
            duplicate_series=len(seen.duplicates),
            polls=len(durations),
            poll_seconds_p50_p99_max=(
                round(durations[len(durations) // 2], 3),
                round(durations[int(len(durations) * 0.99)], 3),
                round(longest, 3),
            ),
            longest_phase_seconds={k: round(v, 3) for k, v in seen.phases.items()},
            longest_linger_after_removal_s=round(lingered, 3),
            longest_appearance_after_start_s=round(slowest_appearance, 3),
            last_gone_after_s=round(time.time() - all_gone_at, 3),
            rss_kib_by_fifth=[rss[min(i * len(rss) // 5, len(rss) - 1)] for i in range(6)],
            rss_slope_second_half_kib_per_s=round(late_slope, 2),
            rss_slope_kib_per_s=round(slope, 2),
        )
        assert slowest_appearance <= INTERVAL + longest + SCRAPE_EVERY + 0.1, appeared
        # Enough scrapes to matter, counted against the polls of the same run (a count
        # of scrapes per second would be this machine's speed): each snapshot was read
        # as often as there are scrapers.
        assert seen.scrapes >= SCRAPERS * len(durations), (seen.scrapes, len(durations))
        # Not vacuous: the scrapes did see the churn (short-lived ones may fall between polls).
        assert len(seen.shown) >= len(churn.created) / 2, "most containers were never seen"
        assert late_slope < RSS_SLOPE_LIMIT, f"RSS grows {late_slope:.1f} KiB/s: {rss}"
        # Inspects the engine holds (it locks a container while it starts or removes
        # it) are left for a later poll once an interval has passed: they never hold
        # a poll up to the call timeout, as they did before.
        assert seen.phases["inspect"] < INTERVAL + 0.5, seen.phases
    finally:
        await scrapers.stop()
        if sampler is not None:
            await sampler.stop()
        exporter.stop()
        await _remove_all(churn.created)
        await driver.close()
