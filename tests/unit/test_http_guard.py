"""The HTTP guard's parts that need no server: the rate-limited log and quoting."""

from __future__ import annotations

import logging

import pytest

from exporter.api.server import QUOTE_CHARS, RateLimitedLog, quoted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_at_most_burst_lines_a_period_and_the_dropped_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.limited"), period=60, burst=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.limited"):
        logged = [limited.info("bad request %d", i) for i in range(100)]
        assert logged == [True] * 3 + [False] * 97
        assert len(caplog.records) == 3
        clock.now += 59.9
        assert not limited.info("still the same window")
        clock.now += 0.1
        assert limited.info("a new window")
    assert len(caplog.records) == 4
    assert caplog.records[-1].getMessage() == "a new window (98 more like it not logged)"
    assert limited.suppressed_total == 98
    assert limited.suppressed == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("line\nbreak\r\n  caret ^", "line break caret ^"),
        ("nul\x00bell\x07", "nul\\x00bell\\x07"),
        ("x" * (QUOTE_CHARS + 50), "x" * QUOTE_CHARS + "..."),
    ],
)
def test_client_bytes_are_quoted_short_and_on_one_line(text: str, expected: str) -> None:
    assert quoted(text) == expected
