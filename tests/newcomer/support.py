"""A `sysinner-exporter serve` child process, its logfmt log, and HTTP(S) on loopback."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT

EXPORTER_BIN = ROOT / ".venv" / "bin" / "sysinner-exporter"

# key=value or key="escaped value", separated by single spaces (go-logfmt's grammar).
_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """Return the pairs of one logfmt line; AssertionError when it is not logfmt."""
    pairs: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        assert match, f"not logfmt at column {position}: {line!r}"
        key, raw = match.groups()
        if raw.startswith('"'):
            raw = re.sub(
                r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), raw[1:-1]
            )
        pairs[key] = raw
        position = match.end()
    return pairs


def clean_environment() -> dict[str, str]:
    """Return this process's environment without any of the exporter's own variables."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("EXPORTER_", "SYSINNER_EXPORTER_"))
    }


@dataclass
class Exporter:
    """A `serve` process started by a test; its log in a file, stopped by SIGTERM."""

    args: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Exporter:
        """Start the process."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(EXPORTER_BIN), "serve", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**clean_environment(), **self.env},
            )
        return self

    def lines(self) -> list[str]:
        """Return the log's lines so far."""
        return self.log_path.read_text(errors="replace").splitlines()

    def records(self) -> list[dict[str, str]]:
        """Return every log line parsed as logfmt."""
        return [parse_logfmt(line) for line in self.lines()]

    def wait_log(
        self, predicate: Callable[[dict[str, str]], bool], within: float
    ) -> dict[str, str]:
        """Return the first log record ``predicate`` accepts; fail after ``within`` s or on exit."""
        deadline = time.monotonic() + within
        while True:
            for record in self.records():
                if predicate(record):
                    return record
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the exporter exited {self.proc.returncode}:\n" + "\n".join(self.lines())
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no such log line within {within}s:\n" + "\n".join(self.lines()))
            time.sleep(0.05)

    def serving(self, within: float = 30) -> list[str]:
        """Wait until every address is served; return the scrape URLs the log names."""
        self.wait_log(lambda r: r.get("msg", "").startswith("serving on"), within)
        # Every listener is started before the first "serving on" line is written.
        return [
            r["msg"].rpartition("; scrape ")[2]
            for r in self.records()
            if r.get("msg", "").startswith("serving on")
        ]

    def stop(self, grace: float = 15) -> int:
        """SIGTERM, wait; SIGKILL after ``grace`` seconds. Return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        return self.proc.returncode


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def get(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> Answer:
    """GET ``url``; an HTTP error status is an Answer too, a connection failure raises."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return Answer(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, dict(e.headers), e.read())


def wait_answer(url: str, within: float, accept: Callable[[Answer], bool], **kw: Any) -> Answer:
    """GET ``url`` until ``accept`` takes the answer; fail after ``within`` s."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            answer = get(url, **kw)
            if accept(answer):
                return answer
            last = answer.status
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"{url}: no accepted answer within {within}s (last: {last!r})")
        time.sleep(0.1)
