"""The metric reference: a Markdown table generated from the metric table and collectors.

The README's "Metric reference" section is this module's output, and a test
fails when the two differ. The rows come from the exposition itself,
rendered over a one-container snapshot built here and parsed back, so a
family added to :mod:`exporter.metrics` shows up without anyone editing a list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import Collector, ContainerSample, Snapshot
from exporter.exposition import render_container_families
from exporter.metrics import ExporterHealthCollector
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.naming import NamingScheme
from exporter.processes import ProcessCounts
from exporter.sources.base import DriverStatsSource
from exporter.testing import FakeDriver

START = "<!-- metric-reference:start -->"
END = "<!-- metric-reference:end -->"


@dataclass(frozen=True)
class MetricDoc:
    """One row of the reference: a series name as queried, its type, help and labels."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]


def _example_snapshot() -> Snapshot:
    """Return a snapshot of one managed, limited, running container: every family has a row."""
    info = ContainerInfo(
        id="0" * 64,
        name="app-0123abcd-0001",
        image="example",
        state=ContainerState.RUNNING,
        started=1,
        cpu_limit=1000,
        memory_limit=1 << 30,
    )
    sample = ContainerSample(
        info=info,
        app="0123abcd",
        replica=1,
        stats=ContainerStats(time=1.0),
        stats_source="docker",
        processes=ProcessCounts(1, 1, 1),
    )
    return Snapshot(containers=(sample,), completed_at=1.0, engine_up=True)


def _docs(families: Iterable[Metric]) -> list[MetricDoc]:
    docs: list[MetricDoc] = []
    for family in families:
        names = dict.fromkeys(s.name for s in family.samples)
        if len(names) != 1:
            raise ValueError(f"{family.name}: expected one sample name, got {list(names)}")
        labels: dict[str, None] = {}
        for s in family.samples:
            labels.update(dict.fromkeys(s.labels))
        docs.append(MetricDoc(next(iter(names)), family.type, family.documentation, tuple(labels)))
    return docs


def metric_docs() -> list[MetricDoc]:
    """Return one row per family the exporter's own collectors yield, in exposition order."""
    driver = FakeDriver()
    collector = Collector(driver, DriverStatsSource(driver), naming=NamingScheme())
    collector.snapshot = _example_snapshot()
    text = b"".join(render_container_families(collector.snapshot)).decode()
    return _docs(
        [*text_string_to_metric_families(text), *ExporterHealthCollector(collector).collect()]
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def metric_reference_markdown() -> str:
    """Return the reference as Markdown: a note on labels, then the table of families."""
    rows = [
        "Container series carry `name`, `id` and `image`; `app` and `replica` (decimal) only",
        "for managed containers. `sysinner_container_info` also carries the Docker labels",
        "allow-listed with `--collect.labels`, as `label_<key>`. The process collector of",
        "`prometheus_client` adds the standard `process_*` and `python_info` families.",
        "",
        "| name | type | help | labels |",
        "|---|---|---|---|",
    ]
    for doc in metric_docs():
        labels = ", ".join(f"`{label}`" for label in doc.labels) or "-"
        rows.append(f"| `{doc.name}` | {doc.type} | {_cell(doc.help)} | {labels} |")
    return "\n".join(rows) + "\n"


def readme_section(readme: str) -> str:
    """Return what ``readme`` holds between the markers; ValueError when they are missing."""
    _, start, rest = readme.partition(START)
    body, end, _ = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the README lacks {START} ... {END}")
    return body.strip("\n") + "\n"


if __name__ == "__main__":
    print(metric_reference_markdown(), end="")
