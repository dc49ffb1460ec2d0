"""Reading /metrics as Prometheus does: a parser of the text exposition, and scrapers in a loop."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

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
