"""The fleet benchmark at test size (issue 16 item 4): 5 simulated hosts x 20 + the real engine.

The full size is ``make fleet``; this runs the same code, so what it proves at
5 hosts holds for the code the figures come from. Pull mode also runs the
faults (one Alertmanager peer killed, Alertmanager down, one exporter SIGSTOPped);
agent mode is pull mode with per-host Prometheus agents remote-writing into a central one.
"""

from __future__ import annotations

import shutil

import pytest

from bench.amcluster import alertmanager_binary
from bench.fleet import Options, run, table
from tests.support.engine import engine_answers
from tests.support.requirements import require
from tests.support.stack import new_run_dir

pytestmark = [pytest.mark.engine, pytest.mark.promtool, pytest.mark.prometheus]

HOSTS, CONTAINERS = 5, 20


@pytest.fixture(autouse=True)
def _needs() -> None:
    require(
        alertmanager_binary() is not None,
        "prometheus-alertmanager (make system-deps)",
        needs="prometheus",
    )
    require(
        shutil.which("prometheus") is not None, "prometheus (make system-deps)", needs="prometheus"
    )
    require(engine_answers(), "a Docker engine", needs="engine")


@pytest.mark.parametrize("mode", ["pull", "push", "agent"])
async def test_one_alert_one_restart_across_the_fleet(mode: str) -> None:
    opts = Options(
        hosts=HOSTS,
        containers=CONTAINERS,
        mode=mode,
        poll_interval=1.0,
        scrape_interval=1.0,
        pull_interval=2.0,
        faults=mode == "pull",
        timeout=90.0,
        cpu_window=5.0,
    )
    result = await run(opts, new_run_dir())
    print("\n" + table([result]))
    fig = result.figures
    assert result.problems == []
    sick = HOSTS + 1  # one per simulated host, one on the real engine
    assert fig["sick_containers"] == sick
    assert fig["sick_stopped_started_exactly_once"] == sick
    assert fig["lifecycle_calls_on_others"] == 0
    assert fig["lifecycle_calls_on_silenced"] == 0
    assert fig["latency_samples"] == sick
    # Push fans every alert out to every host: all but the owner answer not-found.
    hosts = HOSTS + 1
    assert fig["not_found_answers_per_alert"] == (hosts - 1 if mode == "push" else 0)
    if mode == "pull":
        # Pull: at most the poll interval plus 3 s from firing to restarted.
        assert fig["firing_to_restarted_max_s"] <= opts.pull_interval + 3
    assert abs(fig["head_vs_exposed_plus_synthetic_and_rules_pct"]) <= 2.0
    if mode == "agent":
        # Per-host agents remote-write into the central Prometheus: nothing lost.
        assert fig["remote_write_samples_sent"] > 0
        assert fig["remote_write_samples_failed"] == 0
        assert fig["remote_write_samples_dropped"] == 0
