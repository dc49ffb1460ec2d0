"""Pulls that hang do not starve readiness or reads (issue 12 item 10)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.support.api import ClientFactory
from tests.support.faults import record
from tests.support.hardening import make_api
from tests.support.waiting import is_true, wait_for

pytestmark = pytest.mark.engine


class SilentPort:
    """A loopback port that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.held: list[asyncio.StreamWriter] = []
        self.accepted = 0

    async def start(self) -> int:
        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.held.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        sock: socket.socket = self.server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        for w in self.held:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_hanging_pulls_do_not_starve_readiness_or_reads(
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    silent = SilentPort()
    port = await silent.start()
    pulls = 6
    try:
        # A small poll pool, as --poll.concurrency 4 gives: six pulls sharing it
        # would hold every connection polls and reads need.
        async with make_api(
            aiohttp_client,
            tmp_path,
            poll_concurrency=4,
            poll_interval=0.5,
            api_max_concurrent_pulls=2,
            api_pull_timeout=120,
        ) as api:

            async def read() -> float:
                started = time.monotonic()
                status, body = await api.call("GET", "/api/v1/containers")
                assert status == 200, body
                return time.monotonic() - started

            control = [await read() for _ in range(3)]
            image = f"127.0.0.1:{port}/never/answers:latest"
            tasks = [
                asyncio.create_task(api.call("POST", "/api/v1/images/pull", json={"image": image}))
                for _ in range(pulls)
            ]
            # Those beyond the limit are refused at once.
            await wait_for(
                lambda: is_true(sum(t.done() for t in tasks) >= pulls - 2),
                30,
                "the pulls beyond the limit to be refused",
            )
            refused = [t.result() for t in tasks if t.done()]
            assert [s for s, _ in refused] == [429] * (pulls - 2), refused
            hanging = [t for t in tasks if not t.done()]
            assert len(hanging) == 2
            await wait_for(lambda: is_true(silent.accepted >= 1), 30, "the engine to dial")

            pulls_started = time.time()

            async def polled_since() -> bool:
                status, body = await api.call("GET", "/readyz")
                return bool(status == 200 and body["engine_up"]) and (
                    time.time() - body["last_poll_age_seconds"] > pulls_started
                )

            await wait_for(polled_since, 30, "a successful poll while the pulls hang")
            during = [await read() for _ in range(3)]
            # The reads were answered while both pulls still hung.
            assert not any(t.done() for t in hanging)
            for t in hanging:
                t.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)
        record(
            request,
            "pulls from a port that never answers",
            pulls_started=pulls,
            refused_429=pulls - 2,
            read_seconds_control=max(control),
            read_seconds_during_pulls=max(during),
            readyz_engine_up=True,
        )
    finally:
        await silent.close()
