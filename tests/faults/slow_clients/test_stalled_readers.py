"""Clients that stall outside a body: headers never finished, a /metrics answer never read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import aiohttp
import pytest

from exporter.api.keys import POLLER
from tests.faults.slow_http import (
    HEADERS_TIMEOUT,
    SLACK,
    WRITE_TIMEOUT,
    Target,
    close,
    closed_by_server,
)
from tests.support.faults import record
from tests.support.waiting import wait_for

pytestmark = pytest.mark.faults


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
        # Every container's series, and the host's (cAdvisor's root container, id="/").
        containers = text.count('container_cpu_usage_seconds_total{name="app-')
        assert containers == len(target.driver.containers)
        assert text.count('container_cpu_usage_seconds_total{name="",id="/"') == 1
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
