"""What the fault tests share: scaling to soak size, and each test's figures.

``SOAK=1`` (``make soak``) scales durations and counts up; without it every
test keeps to its quick size so that ``tests/faults`` fits ``make test``.
Each test records its figures (what was injected, how often, what was seen)
with :func:`record`; they go to ``artifacts/faults/<run>/figures.jsonl``
next to the logs of every process the test started, and the README's table
is written from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT

SOAK = os.environ.get("SOAK", "").strip() not in ("", "0", "false", "no")
ARTIFACTS = ROOT / "artifacts" / "faults"
#: Run dirs older than this are pruned when a new run starts.
KEEP_RUNS_SECONDS = 3 * 3600


def scaled(quick: float, soak: float) -> float:
    """Return ``soak`` under SOAK=1, else ``quick``."""
    return soak if SOAK else quick


def scaled_int(quick: int, soak: int) -> int:
    """Return ``soak`` under SOAK=1, else ``quick``."""
    return soak if SOAK else quick


#: RSS growth (KiB/s, over the second half of a run: the first holds the warm-up) that
#: counts as a leak. Over the quick runs' 20 s the allocator's steps alone reach 60 KiB/s,
#: so there it catches a gross leak only (a scrape body kept per scrape is ~1 MiB/s);
#: the soak's minutes measure the slope the README reports.
RSS_SLOPE_LIMIT = scaled(128.0, 32.0)


_run_dir: Path | None = None


def run_dir() -> Path:
    """Return this pytest run's artifacts dir (created once; old runs' dirs pruned)."""
    global _run_dir
    if _run_dir is None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in ARTIFACTS.iterdir():
            if old.is_dir() and now - old.stat().st_mtime > KEEP_RUNS_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        _run_dir = ARTIFACTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        _run_dir.mkdir(exist_ok=True)
    return _run_dir


def record(request: pytest.FixtureRequest, fault: str, **figures: Any) -> None:
    """Append one test's figures to the run's figures.jsonl (and show them with -s)."""
    row = {"test": request.node.nodeid, "fault": fault, "soak": SOAK, **figures}
    with (run_dir() / "figures.jsonl").open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    print(f"\nFIGURES {json.dumps(row, default=str)}")


#: A sqlite3 client that holds the state file's write lock until its stdin closes.
HOLD_LOCK = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def lock_held(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Hold ``BEGIN EXCLUSIVE`` on ``path`` from another process for the block."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
