"""The README's references, generated: the metrics, and every setting.

The README's "Metric reference" and "Settings" sections are this module's
output, and tests fail when they differ. ``python -m exporter.reference
--write`` rewrites both sections of README.md in place. The rows come from the exposition itself,
rendered from the metric tables over a one-container snapshot built here and
parsed back, so a row added to :mod:`exporter.metrics` shows up without anyone
editing a list.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Settings, env_name, flag_name, shown_default
from exporter.exposition import render_container_families
from exporter.metrics import (
    CONTAINER_METRICS,
    HEALTH_METRICS,
    AlertPullCollector,
    ContainerMetric,
    ExporterHealthCollector,
    HttpServerCollector,
    LiveMetric,
    RemediationCollector,
)
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.snapshot import (
    COLLECT_GROUPS,
    ContainerSample,
    FsUsage,
    HeldSnapshot,
    PollPhase,
    ProcessCounts,
    Snapshot,
    SnapshotView,
)

START = "<!-- metric-reference:start -->"
END = "<!-- metric-reference:end -->"
SETTINGS_START = "<!-- settings-reference:start -->"
SETTINGS_END = "<!-- settings-reference:end -->"


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
        memory_reservation=1 << 29,
        memory_swap_limit=1 << 31,
    )
    sample = ContainerSample(
        info=info,
        app="0123abcd",
        replica=1,
        # Every optional figure known (0), so its family has a row too.
        stats=ContainerStats(
            time=1.0, **{f.name: 0 for f in dataclasses.fields(ContainerStats) if f.default is None}
        ),
        stats_source="docker",
        processes=ProcessCounts(1, 1, 1),
        fs=FsUsage(1, 1, 1, 1),
    )
    phases = tuple((phase, 0.0) for phase in PollPhase)
    return Snapshot(containers=(sample,), completed_at=1.0, phase_seconds=phases, engine_up=True)


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


def metric_docs(
    containers: Sequence[ContainerMetric] = CONTAINER_METRICS,
    health: Sequence[LiveMetric[SnapshotView]] = HEALTH_METRICS,
) -> list[MetricDoc]:
    """Return one row per family the tables yield, in exposition order."""
    view = HeldSnapshot(_example_snapshot())
    text = b"".join(render_container_families(view.snapshot, table=containers)).decode()
    return _docs(
        [
            *text_string_to_metric_families(text),
            *ExporterHealthCollector(view, health).collect(),
            *RemediationCollector(_NoRemediation()).collect(),
            *AlertPullCollector(_NoPull()).collect(),
            *HttpServerCollector(_NoServer()).collect(),
        ]
    )


class _NoServer:
    """An HTTP server view with nothing refused: its families still render, with zeros."""

    open_connections = 0
    max_connections = 0
    refused = 0
    malformed = 0


class _NoRemediation:
    """A remediation view with nothing decided: its families still render, with zeros."""

    def action_counts(self) -> dict[tuple[str, str], int]:
        return {("restart", "restarted"): 0}

    def quarantined_count(self) -> int:
        return 0

    state_write_failures = 0

    def state_up(self) -> bool:
        return True

    def state_lost_count(self) -> int:
        return 0

    def owed_writes(self) -> int:
        return 0

    not_here = 0


class _NoPull:
    """A pull-mode view before its first poll: its families render, with zeros."""

    up = False
    last_success_at = 0.0
    polls = 0
    alerts_here = 0

    def error_counts(self) -> dict[str, int]:
        return {"unreachable": 0}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def metric_reference_markdown() -> str:
    """Return the reference as Markdown: a note on labels, then the table of families."""
    rows = [
        "Container series carry `name`, `id` (the container's cgroup path, as cAdvisor's:",
        "`/docker/<id>` with the cgroupfs driver, `/system.slice/docker-<id>.scope` with",
        "systemd) and `image`; `app` and `replica` (decimal) only for managed containers.",
        'The host\'s totals are the root container, `id="/"` with `name=""`, as cAdvisor\'s.',
        "`sysinner_container_info` also carries the Docker labels allow-listed with",
        "`--collect.labels`, as `label_<key>`. The process collector of",
        "`prometheus_client` adds the standard `process_*` and `python_info` families.",
        "The `sysinner_exporter_remediation_*` families exist when the lifecycle API is",
        "on (a token is set) or pull mode is (`--alertmanager.url`); the",
        "`sysinner_exporter_alertmanager_*` families only in pull mode.",
        "",
        "| name | type | help | labels |",
        "|---|---|---|---|",
    ]
    for doc in metric_docs():
        labels = ", ".join(f"`{label}`" for label in doc.labels) or "-"
        rows.append(f"| `{doc.name}` | {doc.type} | {_cell(doc.help)} | {labels} |")
    rows += ["", "`--collect.disable` turns off these groups of the container families:", ""]
    for group in COLLECT_GROUPS:
        names = ", ".join(f"`{row.name}`" for row in CONTAINER_METRICS if row.group == group)
        rows.append(f"- `{group}`: {names}")
    rows.append(
        "- always on: " + ", ".join(f"`{row.name}`" for row in CONTAINER_METRICS if not row.group)
    )
    return "\n".join(rows) + "\n"


def settings_reference_markdown() -> str:
    """Return every setting as a Markdown table: flag, variable, default, meaning."""
    rows = [
        "| flag | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for field, info in Settings.model_fields.items():
        shown = shown_default(field)
        default = _cell(f"`{shown}`") if shown else "-"
        rows.append(
            f"| `{flag_name(field)}` | `{env_name(field)}` | {default} "
            f"| {_cell(info.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def readme_section(readme: str, start: str = START, end: str = END) -> str:
    """Return what ``readme`` holds between the markers; ValueError when they are missing."""
    _, found_start, rest = readme.partition(start)
    body, found_end, _ = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"the README lacks {start} ... {end}")
    return body.strip("\n") + "\n"


def with_section(readme: str, start: str, end: str, body: str) -> str:
    """Return ``readme`` with the text between the markers replaced by ``body``."""
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}{end}{tail}"


SECTIONS = (
    (START, END, metric_reference_markdown),
    (SETTINGS_START, SETTINGS_END, settings_reference_markdown),
)


def main(argv: list[str]) -> None:
    """Print the metric reference, or with ``--write README`` rewrite both sections."""
    if argv[:1] == ["--write"]:
        path = Path(argv[1] if len(argv) > 1 else "README.md")
        text = path.read_text()
        for start, end, render in SECTIONS:
            readme_section(text, start, end)  # both markers must already be there
            text = with_section(text, start, end, render())
        path.write_text(text)
    else:
        print(metric_reference_markdown(), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
