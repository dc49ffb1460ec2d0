"""Slow clients: a body declared and never sent, a body trickled, headers never finished.

aiohttp waits for a request body as long as the connection stays open, so
every body is read under ``--web.read-timeout``: past it the answer is a 408
and the connection is closed, and nothing is acted on. Headers that never
finish are aiohttp's to bound: it closes the connection once its keep-alive
timeout passes with no complete request. Every test talks raw HTTP over a
real TCP socket to the app wired as ``serve`` wires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter.api.keys import POLLER
from tests.faults.hostile import MANAGED, RecordingDriver
from tests.support.api import TOKEN, Clock, build_app, settings_for, webhook
from tests.support.faults import record
from tests.support.waiting import wait_for

pytestmark = pytest.mark.faults

#: The body deadline the app runs with here: short, so that the tests are.
READ_TIMEOUT = 1.0
#: The body deadline of the tests that must not race it: no request here comes near it.
PATIENT_READ_TIMEOUT = 600.0
#: The deadline for a client to read a /metrics answer, here.
WRITE_TIMEOUT = 1.0
#: aiohttp's keep-alive timeout here, which is also its deadline for headers.
HEADERS_TIMEOUT = 1.0
#: Slack for a loaded machine on top of a deadline; far below aiohttp's 10 s lingering.
SLACK = 3.0
#: Every route that takes a JSON body.
BODY_ROUTES = ("/api/v1/containers", "/api/v1/images/pull", "/api/v1/replicas", "/api/v1/alerts")
NEW_REPLICA = MANAGED.replace("0001", "0002")
AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n".encode()


@dataclass
class Answer:
    """One HTTP answer as read off the socket."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Target:
    """The app served on a loopback port, and its recording driver."""

    port: int
    driver: RecordingDriver
    server: web.Server
    app: web.Application

    async def connect(
        self, path: str, *, length: int, body: bytes = b"", method: str = "POST"
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Send whole headers declaring ``length`` body bytes, then ``body``; return the streams."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
            + AUTH_LINE
            + f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        return reader, writer


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """Return the next answer on the connection, read by its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    body: Any = (
        json.loads(raw) if headers.get("content-type", "").startswith("application/json") else raw
    )
    return Answer(int(status_line.split()[1]), headers, body)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Return True once the server closes the connection (EOF or reset) with nothing more sent."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def close(writer: asyncio.StreamWriter) -> None:
    """Close our end; the server may have reset it already."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def assert_read_timeout(answer: Answer) -> None:
    """A 408 with the service's JSON error naming the body and the deadline; Connection: close."""
    assert answer.status == 408, answer
    assert "request body" in answer.body["error"], answer
    assert answer.body["detail"] == {
        "timeout_seconds": READ_TIMEOUT,
        "setting": "--web.read-timeout",
    }
    assert answer.headers.get("connection", "").lower() == "close", answer


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, read_timeout: float) -> AsyncIterator[Target]:
    """Serve the app on a loopback port with ``read_timeout`` as --web.read-timeout."""
    settings = settings_for(
        tmp_path, web_read_timeout=read_timeout, web_write_timeout=WRITE_TIMEOUT
    )
    settings.pod_base_dir.mkdir(parents=True)
    driver = RecordingDriver()
    driver.add(MANAGED)
    app, *_ = build_app(settings, driver, Clock())
    runner = web.AppRunner(app, keepalive_timeout=HEADERS_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        assert runner.server is not None
        yield Target(port, driver, runner.server, app)
    finally:
        await runner.cleanup()


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    """The app with the short READ_TIMEOUT."""
    async with serving(tmp_path, READ_TIMEOUT) as served:
        yield served


@pytest.fixture
async def patient(tmp_path: Path) -> AsyncIterator[Target]:
    """The app with PATIENT_READ_TIMEOUT, for tests whose requests must not race the deadline."""
    async with serving(tmp_path, PATIENT_READ_TIMEOUT) as served:
        yield served


@dataclass
class Stall:
    """A request whose headers declared 1000 body bytes, none of which were sent."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    started: float


async def stall(target: Target, path: str) -> Stall:
    """Send headers declaring a body of 1000 bytes, and no body."""
    started = time.monotonic()
    reader, writer = await target.connect(path, length=1000)
    return Stall(reader, writer, started)


async def read_outcome(reader: asyncio.StreamReader, started: float) -> tuple[Answer, float, bool]:
    """Return a slow request's answer, how long it took, and whether the server then closed."""
    async with asyncio.timeout(READ_TIMEOUT + SLACK):
        answer = await read_answer(reader)
    waited = time.monotonic() - started
    async with asyncio.timeout(SLACK):
        closed = await closed_by_server(reader)
    return answer, waited, closed


async def outcome(stalled: Stall) -> tuple[Answer, float, bool]:
    """Return a stalled request's outcome (see read_outcome), our end closed after."""
    try:
        return await read_outcome(stalled.reader, stalled.started)
    finally:
        await close(stalled.writer)


async def test_a_body_declared_and_never_sent_is_408_and_the_connection_closed(
    target: Target, request: pytest.FixtureRequest
) -> None:
    stalls = [await stall(target, path) for path in BODY_ROUTES]
    results = await asyncio.gather(*(outcome(s) for s in stalls))
    for path, (answer, waited, closed) in zip(BODY_ROUTES, results, strict=True):
        assert_read_timeout(answer)
        # Not sooner: the deadline is the setting, not something shorter.
        assert waited >= READ_TIMEOUT * 0.95, (path, waited)
        # Closed within SLACK: aiohttp's lingering (reading the rest for 10 s) is skipped.
        assert closed, path
    assert target.driver.acted == []
    record(
        request,
        "declared body never sent",
        read_timeout_s=READ_TIMEOUT,
        routes=len(BODY_ROUTES),
        answered_after_s=[round(w, 3) for _, w, _ in results],
    )


async def test_a_body_trickled_slower_than_the_deadline_is_408(
    target: Target, request: pytest.FixtureRequest
) -> None:
    payload = json.dumps({"name": NEW_REPLICA, "image": "local/busybox:latest"}).encode()
    # One byte every fifth of the deadline: an idle-gap timeout would never fire.
    every = READ_TIMEOUT / 5
    started = time.monotonic()
    reader, writer = await target.connect("/api/v1/containers", length=len(payload))
    stop = asyncio.Event()
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):
            for byte in payload:
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
                if stop.is_set():
                    return

    trickler = asyncio.create_task(trickle())
    try:
        answer, waited, closed = await read_outcome(reader, started)
    finally:
        stop.set()
        await trickler
        await close(writer)
    assert_read_timeout(answer)
    assert closed
    assert waited >= READ_TIMEOUT * 0.95, waited
    assert 1 < sent < len(payload), sent
    assert target.driver.acted == []
    record(
        request,
        "body trickled",
        read_timeout_s=READ_TIMEOUT,
        byte_every_s=every,
        bytes_sent=sent,
        body_bytes=len(payload),
        answered_after_s=round(waited, 3),
    )


async def test_other_requests_are_answered_while_bodies_stall(patient: Target) -> None:
    # The bodies' deadline is far beyond anything here, so "still stalled when the
    # other request was answered" holds however slowly this machine runs; the stalls
    # then end by their bodies arriving (the 408 at the deadline is the tests' above).
    payload = json.dumps(webhook()).encode()
    stalls = [await patient.connect("/api/v1/alerts", length=len(payload)) for _ in range(8)]

    async def answer_of(reader: asyncio.StreamReader) -> Answer:
        async with asyncio.timeout(PATIENT_READ_TIMEOUT / 10):  # only stops a hang
            return await read_answer(reader)

    waiting = [asyncio.create_task(answer_of(reader)) for reader, _ in stalls]
    try:
        reader, writer = await patient.connect("/api/v1/info", length=0, method="GET")
        try:
            async with asyncio.timeout(SLACK):
                info = await read_answer(reader)
        finally:
            await close(writer)
        # Answered while every stalled body is still waiting.
        assert info.status == 200, info
        assert not any(t.done() for t in waiting)
        for _, stalled_writer in stalls:
            stalled_writer.write(payload)
            await stalled_writer.drain()
        answers = await asyncio.gather(*waiting)
    finally:
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for _, stalled_writer in stalls:
            await close(stalled_writer)
    # Each stalled request was held open for its body, and answered once it came.
    assert [a.status for a in answers] == [200] * len(stalls), answers
    assert patient.driver.acted == []


async def test_a_body_sent_in_time_is_answered_and_the_connection_kept(patient: Target) -> None:
    payload = json.dumps({"name": NEW_REPLICA, "image": "local/busybox:latest"}).encode()
    half = len(payload) // 2
    reader, writer = await patient.connect(
        "/api/v1/containers", length=len(payload), body=payload[:half]
    )
    try:
        # A pause mid-body, on purpose: the server has half the body and waits for the
        # rest, under a deadline no pause here comes near on any machine.
        await asyncio.sleep(READ_TIMEOUT / 4)
        writer.write(payload[half:])
        await writer.drain()
        async with asyncio.timeout(SLACK):
            created = await read_answer(reader)
        assert created.status == 201, created
        assert patient.driver.acted == [("create", NEW_REPLICA)]
        assert created.headers.get("connection", "").lower() != "close"
        # Kept alive: the next request on the same connection is answered too.
        writer.write(b"GET /api/v1/info HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(SLACK):
            assert (await read_answer(reader)).status == 200
    finally:
        await close(writer)


async def test_headers_never_finished_are_closed_at_the_keepalive_timeout(
    target: Target, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    stop = asyncio.Event()
    lines = 0

    async def slowloris() -> None:
        nonlocal lines
        writer.write(b"GET /api/v1/info HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):
            while not stop.is_set():
                writer.write(f"X-Slow-{lines}: y\r\n".encode())
                await writer.drain()
                lines += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEADERS_TIMEOUT / 5)

    sender = asyncio.create_task(slowloris())
    try:
        async with asyncio.timeout(HEADERS_TIMEOUT + SLACK):
            closed = await closed_by_server(reader)
        waited = time.monotonic() - started
    finally:
        stop.set()
        await sender
        await close(writer)
    # Closed with no answer at all, however steadily the header lines came.
    assert closed
    assert waited >= HEADERS_TIMEOUT * 0.95, waited
    assert lines > 1, lines
    record(
        request,
        "headers never finished",
        keepalive_timeout_s=HEADERS_TIMEOUT,
        header_lines_sent=lines,
        closed_after_s=round(waited, 3),
    )


async def test_a_client_gone_mid_body_is_no_error_and_nothing_is_done(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"name": NEW_REPLICA, "image": "local/busybox:latest"}).encode()
    _, writer = await target.connect("/api/v1/containers", length=len(body), body=body[:10])
    await close(writer)

    async def connection_done() -> bool:
        return not target.server.connections

    await wait_for(connection_done, SLACK, "the server to drop the connection")
    # A client hanging up is no fault of ours: no traceback for each one in the log.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert target.driver.acted == []


async def test_a_scraper_that_stops_reading_is_dropped_at_the_write_timeout(
    target: Target,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.api.observability")
    # Thousands of containers make a plain body of megabytes, more than the
    # socket buffers hold, so the answer cannot be written in full unread.
    for i in range(3000):
        target.driver.add(f"app-abcdef12-{i:04x}")
    await target.app[POLLER].poll_once()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", target.port))
    _, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        started = time.monotonic()

        mine = sock.getsockname()

        async def dropped() -> bool:
            return not any(
                h.transport is not None and h.transport.get_extra_info("peername") == mine
                for h in target.server.connections
            )

        # Meanwhile a scraper that reads is answered in full.
        async with http.get(f"http://127.0.0.1:{target.port}/metrics") as answer:
            assert answer.status == 200
            text = await answer.text()
        assert text.count("container_cpu_usage_seconds_total{") == len(target.driver.containers)
        await wait_for(dropped, WRITE_TIMEOUT + SLACK, "the stalled scrape's connection to close")
        waited = time.monotonic() - started
    finally:
        await close(writer)
    record(
        request,
        "scraper stops reading",
        write_timeout_s=WRITE_TIMEOUT,
        containers=len(target.driver.containers),
        body_bytes=len(text),
        closed_after_s=round(waited, 3),
    )
    # Not sooner than the setting, and by the write timeout itself (its log line), not
    # some other hang-up. How much later than the setting is the render of 3,000
    # containers on this machine plus the other scrape; the wait above bounds it.
    assert waited >= WRITE_TIMEOUT
    dropped_lines = [r for r in caplog.records if "did not read /metrics within" in r.getMessage()]
    assert len(dropped_lines) == 1, caplog.text
