"""The /metrics body: cached container block, live registry part, gzip and OpenMetrics."""

from __future__ import annotations

import gzip
import threading
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter import exposition
from exporter.collector import Collector
from exporter.exposition import Exposition, escape_label_value
from exporter.naming import NamingScheme
from exporter.sources.base import DriverStatsSource
from exporter.testing import FakeDriver


@pytest.fixture
async def collector() -> Collector:
    driver = FakeDriver()
    for i in range(5):
        driver.add(f"app-abcdef12-{i:04x}")
    c = Collector(driver, DriverStatsSource(driver), naming=NamingScheme(), process_counter=None)
    await c.poll_once()
    return c


@pytest.fixture
def live() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    counter = Counter(
        "sysinner_test_live", "A family that changes between polls.", registry=registry
    )
    return registry, counter


def _text(body: exposition.Body) -> str:
    raw = b"".join(body.chunks)
    return (gzip.decompress(raw) if body.gzipped else raw).decode()


def test_gzip_and_plain_bodies_hold_the_same_text(
    collector: Collector, live: tuple[CollectorRegistry, Counter]
) -> None:
    exp = Exposition(collector, live[0])
    plain = exp.body()
    zipped = exp.body(gzip=True)
    assert zipped.gzipped
    assert not plain.gzipped
    assert _text(plain) == _text(zipped)
    assert _text(plain).count("container_cpu_usage_seconds_total{") == 5
    assert len(zipped) < len(plain)


def test_container_block_is_rendered_once_per_snapshot_and_kind(
    collector: Collector, live: tuple[CollectorRegistry, Counter], monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = 0
    original = exposition.render_container_families

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal renders
        renders += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(exposition, "render_container_families", counting)
    exp = Exposition(collector, live[0])
    threads = [threading.Thread(target=exp.body, kwargs={"gzip": True}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert renders == 1
    # Plain text is rendered only when asked for, then reused too.
    exp.body()
    exp.body()
    assert renders == 2
    collector.snapshot = replace(collector.snapshot)
    exp.body(gzip=True)
    assert renders == 3


def test_live_registry_part_is_fresh_at_every_scrape(
    collector: Collector, live: tuple[CollectorRegistry, Counter]
) -> None:
    registry, counter = live
    exp = Exposition(collector, registry)
    assert "sysinner_test_live_total 0.0" in _text(exp.body(gzip=True))
    counter.inc(3)
    assert "sysinner_test_live_total 3.0" in _text(exp.body(gzip=True))
    assert "sysinner_test_live_total 3.0" in _text(exp.body())


def test_openmetrics_body_is_valid_and_ends_with_eof(
    collector: Collector, live: tuple[CollectorRegistry, Counter]
) -> None:
    exp = Exposition(collector, live[0])
    body = exp.body(openmetrics=True, gzip=True)
    assert body.content_type.startswith("application/openmetrics-text")
    text = _text(body)
    assert text.endswith("# EOF\n")
    names = {f.name for f in parse_om(text)}
    assert {
        "container_cpu_usage_seconds",
        "sysinner_container_state",
        "sysinner_test_live",
    } <= names


def test_label_values_are_escaped() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_no_chunk_spans_more_than_one_family(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition, "CHUNK_CONTAINERS", 2)
    for chunk in exposition.render_container_families(collector.snapshot):
        lines = chunk.decode().splitlines()
        families = {line.split("{")[0] for line in lines if not line.startswith("#")}
        assert len(families) <= 1, families
        # At most CHUNK_CONTAINERS containers' lines: three per container for the state.
        ids = {line.split('id="')[1][:64] for line in lines if not line.startswith("#")}
        assert len(ids) <= 2
