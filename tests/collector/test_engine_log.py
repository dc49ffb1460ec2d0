"""The serving loop says in its log when the engine stops answering, and when it is back."""

from __future__ import annotations

import logging

import pytest

from exporter.testing import FakeDriver
from tests.support.engine import poller_on


async def test_engine_down_and_back_is_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver()
    poller = poller_on(driver, interval=0.01)
    caplog.set_level(logging.INFO, logger="exporter.poller")
    driver.fail("container_list")
    async with poller.running():
        for _ in range(5):
            await poller.wait_next_poll()
        driver.heal()
        for _ in range(5):
            await poller.wait_next_poll()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("ERROR", "engine unreachable: fake engine is down"),
        ("INFO", "engine answers again"),
    ]


async def test_an_engine_up_from_the_start_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver()
    poller = poller_on(driver, interval=0.01)
    caplog.set_level(logging.INFO, logger="exporter.poller")
    async with poller.running():
        for _ in range(3):
            await poller.wait_next_poll()
    assert caplog.records == []
