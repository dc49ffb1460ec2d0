"""The /metrics body: cached container block, live registry part, gzip and OpenMetrics."""

from __future__ import annotations

import gzip
import threading
import tracemalloc
import zlib
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter import exposition
from exporter.exposition import Exposition, escape_label_value
from exporter.snapshot import HeldSnapshot
from exporter.testing import FakeDriver
from tests.support.engine import poller_on


@pytest.fixture
async def view() -> HeldSnapshot:
    driver = FakeDriver()
    for i in range(5):
        driver.add(f"app-abcdef12-{i:04x}")
    return HeldSnapshot(await poller_on(driver).poll_once())


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
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter]
) -> None:
    exp = Exposition(view, live[0])
    plain = exp.body()
    zipped = exp.body(gzip=True)
    assert zipped.gzipped
    assert not plain.gzipped
    assert _text(plain) == _text(zipped)
    assert _text(plain).count("container_cpu_usage_seconds_total{") == 5
    assert len(zipped) < len(plain)


async def test_families_compress_against_each_other() -> None:
    # Each container's labels repeat in every family; deflated as one stream the
    # repeats cost a back-reference. Deflated a family apart (as once), a gzip
    # body of 50 containers was 49 KiB for 217 KiB of text: 4.4x, not ~17x.
    driver = FakeDriver()
    for i in range(50):
        driver.add(f"app-abcdef12-{i:04x}")
    c = poller_on(driver)
    await c.poll_once()
    exp = Exposition(c, CollectorRegistry())
    plain, zipped = exp.body(), exp.body(gzip=True)
    assert _text(plain) == _text(zipped)
    assert len(plain) / len(zipped) > 10


def test_container_block_is_rendered_once_per_snapshot_and_kind(
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter], monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = 0
    original = exposition.render_container_families

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal renders
        renders += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(exposition, "render_container_families", counting)
    exp = Exposition(view, live[0])
    threads = [threading.Thread(target=exp.body, kwargs={"gzip": True}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert renders == 1
    # Plain scrapes inflate the same compressed block; OpenMetrics has its own.
    exp.body()
    exp.body()
    assert renders == 1
    exp.body(openmetrics=True)
    exp.body(openmetrics=True, gzip=True)
    assert renders == 2
    view.snapshot = replace(view.snapshot)
    exp.body(gzip=True)
    assert renders == 3


def test_live_registry_part_is_fresh_at_every_scrape(
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter]
) -> None:
    registry, counter = live
    exp = Exposition(view, registry)
    assert "sysinner_test_live_total 0.0" in _text(exp.body(gzip=True))
    counter.inc(3)
    assert "sysinner_test_live_total 3.0" in _text(exp.body(gzip=True))
    assert "sysinner_test_live_total 3.0" in _text(exp.body())


def test_openmetrics_body_is_valid_and_ends_with_eof(
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter]
) -> None:
    exp = Exposition(view, live[0])
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


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize(
    ("chunk_containers", "inflate_piece"), [(1, 7), (2, 4096), (1000, 1 << 20)]
)
def test_plain_body_is_the_gzip_body_inflated(
    view: HeldSnapshot,
    live: tuple[CollectorRegistry, Counter],
    monkeypatch: pytest.MonkeyPatch,
    openmetrics: bool,
    chunk_containers: int,
    inflate_piece: int,
) -> None:
    # Fewer containers per chunk than the snapshot holds: families span chunks;
    # tiny pieces: a chunk inflates in many.
    monkeypatch.setattr(exposition, "CHUNK_CONTAINERS", chunk_containers)
    monkeypatch.setattr(exposition, "INFLATE_PIECE", inflate_piece)
    exp = Exposition(view, live[0])
    zipped = exp.body(openmetrics=openmetrics, gzip=True)
    plain = exp.body(openmetrics=openmetrics)
    raw = b"".join(zipped.chunks)
    # Both checks read the gzip trailer: the CRC and length must match the text.
    assert gzip.decompress(raw) == zlib.decompress(raw, wbits=31) == b"".join(plain.chunks)
    assert len(zipped) == len(raw)
    assert len(plain) == len(b"".join(plain.chunks))
    live_part = (generate_openmetrics if openmetrics else generate_latest)(live[0])
    assert max(map(len, plain.chunks)) <= max(inflate_piece, len(live_part))
    block = b"".join(exposition.render_container_families(view.snapshot, openmetrics=openmetrics))
    assert b"".join(plain.chunks).startswith(block)


def test_a_plain_scrape_of_a_new_snapshot_is_complete(
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter]
) -> None:
    exp = Exposition(view, live[0])
    exp.body(gzip=True)
    view.snapshot = replace(view.snapshot, completed_at=1_800_000_000.0)
    body = exp.body()
    # Iterating twice inflates twice: the body is not used up by a first reader.
    assert b"".join(body.chunks) == b"".join(body.chunks)
    text = _text(body)
    block = b"".join(exposition.render_container_families(view.snapshot)).decode()
    assert text.startswith(block)
    assert " 1800000000.0 1800000000000\n" in text  # container_last_seen, stamped
    assert text.endswith(generate_latest(live[0]).decode())
    assert len(body) == len(text.encode())


def test_gzip_trailer_counts_the_live_part(
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter]
) -> None:
    registry, counter = live
    exp = Exposition(view, registry)
    first = b"".join(exp.body(gzip=True).chunks)
    counter.inc(12345)
    second = b"".join(exp.body(gzip=True).chunks)
    # The same cached block ends two streams whose text differs in length.
    assert gzip.decompress(first) != gzip.decompress(second)
    assert len(gzip.decompress(second)) == int.from_bytes(second[-4:], "little")


def test_no_chunk_spans_more_than_one_family(
    view: HeldSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition, "CHUNK_CONTAINERS", 2)
    for chunk in exposition.render_container_families(view.snapshot):
        lines = chunk.decode().splitlines()
        families = {line.split("{")[0] for line in lines if not line.startswith("#")}
        assert len(families) <= 1, families
        # At most CHUNK_CONTAINERS containers' lines: three per container for the state.
        ids = {line.split('id="')[1][:64] for line in lines if not line.startswith("#")}
        assert len(ids) <= 2


def test_scrapes_hold_no_more_than_a_few_chunks_of_text(
    view: HeldSnapshot, live: tuple[CollectorRegistry, Counter]
) -> None:
    sample = view.snapshot.containers[0]
    view.snapshot = replace(
        view.snapshot,
        containers=tuple(replace(sample, replica=i) for i in range(3000)),
    )
    exp = Exposition(view, live[0])
    tracemalloc.start()
    try:
        exp.body(gzip=True)
        gzip_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        size = 0
        for chunk in exp.body().chunks:
            size += len(chunk)
        plain_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 8 << 20
    # The compressed block (about a quarter of the text) and a few chunks in
    # flight; the text itself is never held whole, nor kept for plain scrapes.
    assert gzip_peak < size / 2, (gzip_peak, size)
    assert plain_peak < size / 8, (plain_peak, size)


async def test_without_the_id_label_only_container_info_carries_it() -> None:
    # Issue 16 item 6: the 64-character id on every series is a fleet's biggest label.
    driver = FakeDriver()
    for i in range(100):
        driver.add(f"app-abcdef12-{i:04x}")
    c = poller_on(driver)
    await c.poll_once()
    ids = {s.info.id for s in c.snapshot.containers}
    with_id = _text(Exposition(c, CollectorRegistry()).body())
    without = _text(Exposition(c, CollectorRegistry(), with_id=False).body())
    series = [line for line in with_id.splitlines() if line and not line.startswith("#")]
    slim = [line for line in without.splitlines() if line and not line.startswith("#")]
    assert len(slim) == len(series)  # the same series, fewer label bytes
    for line in slim:
        has_id = any(f'id="{i}"' in line for i in ids)
        assert has_id == line.startswith("sysinner_container_info{"), line
    assert sum(line.startswith("sysinner_container_info{") for line in slim) == 100
    per_with = len(with_id.encode()) / 100
    per_without = len(without.encode()) / 100
    gz_with = len(b"".join(Exposition(c, CollectorRegistry()).body(gzip=True).chunks)) / 100
    gz_without = (
        len(b"".join(Exposition(c, CollectorRegistry(), with_id=False).body(gzip=True).chunks))
        / 100
    )
    print(
        f"\nFIGURES series/container={len(series) / 100:.0f} bytes/container "
        f"with id={per_with:.0f} without={per_without:.0f}; gzip {gz_with:.0f} / {gz_without:.0f}"
    )
    assert per_without < 0.75 * per_with
