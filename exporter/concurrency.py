"""Bounded concurrency without a task per item."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def map_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """Return ``[await fn(x) for x in items]``, at most ``limit`` calls in flight, in order.

    ``gather`` over a semaphore would create a task per item up front; with
    thousands of containers that is megabytes of tasks waiting their turn.
    Here ``limit`` workers pull from one shared iterator instead.
    """
    results: list[R | None] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for index, item in pending:
            results[index] = await fn(item)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    return results  # type: ignore[return-value]
