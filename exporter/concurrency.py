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
    Here ``limit`` workers pull from one shared iterator instead. If a call
    raises, the other workers are cancelled and awaited before the error
    goes on: none is left running unowned.
    """
    results: list[R | None] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for index, item in pending:
            results[index] = await fn(item)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(items)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        # gather cancels the workers only when it is cancelled itself, not
        # when one of them fails.
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return results  # type: ignore[return-value]
