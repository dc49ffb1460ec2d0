"""Log lines: logfmt a logfmt parser reads back, whatever the message holds."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from exporter.logs import JsonFormatter, LogfmtFormatter
from tests.newcomer.support import parse_logfmt


def record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("exporter.test", level, __file__, 1, msg, None, None)
    r.__dict__.update(extra)
    return r


@pytest.mark.parametrize(
    "msg",
    [
        "plain",
        "with spaces and = signs",
        'quotes " and backslashes \\ inside',
        "new\nlines\tand\rreturns",
        "",
        "ünïcode ✓",
    ],
)
def test_any_message_round_trips_through_a_logfmt_parser(msg: str) -> None:
    line = LogfmtFormatter().format(record(msg, container="app-1 x"))
    assert "\n" not in line
    parsed = parse_logfmt(line)
    assert parsed["msg"] == msg
    assert parsed["level"] == "info"
    assert parsed["logger"] == "exporter.test"
    assert parsed["container"] == "app-1 x"


def test_warning_is_written_warn_as_the_toolkit_writes_it_in_both_formats() -> None:
    warning = record("x", logging.WARNING)
    assert parse_logfmt(LogfmtFormatter().format(warning))["level"] == "warn"
    assert json.loads(JsonFormatter().format(warning))["level"] == "warn"
    assert json.loads(JsonFormatter().format(record("x", logging.ERROR)))["level"] == "error"


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        r = record("failed", logging.ERROR)
        r.exc_info = sys.exc_info()
    line = LogfmtFormatter().format(r)
    assert "\n" not in line
    assert parse_logfmt(line)["exc"].endswith("ValueError: boom")
