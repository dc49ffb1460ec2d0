"""What the slow-client tests share: the app served with given deadlines, raw HTTP, stalls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.faults.hostile import MANAGED, RecordingDriver
from tests.support.api import TOKEN, Clock, build_app, settings_for

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
