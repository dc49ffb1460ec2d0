"""map_bounded: order, the bound, and what a failing call does to the others."""

from __future__ import annotations

import asyncio

import pytest

from exporter.concurrency import map_bounded


async def test_results_come_back_in_order_with_at_most_limit_in_flight() -> None:
    in_flight = peak = 0

    async def double(x: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (x % 3))  # finish out of order, on purpose
        in_flight -= 1
        return 2 * x

    assert await map_bounded(double, list(range(50)), 4) == [2 * x for x in range(50)]
    assert peak == 4


async def test_a_failing_call_cancels_the_others_and_raises_its_own_error() -> None:
    started: list[int] = []
    cancelled: list[int] = []
    release = asyncio.Event()

    async def call(x: int) -> int:
        started.append(x)
        if x == 2:
            raise ValueError("item 2 is bad")
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x

    with pytest.raises(ValueError, match="item 2 is bad"):
        await map_bounded(call, list(range(10)), 3)
    # The two calls in flight beside the bad one were cancelled, not left running;
    # no item past them was started.
    assert sorted(cancelled) == [0, 1]
    assert started == [0, 1, 2]
    assert asyncio.all_tasks() == {asyncio.current_task()}
