"""The /metrics body: container families rendered straight from the metric table.

Thousands of containers make over a hundred thousand samples, and building a
prometheus_client ``Metric`` with a label dict per sample, then escaping every
label of every sample, costs seconds. Here each container's label string is
escaped once and every family is written from the metric table as text. A
snapshot changes only once per poll while scrapes may come often, so the
container block is rendered once per snapshot and format, and its gzip
compression is kept as a zlib stream that each scrape copies and finishes
with the small live part: the registry's families (the exporter's health,
remediation, process and platform), which stay exact at scrape time.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.collector import Collector, ContainerSample, Snapshot
from exporter.metrics import (
    CONTAINER_METRICS,
    ContainerMetric,
    container_labels,
    sanitize_label_name,
)
from exporter.models import ContainerState

#: What the container block is written in; every Prometheus 2.x parses both.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
GZIP_LEVEL = 1  # the ids make the text hard to squeeze further; level 1 is ~2x faster than 6
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def escape_label_value(value: str) -> str:
    """Return ``value`` escaped for a label value (both exposition formats)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _header(name: str, family: str, help_text: str, type_: str, openmetrics: bool) -> str:
    shown = family if openmetrics else name
    return f"# HELP {shown} {_escape_help(help_text, openmetrics)}\n# TYPE {shown} {type_}\n"


def render_container_families(
    snapshot: Snapshot, label_allowlist: Sequence[str] = (), *, openmetrics: bool = False
) -> Iterator[bytes]:
    """Yield the container families of ``snapshot``, one encoded chunk per family."""
    samples = snapshot.containers
    labels = [
        ",".join(f'{k}="{escape_label_value(v)}"' for k, v in container_labels(s).items())
        for s in samples
    ]
    for spec in CONTAINER_METRICS:
        yield _table_family(spec, samples, labels, openmetrics)
    yield _state_families(snapshot, samples, labels, label_allowlist, openmetrics)


def _table_family(
    spec: ContainerMetric, samples: Sequence[ContainerSample], labels: list[str], openmetrics: bool
) -> bytes:
    name, get = spec.name, spec.value
    lines = [_header(name, spec.family, spec.help, spec.type, openmetrics)]
    for sample, label in zip(samples, labels, strict=True):
        v = get(sample)
        if v is not None:
            # An f-string prints ints exactly and floats as their shortest repr,
            # both of which Prometheus parses; no per-sample helper call.
            lines.append(f"{name}{{{label}}} {v}\n")
    return "".join(lines).encode()


def _state_families(
    snapshot: Snapshot,
    samples: Sequence[ContainerSample],
    labels: list[str],
    label_allowlist: Sequence[str],
    openmetrics: bool,
) -> bytes:
    seen_at = repr(snapshot.completed_at)
    allow = [(key, sanitize_label_name(key)) for key in label_allowlist]
    last_seen = [
        _header(
            "container_last_seen",
            "container_last_seen",
            "When the exporter last saw the container, unix seconds.",
            "gauge",
            openmetrics,
        )
    ]
    state = [
        _header(
            "sysinner_container_state",
            "sysinner_container_state",
            "1 for the container's current state (running, stopped, starting), 0 for the others.",
            "gauge",
            openmetrics,
        )
    ]
    stale = [
        _header(
            "sysinner_container_stats_stale",
            "sysinner_container_stats_stale",
            "1 when the stats shown are the previous poll's because this poll's read failed.",
            "gauge",
            openmetrics,
        )
    ]
    info = [
        _header(
            "sysinner_container_info",
            "sysinner_container_info",
            "Always 1; carries the container's allow-listed Docker labels.",
            "gauge",
            openmetrics,
        )
    ]
    for sample, label in zip(samples, labels, strict=True):
        last_seen.append(f"container_last_seen{{{label}}} {seen_at}\n")
        for st in ContainerState:
            on = "1" if sample.info.state is st else "0"
            state.append(f'sysinner_container_state{{{label},state="{st.value}"}} {on}\n')
        if sample.stats is not None:
            stale.append(
                f"sysinner_container_stats_stale{{{label}}} {'1' if sample.stale else '0'}\n"
            )
        extra = "".join(
            f',{prom}="{escape_label_value(sample.info.labels[key])}"'
            for key, prom in allow
            if key in sample.info.labels
        )
        info.append(f"sysinner_container_info{{{label}{extra}}} 1\n")
    return "".join(last_seen + state + stale + info).encode()


@dataclass(frozen=True)
class Body:
    """A /metrics response body: its chunks, content type and encoding."""

    chunks: list[bytes]
    content_type: str
    gzipped: bool

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)


class Exposition:
    """Builds /metrics bodies: the cached container block plus the live registry.

    Plain and gzip bodies are cached apart: Prometheus always asks for gzip,
    so the plain text (several times larger) is rendered only when someone
    asks for it, and the gzip stream is fed family by family as they render.
    """

    def __init__(
        self, collector: Collector, registry: CollectorRegistry, label_allowlist: Sequence[str] = ()
    ) -> None:
        self._collector = collector
        self._registry = registry
        self._allow = tuple(label_allowlist)
        self._plain: dict[bool, tuple[Snapshot, list[bytes]]] = {}
        self._gzip: dict[bool, tuple[Snapshot, bytes, zlib._Compress]] = {}
        # Concurrent scrapes of a new snapshot render it once; the others wait for it.
        self._lock = threading.Lock()

    def _families(self, snapshot: Snapshot, openmetrics: bool) -> Iterator[bytes]:
        return render_container_families(snapshot, self._allow, openmetrics=openmetrics)

    def _plain_block(self, openmetrics: bool) -> list[bytes]:
        snapshot = self._collector.snapshot
        with self._lock:
            cached = self._plain.get(openmetrics)
            if cached is None or cached[0] is not snapshot:
                cached = self._plain[openmetrics] = (
                    snapshot,
                    list(self._families(snapshot, openmetrics)),
                )
            return cached[1]

    def _gzip_block(self, openmetrics: bool) -> tuple[bytes, zlib._Compress]:
        snapshot = self._collector.snapshot
        with self._lock:
            cached = self._gzip.get(openmetrics)
            if cached is None or cached[0] is not snapshot:
                # Compressed family by family as they render: the plain text is
                # never held whole.
                state = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
                head = [state.compress(chunk) for chunk in self._families(snapshot, openmetrics)]
                head.append(state.flush(zlib.Z_SYNC_FLUSH))
                cached = self._gzip[openmetrics] = (snapshot, b"".join(head), state)
            # Each scrape finishes its own copy of the stream with the live part.
            return cached[1], cached[2].copy()

    def body(self, *, openmetrics: bool = False, gzip: bool = False) -> Body:
        """Return the body for the latest snapshot (blocking: call it off the event loop)."""
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        live = (generate_openmetrics if openmetrics else generate_latest)(self._registry)
        if gzip:
            head, state = self._gzip_block(openmetrics)
            return Body([head, state.compress(live) + state.flush()], content_type, gzipped=True)
        return Body([*self._plain_block(openmetrics), live], content_type, gzipped=False)
