"""Bodies declared and never sent, or trickled: a 408 past --web.read-timeout, nothing acted on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import pytest

from tests.faults.slow_http import (
    AUTH_LINE,
    BODY_ROUTES,
    NEW_REPLICA,
    PATIENT_READ_TIMEOUT,
    READ_TIMEOUT,
    SLACK,
    Answer,
    Target,
    assert_read_timeout,
    close,
    outcome,
    read_answer,
    read_outcome,
    stall,
)
from tests.support.api import webhook
from tests.support.faults import record
from tests.support.waiting import wait_for

pytestmark = pytest.mark.faults


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
