"""The /metrics body: container families rendered straight from the metric table.

Thousands of containers make over a hundred thousand samples, and building a
prometheus_client ``Metric`` with a label dict per sample, then escaping every
label of every sample, costs seconds. Here each container's label string is
escaped once and every family is joined from the metric table as text at C
speed. A snapshot changes only once per poll while scrapes may come often, so
the container block is rendered and gzipped once per snapshot and format, and
kept compressed only; each scrape finishes the gzip stream with the small live
part: the registry's families (the exporter's health, remediation, process
and platform), which stay exact at scrape time. A plain scrape inflates the
kept stream piece by piece rather than keep the text, several times larger.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, repeat

from isal import isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.metrics import (
    CONTAINER_METRICS,
    ContainerMetric,
    Getter,
    container_id_label,
    container_labels,
)
from exporter.models import ENGINE_STATES, ContainerInfo, ContainerState, engine_state_of
from exporter.naming import sanitize_label_name
from exporter.snapshot import ContainerSample, Snapshot, SnapshotView

#: cAdvisor's root container: the host's totals carry id="/" and an empty name.
ROOT_INFO = ContainerInfo(id="/", name="", state=ContainerState.RUNNING, cgroup_path="/")

#: What the container block is written in; every Prometheus 2.x parses both.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: ISA-L's level 1 (of 0-3): on this text 4-5x faster than zlib's level 1, and
#: smaller. Deflating was most of a first scrape; the ids barely compress anyway.
GZIP_LEVEL = 1
#: Containers per chunk: bounds the text alive at once whatever the count.
CHUNK_CONTAINERS = 1000
#: Most bytes a plain scrape inflates at once: ~1 ms of the event loop's time.
INFLATE_PIECE = 256 * 1024
#: A gzip header as zlib writes it at level 1 on Unix: no name, no mtime, "fastest".
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
_RAW_DEFLATE = -zlib.MAX_WBITS


def escape_label_value(value: str) -> str:
    """Return ``value`` escaped for a label value (both exposition formats)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _header(name: str, family: str, help_text: str, type_: str, openmetrics: bool) -> str:
    shown = family if openmetrics else name
    return f"# HELP {shown} {_escape_help(help_text, openmetrics)}\n# TYPE {shown} {type_}\n"


def _label_string(
    sample: ContainerSample, with_id: bool = True, series_labels: Sequence[str] = ()
) -> str:
    labels = container_labels(sample, with_id)
    text = ",".join([f'{k}="{escape_label_value(v)}"' for k, v in labels.items()])
    if series_labels:
        text += "".join(
            f',{name}="{escape_label_value(value)}"'
            for name, value in _series_labels(sample.info.labels, series_labels).items()
        )
    return text


def _series_labels(labels: dict[str, str], allow: Sequence[str]) -> dict[str, str]:
    """Return ``container_label_<key>`` labels for the allowed keys (``*``: every key).

    Keys are taken in sorted order, so when two keys sanitize to one name the
    same one wins at every scrape, and no series ever carries a label twice.
    """
    keys = sorted(labels) if "*" in allow else [k for k in allow if k in labels]
    out: dict[str, str] = {}
    for key in keys:
        out.setdefault("container_" + sanitize_label_name(key), labels[key])
    return out


def _lines(prefix: str, closed: Iterable[str], values: Iterable[str]) -> str:
    # One join over C iterators instead of an f-string per sample: the same
    # text, several times faster.
    return "".join(chain.from_iterable(zip(repeat(prefix), closed, values, repeat("\n"))))


@dataclass(frozen=True, slots=True)
class _Part:
    """Up to :data:`CHUNK_CONTAINERS` containers and their closed label strings."""

    samples: Sequence[ContainerSample]
    closed: list[str]  # 'name="...",id="...",...} ', ready for a value

    def bare(self) -> list[str]:
        """Return the label strings without the closing ``} `` (for families that add labels).

        Made when needed, rather than kept beside the closed ones: two
        families use them, and at 5,000 containers the copy is a megabyte.
        """
        return [label[:-2] for label in self.closed]


def render_container_families(
    snapshot: Snapshot,
    label_allowlist: Sequence[str] = (),
    *,
    openmetrics: bool = False,
    table: Sequence[ContainerMetric] = CONTAINER_METRICS,
    with_id: bool = True,
    series_labels: Sequence[str] = (),
) -> Iterator[bytes]:
    """Yield the families of ``table`` for ``snapshot`` as encoded chunks, none over one family.

    A family of more than :data:`CHUNK_CONTAINERS` containers comes in several
    chunks; its headers open the first. Without ``with_id`` only
    ``sysinner_container_info`` carries the container id.
    """
    samples = snapshot.containers
    parts = []
    for i in range(0, max(len(samples), 1), CHUNK_CONTAINERS):
        part = samples[i : i + CHUNK_CONTAINERS]
        parts.append(_Part(part, [_label_string(s, with_id, series_labels) + "} " for s in part]))
    allow = [(key, sanitize_label_name(key)) for key in label_allowlist]
    # container_last_seen carries the poll's time as its sample's timestamp too
    # (milliseconds in the text format, seconds in OpenMetrics), as cAdvisor's
    # does: Prometheus then keeps a vanished container's last sample for its
    # lookback, and `time() - container_last_seen > 60` can fire.
    stamp = repr(snapshot.completed_at) if openmetrics else str(int(snapshot.completed_at * 1000))
    seen_at = f"{snapshot.completed_at!r} {stamp}"
    root = None
    if snapshot.host is not None:
        root = ContainerSample(info=ROOT_INFO, app=None, replica=None, stats=snapshot.host)
    for spec in table:
        head = _header(spec.name, spec.family, spec.help, spec.type, openmetrics)
        if spec.host and root is not None and spec.value is not None:
            value = spec.value(root)
            if value is not None:
                head += f'{spec.name}{{name="",id="/"}} {value}\n'
        prefix = spec.name + "{"
        lines: Callable[[_Part], str]
        if spec.value is not None:
            lines = partial(_value_lines, prefix, spec.value)
        elif spec.kind == "poll_time":
            lines = partial(_poll_time_lines, prefix, seen_at)
        elif spec.kind == "state":
            lines = partial(_state_lines, prefix)
        else:
            lines = partial(_info_lines, prefix, allow, with_id)
        yield from _chunks(head, parts, lines)


def _chunks(head: str, parts: list[_Part], lines: Callable[[_Part], str]) -> Iterator[bytes]:
    for part in parts:
        yield (head + lines(part)).encode()
        head = ""  # the headers open the family's first chunk only


def _value_lines(prefix: str, value: Getter, part: _Part) -> str:
    closed, values = part.closed, list(map(value, part.samples))
    if None in values:
        keep = [v is not None for v in values]
        closed, values = list(compress(closed, keep)), list(compress(values, keep))
    # str() prints ints exactly and floats as their shortest repr, as an f-string
    # would; Prometheus parses both.
    return _lines(prefix, closed, map(str, values))


def _poll_time_lines(prefix: str, seen_at: str, part: _Part) -> str:
    # Only containers the poll saw running (paused ones included), as cAdvisor
    # sees only those with a cgroup: a stopped container's series goes stale.
    running = [s.info.state is ContainerState.RUNNING for s in part.samples]
    return _lines(prefix, compress(part.closed, running), repeat(seen_at))


# Per engine state, the tail of its line for a container in each state; a
# state the engine adds later reads 0 in every line.
_STATE_TAILS = [
    (
        {now: f',state="{st}"}} {"1" if now == st else "0"}\n' for now in ENGINE_STATES},
        f',state="{st}"}} 0\n',
    )
    for st in ENGINE_STATES
]


def _state_lines(prefix: str, part: _Part) -> str:
    states = [engine_state_of(s.info) for s in part.samples]
    labels = part.bare()
    columns: list[Iterable[str]] = []
    for tails, zero in _STATE_TAILS:
        columns += (repeat(prefix), labels, map(tails.get, states, repeat(zero)))
    # Row by row: each container's line for every state, in ENGINE_STATES' order;
    # the endless repeat()s stop with the labels.
    return "".join(chain.from_iterable(zip(*columns, strict=False)))


def _info_lines(prefix: str, allow: list[tuple[str, str]], with_id: bool, part: _Part) -> str:
    closed = part.closed
    if not with_id:
        # The one series that keeps the id, for joins: one per container, not one per family.
        closed = [
            f'{label},id="{escape_label_value(container_id_label(s.info))}"}} '
            for s, label in zip(part.samples, part.bare(), strict=True)
        ]
    if allow:
        closed = [
            label
            + "".join(
                f',{prom}="{escape_label_value(s.info.labels[key])}"'
                for key, prom in allow
                if key in s.info.labels
            )
            + "} "
            for s, label in zip(part.samples, [c[:-2] for c in closed], strict=True)
        ]
    return _lines(prefix, closed, repeat("1"))


@dataclass(frozen=True)
class _Compressed:
    """The container block of one snapshot and format, kept as deflate segments."""

    segments: list[bytes]
    crc: int  # CRC-32 of the text, which the gzip trailer carries
    size: int  # length of the text


def _compress(chunks: Iterable[bytes]) -> _Compressed:
    """Deflate ``chunks`` as one stream as they render; one chunk is alive as text at a time.

    The stream ends in a sync flush: on a byte boundary and not final, so
    each scrape ends it with a deflate of its own live part. One stream, not a
    segment per chunk: with a few containers per family, a family's labels
    compress against the families before it (a gzip body 3.5x smaller at 50
    containers). With zlib, deflating in two threads while this one rendered
    paid (~360 against ~240 ms at 5,000 containers); with ISA-L deflating is
    a third of the render and threads measured no faster (181 against 168 ms).
    """
    state = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, _RAW_DEFLATE)
    segments: list[bytes] = []
    crc = size = 0
    for chunk in chunks:
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        if out := state.compress(chunk):  # ISA-L buffers small inputs
            segments.append(out)
    segments.append(state.flush(isal_zlib.Z_SYNC_FLUSH))
    return _Compressed(segments, crc, size)


class _Inflated:
    """The plain text of a compressed block, then the live part, inflated as iterated."""

    def __init__(self, block: _Compressed, live: bytes) -> None:
        self._block, self._live = block, live

    def __iter__(self) -> Iterator[bytes]:
        state = zlib.decompressobj(_RAW_DEFLATE)
        for segment in self._block.segments:
            piece = state.decompress(segment, INFLATE_PIECE)
            while piece:
                yield piece
                # A full piece may leave input behind, or output zlib still holds.
                if len(piece) < INFLATE_PIECE and not state.unconsumed_tail:
                    break
                piece = state.decompress(state.unconsumed_tail, INFLATE_PIECE)
        yield self._live


@dataclass(frozen=True)
class Body:
    """A /metrics response body: its chunks, length, content type and encoding.

    A plain body's chunks are inflated as they are iterated, at most
    :data:`INFLATE_PIECE` bytes at a time; iterating again inflates again.
    """

    chunks: Iterable[bytes]
    length: int
    content_type: str
    gzipped: bool

    def __len__(self) -> int:
        return self.length


class Exposition:
    """Builds /metrics bodies: the cached container block plus the live registry.

    The block of the latest snapshot is kept gzipped only, per format: gzip
    scrapes (what Prometheus asks for) send it as it is, plain scrapes inflate
    it as they send it, so the plain text (several times larger) is never
    held whole.
    """

    def __init__(
        self,
        view: SnapshotView,
        registry: CollectorRegistry,
        label_allowlist: Sequence[str] = (),
        *,
        with_id: bool = True,
        table: Sequence[ContainerMetric] = CONTAINER_METRICS,
        series_labels: Sequence[str] = (),
    ) -> None:
        self._with_id = with_id
        self._view = view
        self._registry = registry
        self._allow = tuple(label_allowlist)
        self._table = tuple(table)
        self._series_labels = tuple(series_labels)
        self._blocks: dict[bool, tuple[Snapshot, _Compressed]] = {}
        # Concurrent scrapes of a new snapshot render it once; the others wait for it.
        self._lock = threading.Lock()

    def _block(self, openmetrics: bool) -> _Compressed:
        snapshot = self._view.snapshot
        with self._lock:
            cached = self._blocks.get(openmetrics)
            if cached is None or cached[0] is not snapshot:
                # Drop the previous snapshot's block before rendering the new one.
                self._blocks.pop(openmetrics, None)
                chunks = render_container_families(
                    snapshot,
                    self._allow,
                    openmetrics=openmetrics,
                    with_id=self._with_id,
                    table=self._table,
                    series_labels=self._series_labels,
                )
                cached = self._blocks[openmetrics] = (snapshot, _compress(chunks))
            return cached[1]

    def body(self, *, openmetrics: bool = False, gzip: bool = False) -> Body:
        """Return the body for the latest snapshot (blocking: call it off the event loop)."""
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        live = (generate_openmetrics if openmetrics else generate_latest)(self._registry)
        block = self._block(openmetrics)
        length = block.size + len(live)
        if not gzip:
            return Body(_Inflated(block, live), length, content_type, gzipped=False)
        end = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, _RAW_DEFLATE)
        tail = end.compress(live) + end.flush()
        trailer = struct.pack("<II", zlib.crc32(live, block.crc), length & 0xFFFFFFFF)
        chunks = [GZIP_HEADER, *block.segments, tail + trailer]
        return Body(chunks, sum(map(len, chunks)), content_type, gzipped=True)
