"""The HTTP server around the app: a connection cap, and malformed requests answered quietly.

aiohttp logs a traceback for every request it cannot parse (550-726 bytes
each, from anyone who can connect, no token needed) and answers it in plain
text; and it accepts connections without limit, so idle or slow clients can
hold every file descriptor the process has. Here a request that cannot be
parsed is answered with the same JSON error as every other and logs one
short line, at most a few per minute; and past ``--web.max-connections``
open connections a new one is closed as soon as it is accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_request import BaseRequest

from exporter.api.errors import error_response
from exporter.config import flag_name

log = logging.getLogger("exporter.http")

#: Longest part of a client's bytes quoted in a log line or an answer.
QUOTE_CHARS = 120


class RateLimitedLog:
    """Logs at most ``burst`` lines per ``period`` seconds; says how many it dropped."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        period: float = 60.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._period = period
        self._burst = burst
        self._clock = clock
        self._window_start = -float("inf")
        self._in_window = 0
        self.suppressed = 0
        self.suppressed_total = 0

    def info(self, msg: str, *args: object) -> bool:
        """Log ``msg`` at INFO unless the window's lines are spent; return whether it was."""
        now = self._clock()
        if now - self._window_start >= self._period:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self._burst:
            self.suppressed += 1
            self.suppressed_total += 1
            return False
        self._in_window += 1
        if self.suppressed:
            msg += f" ({self.suppressed} more like it not logged)"
            self.suppressed = 0
        self._logger.info(msg, *args)
        return True


def quoted(text: str) -> str:
    """Return ``text`` on one line: whitespace runs as one space, other controls escaped, cut short.

    aiohttp's parse errors span several lines (a caret under the bad byte);
    one line each is what keeps the log greppable and injection-free.
    """
    flat = " ".join(text.split())
    cut = flat[:QUOTE_CHARS]
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return safe + ("..." if len(flat) > QUOTE_CHARS else "")


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, refusing connections past the cap and quiet on bad input."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the connection, or close it at once when the server is full."""
        server = self._manager
        if isinstance(server, GuardedServer) and server.full():
            server.refused += 1
            server.notices.info(
                "connection refused: %d connections open already (%s)",
                len(server.connections),
                flag_name("web_max_connections"),
            )
            # abort: no lingering, the descriptor is closed by the next loop turn.
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:
                transport.close()
            # connection_lost then finds no manager and does nothing.
            self._manager = None
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse as JSON, logging one short line."""
        if not isinstance(exc, HttpProcessingError):
            # Not the client's bytes: a fault of ours, worth its traceback.
            return super().handle_error(request, status, exc, message)
        server = self._manager
        what = quoted(str(exc.message or message or ""))
        if isinstance(server, GuardedServer):
            server.malformed += 1
            server.notices.info("malformed HTTP request from %s: %s", request.remote, what)
        if request.writer.output_size > 0:
            raise ConnectionError("answer already begun; cannot send the error")
        if isinstance(exc, LineTooLong):
            error = "request line or header too large"
        else:
            error = "malformed HTTP request"
        code = exc.code if 400 <= exc.code < 500 else 400
        response = error_response(code, error, what)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's server, whose connections are :class:`GuardedRequestHandler` up to a cap."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.refused = 0
        self.malformed = 0
        #: One budget for both kinds of notice: a flood of either cannot flood the log.
        self.notices = RateLimitedLog(log)

    @property
    def open_connections(self) -> int:
        """Return how many connections are open now."""
        return len(self._connections)

    def full(self) -> bool:
        """Return whether ``max_connections`` connections are open."""
        return self.open_connections >= self.max_connections

    def __call__(self) -> web.RequestHandler:
        """Return the handler of a new connection."""
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server is a :class:`GuardedServer`."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        # The same server aiohttp would make (handler, factory and handler
        # arguments as the app and runner set them), with the guard added.
        return GuardedServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            max_connections=self._max_connections,
            **base._kwargs,
        )
