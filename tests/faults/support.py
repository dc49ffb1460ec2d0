"""What the fault tests share: scaling, figures, the exporter as a process, scrapers, /proc.

``SOAK=1`` (``make soak``) scales durations and counts up; without it every
test keeps to its quick size so that ``tests/faults`` fits ``make test``.
Each test records its figures (what was injected, how often, what was seen)
with :func:`record`; they go to ``artifacts/faults/<run>/figures.jsonl``
next to the logs of every process the test started, and the README's table
is written from them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT, free_port
from tests.monitoring.stack import EXPORTER_BIN, Service, wait_until

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


# -- /proc ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """What /proc says about a process at one moment."""

    at: float
    rss_kib: int
    fds: int
    sockets: int
    threads: int
    tcp_established: int
    tcp_close_wait: int


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_states(pid: int, inodes: set[str]) -> Counter[str]:
    states: Counter[str] = Counter()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                states[cols[3]] += 1
    return states


def proc_sample(pid: int) -> ProcSample:
    """Return RSS, open fds, sockets, threads and TCP states of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    inodes = _socket_inodes(pid)
    states = _tcp_states(pid, inodes)
    return ProcSample(
        at=time.monotonic(),
        rss_kib=int(fields["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        sockets=len(inodes),
        threads=int(fields["Threads"]),
        tcp_established=states["01"],
        tcp_close_wait=states["08"],
    )


def slope_per_second(points: Sequence[tuple[float, float]]) -> float:
    """Return the least-squares slope of (t, y) points, y units per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in points) / var


class RssSampler:
    """Samples a process once per ``every`` seconds in the background."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[ProcSample] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(proc_sample(self.pid))
            await asyncio.sleep(self.every)

    def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def slope_kib_per_s(self, skip_seconds: float = 0.0) -> float:
        """Return the RSS slope in KiB/s, ignoring the first ``skip_seconds`` (warm-up)."""
        if not self.samples:
            return 0.0
        t0 = self.samples[0].at
        points = [(s.at - t0, float(s.rss_kib)) for s in self.samples if s.at - t0 >= skip_seconds]
        return slope_per_second(points)


# -- the exposition ------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    """One parsed /metrics answer."""

    samples: dict[tuple[str, Labels], float]
    duplicates: list[str]

    def value(self, name: str, **labels: str) -> float | None:
        """Return the value of one series, or None when absent."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Return every series of a metric name."""
        return [(dict(lbl), v) for (n, lbl), v in self.samples.items() if n == name]


def parse_scrape(text: str) -> Scrape:
    """Parse the text exposition (as the exporter writes it) and find duplicated series."""
    samples: dict[tuple[str, Labels], float] = {}
    duplicates: list[str] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        # A sample may end in a timestamp (container_last_seen's): the value is
        # the first field after the labels.
        close = line.rfind("}")
        head = line[: close + 1] if close >= 0 else line.split(" ", 1)[0]
        value = line[len(head) :].split()[0]
        name, brace, rest = head.partition("{")
        labels = tuple(sorted(_LABEL.findall(rest))) if brace else ()
        key = (name, labels)
        if key in samples:
            duplicates.append(head)
        samples[key] = float(value)
    return Scrape(samples, duplicates)


# -- the exporter as a child process ---------------------------------------------


@dataclass
class ExporterProcess:
    """``sysinner-exporter serve`` as a child process on a free loopback port."""

    name: str
    args: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    service: Service | None = None

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Return the process id."""
        assert self.service is not None
        assert self.service.proc is not None
        return self.service.proc.pid

    def start(self) -> None:
        """Start it, logging to the run's artifacts dir."""
        argv = [
            str(EXPORTER_BIN),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            *self.args,
            "serve",
        ]
        self.service = Service(self.name, argv, self.port, run_dir() / f"{self.name}.log", self.env)
        self.service.start()

    def running(self) -> bool:
        """Return True while the process runs."""
        return self.service is not None and self.service.running()

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 30) -> None:
        """Return once /readyz answers 200 (the first poll succeeded)."""
        assert self.service is not None

        async def ready() -> bool:
            async with session.get(self.url + "/readyz") as r:
                return r.status == 200

        await wait_until(ready, within, f"{self.name} /readyz", services=[self.service])

    async def scrape(self, session: aiohttp.ClientSession) -> Scrape:
        """Return one parsed scrape (it must answer 200)."""
        async with session.get(self.url + "/metrics") as r:
            assert r.status == 200, await r.text()
            return parse_scrape(await r.text())

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        assert self.service is not None
        assert self.service.proc is not None
        self.service.proc.kill()
        self.service.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.service is not None:
            self.service.stop()

    def tail(self) -> str:
        """Return the end of its log."""
        return self.service.tail() if self.service is not None else "(not started)"


# -- scrapers --------------------------------------------------------------------


@dataclass
class ScrapeResult:
    """What one scrape got: when, how long, the status or the error."""

    scraper: int
    started: float
    seconds: float
    status: int | None
    error: str | None
    text: str = ""


class Scrapers:
    """``n`` Prometheus-like clients, each GETting ``url`` every ``every`` seconds."""

    def __init__(
        self,
        url: str,
        n: int,
        every: float,
        *,
        timeout: float = 5.0,
        on_scrape: Callable[[ScrapeResult], None] | None = None,
        keep_text: bool = False,
    ) -> None:
        self.url = url
        self.n = n
        self.every = every
        self.timeout = timeout
        self.on_scrape = on_scrape
        self.keep_text = keep_text
        self.results: list[ScrapeResult] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, index: int, session: aiohttp.ClientSession, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            wall = time.time()
            result: ScrapeResult
            try:
                async with session.get(
                    self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as r:
                    text = await r.text()
                    result = ScrapeResult(
                        index, wall, time.monotonic() - started, r.status, None, text
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                result = ScrapeResult(index, wall, time.monotonic() - started, None, repr(e))
            if self.on_scrape is not None:
                self.on_scrape(result)
            if not self.keep_text:
                result.text = ""
            self.results.append(result)
            await asyncio.sleep(max(self.every - (time.monotonic() - started), 0.0))

    def start(self, session: aiohttp.ClientSession, max_seconds: float) -> None:
        """Start the scrapers; each stops by itself after ``max_seconds``."""
        self._tasks = [
            asyncio.create_task(self._loop(i, session, max_seconds)) for i in range(self.n)
        ]

    async def stop(self) -> None:
        """Stop every scraper after its current scrape."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def failures(self) -> list[ScrapeResult]:
        """Return every scrape that was not a 200."""
        return [r for r in self.results if r.status != 200]
