"""Abuse that needs no token, against a real ``serve``: malformed requests and idle connections.

Issue 12 item 9: each malformed request logged a 550-726 byte traceback, and
connections were not capped, so a slowloris reached the fd limit and
``/healthz`` stopped answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.faults import record, scaled_int
from tests.support.processes import ExporterProcess, proc_sample
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine

#: Requests aiohttp's parser refuses: a bad request line, a bad header, a header too large.
MALFORMED = [
    b"GET / HTTP/9.9x\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    b"GET /\x00 HTTP/1.1\r\n\r\n",
]


@pytest.fixture
def exporter(engine: None) -> Iterator[ExporterProcess]:
    process = ExporterProcess("exporter-http-abuse", ["--web.max-connections", "16"])
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and return everything the server sends back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(15):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def split_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


async def test_malformed_requests_are_json_400s_and_log_a_few_short_lines(
    exporter: ExporterProcess, request: pytest.FixtureRequest
) -> None:
    async with aiohttp.ClientSession() as session:
        await exporter.wait_ready(session)
    assert exporter.service is not None
    log_path = exporter.service.log_path
    before = log_path.stat().st_size
    rounds = scaled_int(40, 400)
    for _ in range(rounds):
        for data in MALFORMED:
            status, headers, body = split_answer(await send_raw(exporter.port, data))
            assert status == 400, body
            assert headers["content-type"].startswith("application/json"), headers
            answer = json.loads(body)
            assert set(answer) == {"error", "detail"}
    # The header too large says so.
    _, _, body = split_answer(await send_raw(exporter.port, MALFORMED[2]))
    assert json.loads(body)["error"] == "request line or header too large"
    async with aiohttp.ClientSession() as session:
        scrape = await exporter.scrape(session)
    # Every one counted, though only a few were logged.
    sent = rounds * len(MALFORMED) + 1
    assert scrape.value("sysinner_exporter_http_malformed_requests_total") == sent

    added = log_path.read_bytes()[before:].decode(errors="replace")
    lines = [line for line in added.splitlines() if line.strip()]
    assert "Traceback" not in added, added[:2000]
    # One budget of a few lines a minute, each short, however many were sent.
    assert all(len(line) <= 400 for line in lines), lines
    assert len(lines) <= 2 * 5, lines
    assert any("malformed HTTP request" in line for line in lines), lines
    record(
        request,
        "malformed HTTP requests without a token",
        requests=sent,
        log_lines=len(lines),
        log_bytes=len(added.encode()),
        tracebacks=0,
    )


async def healthz_status(port: int) -> int | None:
    """Return /healthz's status from a fresh connection, or None when it is closed unanswered."""
    try:
        raw = await send_raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    except ConnectionError:
        return None
    if not raw:
        return None
    return split_answer(raw)[0]


async def closed_at_least(
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], count: int
) -> bool:
    """Return whether the server closed at least ``count`` of the ``held`` connections."""
    for reader, _ in held:
        # Let each reader notice an EOF that arrived.
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.001):
                await reader.read(1)
    return sum(reader.at_eof() for reader, _ in held) >= count


async def no_http_connections(pid: int) -> bool:
    """Return whether the process holds no TCP connection (the engine is on a unix socket)."""
    sample = proc_sample(pid)
    return sample.tcp_established == 0 and sample.tcp_close_wait == 0


async def test_idle_connections_past_the_cap_are_closed_and_healthz_recovers(
    exporter: ExporterProcess, request: pytest.FixtureRequest
) -> None:
    cap, extra = 16, 24
    async with aiohttp.ClientSession() as session:
        await exporter.wait_ready(session)
    await wait_for(lambda: no_http_connections(exporter.pid), 15, "the readiness client to be gone")
    baseline = proc_sample(exporter.pid).fds
    rounds = scaled_int(5, 30)
    peak_fds = 0
    for _ in range(rounds):
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(cap + extra):
                held.append(await asyncio.open_connection("127.0.0.1", exporter.port))

            await wait_for(
                functools.partial(closed_at_least, held, extra),
                15,
                "the connections past the cap to be closed",
            )
            closed = [i for i, (r, _) in enumerate(held) if r.at_eof()]
            # Those past the cap, and only they: the first ``cap`` stay open.
            assert closed == list(range(cap, cap + extra)), closed
            sample = proc_sample(exporter.pid)
            peak_fds = max(peak_fds, sample.fds)
            assert sample.tcp_established == cap
            # Engine connections come and go with the polls: a few fds of slack.
            assert sample.fds <= baseline + cap + 8, (baseline, sample)
            # Full: a fresh client is turned away at once, not left hanging.
            assert await healthz_status(exporter.port) is None
            # A few slots free, the rest still held: the next fresh client is answered.
            for _, w in held[:4]:
                w.close()

            async def healthy() -> bool:
                return await healthz_status(exporter.port) == 200

            await wait_for(healthy, 15, "/healthz once some slots are free")
            assert proc_sample(exporter.pid).tcp_established <= cap
        finally:
            for _, w in held:
                w.close()
        await wait_for(
            lambda: no_http_connections(exporter.pid), 15, "the round's connections to be gone"
        )
    async with aiohttp.ClientSession() as session:
        scrape = await exporter.scrape(session)
    # Each round turned away its extra connections and the fresh client sent while full.
    refused = scrape.value("sysinner_exporter_http_connections_refused_total") or 0.0
    assert refused >= rounds * (extra + 1), refused
    assert scrape.value("sysinner_exporter_http_max_connections") == cap
    assert scrape.value("sysinner_exporter_http_connections") == 1  # this scrape's own
    record(
        request,
        "idle connections past --web.max-connections",
        rounds=rounds,
        connections_per_round=cap + extra,
        cap=cap,
        fds_baseline=baseline,
        fds_peak=peak_fds,
        healthz_once_4_slots_freed=200,
    )
