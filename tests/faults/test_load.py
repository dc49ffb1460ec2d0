"""Load: 50 concurrent scrapers over 500 containers, and racing lifecycle calls on one container.

The 500 containers come from bench/simengine.py's SIMULATED engine (the real
one here cannot hold that many); the scrapers are ``wrk`` from Debian. The
lifecycle races run on the real engine with a container of this test's own.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from exporter.drivers.docker import DockerDriver
from exporter.errors import NotFoundError
from exporter.naming import container_name
from tests.support.engine import IDLE_CMD, TEST_IMAGE, new_app_id
from tests.support.faults import record, run_dir, scaled, scaled_int
from tests.support.paths import ROOT
from tests.support.processes import ExporterProcess
from tests.support.requirements import require
from tests.support.waiting import wait_for

pytestmark = pytest.mark.faults

CONTAINERS = 500
CONNECTIONS = 50
TOKEN = "faults-load-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@pytest.fixture
async def sim_socket(tmp_path: Path) -> AsyncIterator[Path]:
    """Run the simulated engine with 500 containers as a child process; yield its socket."""
    path = tmp_path / "sim.sock"
    log = (run_dir() / "simengine.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.simengine",
        "--containers",
        str(CONTAINERS),
        "--socket",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.strip() == b"ready", line
        yield path
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=10)
        log.close()


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m is not None, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """Return wrk's latency percentiles (s), requests, rate and error counts."""
    figures: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M):
        figures[f"p{pct}_s"] = _seconds(value)
    done = re.search(r"^\s+(\d+) requests in ([\d.]+\w+), (\S+) read", out, re.M)
    assert done is not None, out
    figures["requests"] = float(done.group(1))
    figures["seconds"] = _seconds(done.group(2))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    figures["socket_errors"] = (
        float(sum(int(g) for g in socket_errors.groups())) if socket_errors else 0
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return figures


@pytest.mark.tools
async def test_50_scrapers_over_500_containers(
    sim_socket: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    wrk = shutil.which("wrk")
    require(wrk is not None, "wrk (Debian package wrk)", needs="tools")
    assert wrk is not None
    exporter = ExporterProcess(
        "exporter-load",
        ["--poll.interval", "2", "--stats.source", "docker"],
        env={"DOCKER_HOST": f"unix://{sim_socket}"},
    )
    exporter.start()
    try:
        await exporter.wait_ready(http)

        async def all_there() -> bool:
            scrape = await exporter.scrape(http)
            return scrape.value("sysinner_exporter_containers") == CONTAINERS

        await wait_for(all_there, 30, f"{CONTAINERS} containers in the snapshot")
        async with http.get(exporter.url + "/metrics") as r:
            plain = await r.read()
        async with http.get(
            exporter.url + "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as r:
            gzipped = await r.read()

        runs: dict[str, dict[str, float]] = {}
        seconds = int(scaled(10, 30))
        for label, headers in (("gzip", ["-H", "Accept-Encoding: gzip"]), ("plain", [])):
            if label == "plain" and not scaled_int(0, 1):
                continue  # the plain-text run is the soak's
            proc = await asyncio.create_subprocess_exec(
                wrk,
                "-t2",
                f"-c{CONNECTIONS}",
                f"-d{seconds}s",
                "--latency",
                "--timeout",
                "5s",
                *headers,
                exporter.url + "/metrics",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=seconds + 60)
            text = out.decode(errors="replace")
            (run_dir() / f"wrk-{label}.txt").write_text(text)
            assert proc.returncode == 0, text
            runs[label] = parse_wrk(text)
        # After the load the exporter still answers whole, valid scrapes.
        scrape = await exporter.scrape(http)
        assert not scrape.duplicates
        assert len(scrape.series("container_last_seen")) == CONTAINERS
        assert exporter.running()

        record(
            request,
            "load: 50 scrapers, 500 containers",
            containers=CONTAINERS,
            connections=CONNECTIONS,
            body_bytes_plain=len(plain),
            body_bytes_gzip=len(gzipped),
            runs={
                label: {
                    **{
                        k[:-2] + "_ms": round(v * 1000, 1) for k, v in r.items() if k.endswith("_s")
                    },
                    "requests": int(r["requests"]),
                    "rate_per_s": round(r["requests"] / r["seconds"], 1),
                    "errors": int(r["socket_errors"] + r["non_2xx"]),
                }
                for label, r in runs.items()
            },
        )
        # Every scrape answered, whole and in time for wrk (--timeout 5s), every
        # connection more than once. The latencies are recorded, not asserted: how fast
        # this machine serves is a benchmark's to say, against a peer in the same run.
        for label, r in runs.items():
            assert r["socket_errors"] == 0, (label, r)
            assert r["non_2xx"] == 0, (label, r)
            assert r["requests"] >= CONNECTIONS * 2, (label, r)
    finally:
        exporter.stop()


# -- lifecycle races -------------------------------------------------------------

VERBS = ("start", "stop", "restart")


async def _engine_state(name: str) -> str | None:
    driver = DockerDriver()
    try:
        return (await driver.container_inspect(name)).state.value
    except NotFoundError:
        return None
    finally:
        await driver.close()


@pytest.mark.engine
async def test_racing_lifecycle_calls_on_one_container_end_consistent(
    engine: None, tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest
) -> None:
    rounds = scaled_int(6, 30)
    per_round = 12
    rng = random.Random(20261129)
    exporter = ExporterProcess(
        "exporter-lifecycle-races",
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
        env={"EXPORTER_API_TOKEN": TOKEN},
    )
    name = container_name(new_app_id(), 1)
    api = f"{exporter.url}/api/v1/containers"
    statuses: Counter[tuple[str, int]] = Counter()
    exporter.start()
    try:
        await exporter.wait_ready(http)
        async with http.post(
            api, json={"name": name, "image": TEST_IMAGE, "cmd": IDLE_CMD}, headers=AUTH
        ) as r:
            assert r.status == 201, await r.text()

        async def call(verb: str) -> None:
            method, url = (
                ("DELETE", f"{api}/{name}")
                if verb == "remove"
                else (
                    "POST",
                    f"{api}/{name}/{verb}",
                )
            )
            async with http.request(method, url, headers=AUTH) as r:
                body = await r.read()
                statuses[(verb, r.status)] += 1
                if r.status >= 500:
                    raise AssertionError(f"{verb}: {r.status} {body[:300]!r}")

        for round_ in range(rounds):
            last = round_ == rounds - 1
            verbs = [rng.choice(VERBS) for _ in range(per_round - (3 if last else 0))]
            verbs += ["remove"] * (3 if last else 0)
            rng.shuffle(verbs)
            await asyncio.wait_for(asyncio.gather(*(call(v) for v in verbs)), timeout=120)
            if last:
                break
            # Whatever the races did, the API and the engine agree, and the container
            # still obeys: a start leaves it running.
            async with http.get(f"{api}/{name}", headers=AUTH) as r:
                assert r.status == 200
                shown = json.loads(await r.read())["state"]
            assert shown == await _engine_state(name)
            async with http.post(f"{api}/{name}/start", headers=AUTH) as r:
                assert r.status == 200, await r.text()
                assert json.loads(await r.read())["state"] == "running"

        # The removes won: gone from the API, the engine and, after a poll, /metrics.
        async with http.get(f"{api}/{name}", headers=AUTH) as r:
            assert r.status == 404
        assert await _engine_state(name) is None

        async def gone_from_metrics() -> bool:
            scrape = await exporter.scrape(http)
            return all(lbl["name"] != name for lbl, _ in scrape.series("container_last_seen"))

        await wait_for(gone_from_metrics, 10, "the removed container to leave /metrics")
        assert exporter.running()
        assert exporter.service is not None
        assert "unexpected error" not in exporter.service.log_path.read_text()
        record(
            request,
            "lifecycle races (main engine)",
            rounds=rounds,
            calls=sum(statuses.values()),
            statuses={f"{verb} {status}": n for (verb, status), n in sorted(statuses.items())},
            server_errors=sum(n for (_, s), n in statuses.items() if s >= 500),
        )
        assert all(status in (200, 204, 404, 409) for _, status in statuses), statuses
    finally:
        exporter.stop()
        driver = DockerDriver()
        try:
            await driver.container_remove(name)
        finally:
            await driver.close()
