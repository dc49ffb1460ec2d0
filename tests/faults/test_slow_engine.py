"""A slow engine: stats calls delayed past their deadline, dropped, stalled mid-body.

The engine is bench/simengine.py's SIMULATED engine, served from this test's
loop so its faults can be switched phase by phase; the subject is a real
``sysinner-exporter serve`` process polling it. Every stuck call is known to
the simulation when it arrives, so the exporter's
``sysinner_exporter_errors_total{kind="stats_timeout"}`` can be compared with
it exactly once the faults stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.simengine import Faults, SimulatedEngine, serve
from tests.support.faults import RSS_SLOPE_LIMIT, record, scaled, scaled_int
from tests.support.processes import ExporterProcess, RssSampler
from tests.support.scraping import Scrape, ScrapeResult, Scrapers, parse_scrape
from tests.support.waiting import wait_for

pytestmark = pytest.mark.faults

INTERVAL = 0.5
#: The per-call deadline (--poll.timeout): the stats source's calls are cut here.
CALL_TIMEOUT = 1.0
#: The poller bounds the whole stats read of a poll by twice the call deadline.
POLL_DEADLINE = 2 * CALL_TIMEOUT
#: The most a poll can take by its own deadlines: the list call, the inspects' soft
#: deadline (one interval), the stats read. The simulated engine answers from this
#: test's busy loop, so how much of that the list and inspects take is this machine's.
POLL_BOUND = CALL_TIMEOUT + INTERVAL + POLL_DEADLINE
#: How late the exporter's own loop may act on a deadline that has passed.
TIMER_LAG = 0.25


@dataclass
class Sim:
    engine: SimulatedEngine
    socket: Path


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    engine = SimulatedEngine(scaled_int(20, 50), seed=8)
    path = tmp_path / "sim.sock"
    runner: web.AppRunner = await serve(engine, str(path))
    try:
        yield Sim(engine, path)
    finally:
        await runner.cleanup()


def _stuck(engine: SimulatedEngine, delayed_are_stuck: bool) -> int:
    calls = engine.calls
    return (
        calls["stats_dropped"]
        + calls["stats_stalled"]
        + (calls["stats_delayed"] if delayed_are_stuck else 0)
    )


async def test_slow_engine_polls_within_deadline_counts_stuck_calls_and_stays_flat(
    sim: Sim, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    phase_seconds = scaled(5.0, 60.0)
    exporter = ExporterProcess(
        "exporter-slow-engine",
        [
            "--poll.interval",
            str(INTERVAL),
            "--poll.timeout",
            str(CALL_TIMEOUT),
            "--stats.source",
            "docker",
        ],
        env={"DOCKER_HOST": f"unix://{sim.socket}"},
    )
    exporter.start()
    durations: list[tuple[str, float]] = []
    stats_reads: list[tuple[str, float]] = []
    phase = "clean"

    def keep(result: ScrapeResult) -> None:
        scrape = parse_scrape(result.text)
        duration = scrape.value("sysinner_exporter_poll_duration_seconds")
        if duration is not None:
            durations.append((phase, duration))
        stats = scrape.value("sysinner_exporter_poll_phase_duration_seconds", phase="stats")
        if stats is not None:
            stats_reads.append((phase, stats))

    phases = [
        ("clean", Faults()),
        ("delay 3x deadline", Faults(stats_delay=3 * CALL_TIMEOUT)),
        ("drop 30%", Faults(stats_drop_ratio=0.3)),
        ("stall mid-body", Faults(stall_body=True)),
        ("clean again", Faults()),
    ]
    scrapers = Scrapers(exporter.url + "/metrics", 2, 0.1, on_scrape=keep, timeout=CALL_TIMEOUT * 4)
    sampler: RssSampler | None = None
    try:
        await exporter.wait_ready(http)
        scrapers.start(http, phase_seconds * len(phases) + 60)
        sampler = RssSampler(exporter.pid)
        sampler.start()
        figures: list[dict[str, object]] = []
        for phase, faults in phases:
            sim.engine.faults = faults
            before: Scrape = await exporter.scrape(http)
            stuck_before = _stuck(sim.engine, delayed_are_stuck=True)
            await asyncio.sleep(phase_seconds)  # the fault's length, on purpose
            after = await exporter.scrape(http)
            polls = after.value("sysinner_exporter_polls_total") or 0.0
            polls -= before.value("sysinner_exporter_polls_total") or 0.0
            timeouts = after.value("sysinner_exporter_errors_total", kind="stats_timeout") or 0.0
            timeouts -= before.value("sysinner_exporter_errors_total", kind="stats_timeout") or 0.0
            longest = max((d for p, d in durations if p == phase), default=0.0)
            longest_stats = max((d for p, d in stats_reads if p == phase), default=0.0)
            figures.append(
                {
                    "phase": phase,
                    "polls": int(polls),
                    "stuck_calls_injected": _stuck(sim.engine, True) - stuck_before,
                    "stats_timeouts_counted": int(timeouts),
                    "longest_poll_s": round(longest, 3),
                    "longest_stats_read_s": round(longest_stats, 3),
                }
            )
            # Polling went on, at least at the pace its own deadlines allow.
            assert polls >= phase_seconds / POLL_BOUND - 1, figures[-1]
            # The stats read, where the faults are, ended at its deadline however stuck
            # the calls; the whole poll within the sum of its phases' deadlines.
            assert longest_stats <= POLL_DEADLINE + TIMER_LAG, figures[-1]
            assert longest <= POLL_BOUND + TIMER_LAG, figures[-1]
            assert after.value("sysinner_exporter_up") == 1.0, figures[-1]

        injected = _stuck(sim.engine, delayed_are_stuck=True)
        counted = 0.0

        # Once the faults stop, every stuck call has been counted.
        async def all_counted() -> bool:
            nonlocal counted
            scrape = await exporter.scrape(http)
            counted = scrape.value("sysinner_exporter_errors_total", kind="stats_timeout") or 0.0
            return counted >= injected

        await wait_for(all_counted, 10, f"stats_timeout to reach the {injected} calls injected")
        await scrapers.stop()
        await sampler.stop()

        assert not scrapers.failures(), scrapers.failures()[:5]
        # RSS over the fault phases, after the clean warm-up phase.
        slope = sampler.slope_kib_per_s(skip_seconds=phase_seconds)
        late_slope = sampler.slope_kib_per_s(skip_seconds=phase_seconds * len(phases) / 2)
        rss = [s.rss_kib for s in sampler.samples]
        sockets_clean = [s.sockets for s in sampler.samples[: int(phase_seconds)]]
        sockets_end = [s.sockets for s in sampler.samples[-int(phase_seconds) // 2 :]]
        record(
            request,
            "slow engine (simulated)",
            containers=len(sim.engine.ids()),
            call_timeout_s=CALL_TIMEOUT,
            phases=figures,
            stuck_calls_injected=injected,
            stats_timeouts_counted=int(counted),
            held_calls_left=sim.engine.holding,
            scrapes=len(scrapers.results),
            failed_scrapes=len(scrapers.failures()),
            rss_kib_by_fifth=[rss[min(i * len(rss) // 5, len(rss) - 1)] for i in range(6)],
            rss_slope_kib_per_s=round(slope, 2),
            rss_slope_second_half_kib_per_s=round(late_slope, 2),
            sockets_clean_end=(max(sockets_clean), max(sockets_end)),
        )
        # Counted exactly, or (on a loaded host) a clean call past its deadline on top.
        assert injected <= counted <= injected + len(sim.engine.ids())
        # The exporter hung up on every stuck call, and its sockets are back to the clean level.
        assert sim.engine.holding == 0
        assert max(sockets_end) <= max(sockets_clean) + 2
        # The first half holds the warm-up (allocator arenas, caches); a leak goes on.
        assert late_slope < RSS_SLOPE_LIMIT, f"RSS grows {late_slope:.1f} KiB/s: {rss}"
    finally:
        await scrapers.stop()
        if sampler is not None:
            await sampler.stop()
        exporter.stop()
