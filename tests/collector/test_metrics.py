"""The metric table rendered from hand-made snapshots, on a registry of the test's own."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter import exposition
from exporter.exposition import render_container_families
from exporter.metrics import (
    CONTAINER_METRICS,
    GAUGES_NAMED_TOTAL,
    HEALTH_METRICS,
    ContainerMetric,
    ExporterHealthCollector,
    LiveMetric,
)
from exporter.naming import sanitize_label_name
from exporter.reference import MetricDoc, metric_docs
from exporter.snapshot import (
    ErrorKind,
    HeldSnapshot,
    PollPhase,
    Snapshot,
    SnapshotView,
)
from tests.support.exposition import (
    B_CGROUP,
    GOLDEN,
    T0,
    ParsedFamilies,
    example_snapshot,
    parsed_families,
    render_text,
)
from tests.support.requirements import require


@pytest.mark.parametrize("chunk_containers", [1000, 3, 1])
def test_exposition_matches_the_golden_file(
    monkeypatch: pytest.MonkeyPatch, chunk_containers: int
) -> None:
    # However the families are cut into chunks, the text is the same.
    monkeypatch.setattr(exposition, "CHUNK_CONTAINERS", chunk_containers)
    text = render_text(example_snapshot(), ("team", "com.example/tier"))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_table_row_is_exported_for_a_container_with_stats_and_limits() -> None:
    registry = parsed_families(example_snapshot())
    labels = {
        "name": "app-0123456789abcdef-00ff",
        "id": "a" * 64,
        "image": "local/busybox:latest",
        "app": "0123456789abcdef",
        "replica": "255",
    }
    for spec in CONTAINER_METRICS:
        own = {**labels, "state": "running"} if spec.kind == "state" else labels
        assert registry.get_sample_value(spec.name, own) is not None, spec.name
    assert registry.get_sample_value("container_cpu_usage_seconds_total", labels) == 1.5
    assert registry.get_sample_value("container_memory_working_set_bytes", labels) == 9_437_184
    assert registry.get_sample_value("container_spec_cpu_quota", labels) == 50_000
    assert registry.get_sample_value("container_spec_cpu_period", labels) == 100_000
    assert registry.get_sample_value("container_threads", labels) == 5


def test_counters_are_counters_and_carry_units() -> None:
    families = {f.name: f for f in parsed_families(example_snapshot()).families}
    for spec in CONTAINER_METRICS:
        family = families[spec.family]
        assert family.type == spec.type
        if spec.type == "counter":
            assert spec.name.endswith("_total"), spec.name
        elif spec.name not in GAUGES_NAMED_TOTAL:
            assert not spec.name.endswith("_total"), spec.name
        assert family.documentation, spec.name


def test_unmanaged_container_has_no_app_or_replica_label() -> None:
    for family in parsed_families(example_snapshot()).families:
        for sample in family.samples:
            if sample.labels.get("name") == "postgres":
                assert "app" not in sample.labels
                assert "replica" not in sample.labels
            elif sample.labels.get("name"):  # the root container (name="") has neither
                assert sample.labels["app"] in ("0123456789abcdef", "deadbeef")


def test_stopped_container_exports_state_but_no_usage() -> None:
    registry = parsed_families(example_snapshot())
    labels = {
        "name": "app-deadbeef-0002",
        "id": "c" * 64,
        "image": "local/busybox:latest",
        "app": "deadbeef",
        "replica": "2",
    }
    assert registry.get_sample_value("container_cpu_usage_seconds_total", labels) is None
    assert registry.get_sample_value("container_start_time_seconds", labels) is None
    assert registry.get_sample_value("sysinner_container_state", {**labels, "state": "exited"}) == 1
    assert (
        registry.get_sample_value("sysinner_container_state", {**labels, "state": "running"}) == 0
    )
    # Health means something only while it runs; its last exit does after.
    assert registry.get_sample_value("container_health_state", labels) is None
    assert registry.get_sample_value("sysinner_container_exit_code", labels) == 137
    assert registry.get_sample_value("sysinner_container_oom_killed", labels) == 1


def test_docker_labels_only_on_the_info_series_and_escaped() -> None:
    text = render_text(example_snapshot(), ("team", "com.example/tier"))
    info_lines = [line for line in text.splitlines() if line.startswith("sysinner_container_info{")]
    assert any('label_com_example_tier="web \\"front\\"\\\\edge"' in line for line in info_lines)
    assert any('label_team="core"' in line for line in info_lines)
    other = [line for line in text.splitlines() if "label_team" in line]
    assert other == [line for line in info_lines if "label_team" in line]
    parsed = {
        s.labels.get("label_com_example_tier")
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert 'web "front"\\edge' in parsed


def test_labels_outside_the_allow_list_are_not_exported() -> None:
    text = render_text(example_snapshot(), ("team",))
    assert "label_team" in text
    assert "tier" not in text


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("team", "label_team"),
        ("com.example/tier", "label_com_example_tier"),
        ("a-b c", "label_a_b_c"),
    ],
)
def test_label_names_are_sanitized(key: str, expected: str) -> None:
    assert sanitize_label_name(key) == expected


def test_stale_flag_marks_reused_samples() -> None:
    registry = parsed_families(example_snapshot())
    stale = {"name": "app-deadbeef-0001", "id": B_CGROUP, "image": "local/busybox:latest"}
    fresh = {"name": "app-0123456789abcdef-00ff", "id": "a" * 64, "image": "local/busybox:latest"}
    assert (
        registry.get_sample_value(
            "sysinner_container_stats_stale", {**stale, "app": "deadbeef", "replica": "1"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "sysinner_container_stats_stale", {**fresh, "app": "0123456789abcdef", "replica": "255"}
        )
        == 0
    )


def test_health_collector_reports_engine_down_and_errors() -> None:
    view = HeldSnapshot(Snapshot(completed_at=T0, engine_up=False, error="down"))
    view.stats_source_name = "cgroup+docker"
    view.health.errors[ErrorKind.LIST] += 2
    view.health.polls = 3
    registry = CollectorRegistry()
    registry.register(ExporterHealthCollector(view))
    assert registry.get_sample_value("sysinner_exporter_up") == 0
    assert registry.get_sample_value("sysinner_exporter_errors_total", {"kind": "list"}) == 2
    assert registry.get_sample_value("sysinner_exporter_errors_total", {"kind": "stats"}) == 0
    assert registry.get_sample_value("sysinner_exporter_polls_total") == 3
    assert registry.get_sample_value("sysinner_exporter_containers") == 0
    assert (
        registry.get_sample_value("sysinner_exporter_stats_source", {"source": "cgroup+docker"})
        == 1
    )


def test_health_collector_reports_each_phase_of_the_last_poll() -> None:
    phases = ((PollPhase.LIST, 0.25), (PollPhase.INSPECT, 1.5), (PollPhase.STATS, 0.75))
    view = HeldSnapshot(Snapshot(completed_at=T0, engine_up=True, phase_seconds=phases))
    registry = CollectorRegistry()
    registry.register(ExporterHealthCollector(view))
    for phase, seconds in phases:
        assert (
            registry.get_sample_value(
                "sysinner_exporter_poll_phase_duration_seconds", {"phase": phase}
            )
            == seconds
        )


def test_empty_snapshot_renders_no_container_series() -> None:
    text = render_text(Snapshot())
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_container_families_parse_identically_in_both_formats() -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )

    text = render_text(example_snapshot(), ("team",))
    om = b"".join(
        render_container_families(example_snapshot(), ("team",), openmetrics=True)
    ).decode()
    plain = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in ParsedFamilies(text).families
        for s in f.samples
    }
    parsed = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in parse_openmetrics(om + "# EOF\n")
        for s in f.samples
    }
    assert plain == parsed
    assert "# TYPE container_cpu_usage_seconds counter" in om
    assert "# TYPE container_cpu_usage_seconds_total counter" in text


def test_a_row_added_to_the_tables_reaches_the_exposition_and_the_reference() -> None:
    # Adding a metric is adding a row: nothing else names it.
    widgets = ContainerMetric(
        "container_test_widgets", "Widgets per container.", "gauge", lambda s: s.info.pid + 1
    )
    ticks: LiveMetric[SnapshotView] = LiveMetric(
        "sysinner_exporter_test_ticks_total",
        "Ticks so far.",
        "counter",
        lambda v: (({}, float(v.health.polls * 2)),),
    )
    containers, health = (*CONTAINER_METRICS, widgets), (*HEALTH_METRICS, ticks)

    allow = ("team", "com.example/tier")
    text = b"".join(render_container_families(example_snapshot(), allow, table=containers)).decode()
    golden = GOLDEN.read_text()
    assert text.startswith(golden)
    added = text[len(golden) :]
    assert added.startswith(
        "# HELP container_test_widgets Widgets per container.\n"
        "# TYPE container_test_widgets gauge\n"
    )
    assert (
        ParsedFamilies(added).get_sample_value(
            "container_test_widgets",
            {"name": "app-deadbeef-0002", "id": "c" * 64, "image": "local/busybox:latest"}
            | {"app": "deadbeef", "replica": "2"},
        )
        == 1
    )  # the stopped container: pid 0

    view = HeldSnapshot(example_snapshot())
    view.health.polls = 4
    registry = CollectorRegistry()
    registry.register(ExporterHealthCollector(view, health))
    assert registry.get_sample_value("sysinner_exporter_test_ticks_total") == 8

    docs = {d.name: d for d in metric_docs(containers, health)}
    assert docs["container_test_widgets"] == MetricDoc(
        "container_test_widgets",
        "gauge",
        "Widgets per container.",
        ("name", "id", "image", "app", "replica"),
    )
    assert docs["sysinner_exporter_test_ticks_total"] == MetricDoc(
        "sysinner_exporter_test_ticks_total", "counter", "Ticks so far.", ()
    )
    assert not {"container_test_widgets", "sysinner_exporter_test_ticks_total"} & {
        d.name for d in metric_docs()
    }


def test_a_container_row_has_a_getter_exactly_when_it_is_of_kind_value() -> None:
    with pytest.raises(ValueError, match="getter"):
        ContainerMetric("container_test_nothing", "No getter.", "gauge")
    with pytest.raises(ValueError, match="getter"):
        ContainerMetric("container_test_both", "Both.", "gauge", lambda s: 1, kind="state")


@pytest.mark.promtool
def test_promtool_check_metrics_finds_no_problem_in_the_golden_exposition() -> None:
    # Prometheus' own linter: names, suffixes and units as it expects them.
    require(shutil.which("promtool") is not None, "promtool", needs="promtool")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=GOLDEN.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The only finding: cAdvisor's gauges named _total, kept for the rules that use them.
    findings = (result.stdout + result.stderr).strip().splitlines()
    assert findings == [
        f'{name} non-counter metrics should not have "_total" suffix'
        for name in sorted(GAUGES_NAMED_TOTAL)
    ], findings
    assert GOLDEN.read_text().count("# TYPE ") == len(CONTAINER_METRICS)
