"""Waiting for a condition with a deadline, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiohttp
import pytest


class Watched(Protocol):
    """A child process a wait gives up on as soon as it exits."""

    name: str

    def running(self) -> bool:
        """Return True while the process has not exited."""
        ...


async def wait_for(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float,  # noqa: ASYNC109 - a polling deadline, not a cancellable wait
    what: str | Callable[[], str],
    every: float = 0.1,
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds.

    ``what`` may be a callable, read at the failure: it can then tell what was last seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout}s waiting for {said}")
        await asyncio.sleep(every)


async def is_true(value: bool) -> bool:
    """Return ``value``: ``wait_for``'s predicate for a condition that needs no awaiting."""
    return value


async def wait_until(
    predicate: Any, within: float, what: str, every: float = 0.25, services: Sequence[Watched] = ()
) -> Any:
    """Await ``predicate()`` until it returns a truthy value and return it; fail after ``within`` s.

    A service in ``services`` that exits meanwhile fails the wait at once.
    """
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            last_error = e
        for s in services:
            if not s.running():
                pytest.fail(f"{s.name} exited while waiting for {what}")
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            pytest.fail(f"timed out after {within}s waiting for {what}{extra}")
        await asyncio.sleep(every)
