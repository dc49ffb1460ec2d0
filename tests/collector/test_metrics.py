"""The metric table rendered from hand-made snapshots, on a registry of the test's own."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

from exporter import exposition
from exporter.exposition import render_container_families
from exporter.metrics import (
    CONTAINER_METRICS,
    GAUGES_NAMED_TOTAL,
    HEALTH_METRICS,
    ContainerMetric,
    ExporterHealthCollector,
    LiveMetric,
    enabled_rows,
)
from exporter.models import ENGINE_STATES, ContainerInfo, ContainerState, ContainerStats
from exporter.naming import sanitize_label_name
from exporter.reference import MetricDoc, metric_docs
from exporter.snapshot import (
    COLLECT_GROUPS,
    ContainerSample,
    ErrorKind,
    FsUsage,
    HeldSnapshot,
    PollPhase,
    ProcessCounts,
    Snapshot,
    SnapshotView,
)
from tests.support.requirements import require

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "metrics.prom"
T0 = 1_700_000_000.0
#: Container b's cgroup, as the systemd driver names it: its series' id.
B_CGROUP = "/system.slice/docker-" + "b" * 64 + ".scope"


def _info(name: str, cid: str, **fields: object) -> ContainerInfo:
    base: dict[str, object] = {
        "id": cid * 64,
        "name": name,
        "image": "local/busybox:latest",
        "state": ContainerState.RUNNING,
        "pid": 4242,
        "created": int(T0) - 100,
        "started": int(T0) - 50,
    }
    base.update(fields)
    return TypeAdapter(ContainerInfo).validate_python(base)


def _stats(scale: int, *, v2: bool = False) -> ContainerStats:
    """Return a sample; ``v2`` leaves out what cgroup v2 (or the engine) cannot say."""
    return ContainerStats(
        time=T0,
        cpu_total_usage=1_500_000_000 * scale,
        cpu_user_usage=1_000_000_000 * scale,
        cpu_system_usage=500_000_000 * scale,
        memory_usage=10_485_760 * scale,
        memory_cache=2_097_152 * scale,
        memory_inactive_file=1_048_576 * scale,
        net_rx_bytes=1000 * scale,
        net_tx_bytes=2000 * scale,
        blk_read_bytes=4096 * scale,
        blk_write_bytes=8192 * scale,
        blk_read_ops=1 * scale,
        blk_write_ops=2 * scale,
        memory_rss=4_194_304 * scale,
        memory_swap=None if v2 else 65_536 * scale,
        memory_mapped_file=262_144 * scale,
        memory_failcnt=None if v2 else 3 * scale,
        memory_max_usage=None if v2 else 16_777_216 * scale,
        cpu_periods=100 * scale,
        cpu_throttled_periods=20 * scale,
        cpu_throttled_time=250_000_000 * scale,
        net_rx_packets=10 * scale,
        net_tx_packets=20 * scale,
        net_rx_errors=1 * scale,
        net_tx_errors=0,
        net_rx_dropped=2 * scale,
        net_tx_dropped=0,
        oom_events=None if v2 else 1 * scale,
    )


def _snapshot() -> Snapshot:
    return Snapshot(
        containers=(
            ContainerSample(
                info=_info(
                    "app-0123456789abcdef-00ff",
                    "a",
                    cpu_limit=500,
                    memory_limit=67_108_864,
                    labels={"team": "core", "com.example/tier": 'web "front"\\edge'},
                    engine_state="running",
                    health="healthy",
                    restart_count=2,
                    memory_reservation=33_554_432,
                    memory_swap_limit=134_217_728,
                    cpu_shares=512,
                ),
                app="0123456789abcdef",
                replica=255,
                stats=_stats(1),
                stats_source="docker",
                processes=ProcessCounts(3, 5, 17),
                fs=FsUsage(usage=12_288, limit=1 << 30, inodes_total=65_536, inodes_free=60_000),
            ),
            ContainerSample(
                info=_info(
                    "app-deadbeef-0001",
                    "b",
                    cgroup_path=B_CGROUP,
                    engine_state="paused",
                    health="unhealthy",
                    memory_swap_limit=-1,
                ),
                app="deadbeef",
                replica=1,
                stats=_stats(2, v2=True),
                stats_source="docker",
                stale=True,
            ),
            ContainerSample(
                info=_info(
                    "app-deadbeef-0002",
                    "c",
                    state=ContainerState.STOPPED,
                    pid=0,
                    started=0,
                    engine_state="exited",
                    health="unhealthy",
                    exit_code=137,
                    oom_killed=True,
                ),
                app="deadbeef",
                replica=2,
            ),
            ContainerSample(
                info=_info("postgres", "d", image="postgres:16"),
                app=None,
                replica=None,
                stats=_stats(3),
                stats_source="docker",
            ),
        ),
        completed_at=T0,
        duration_seconds=0.25,
        engine_up=True,
        host=_stats(100, v2=True),
    )


def _render(snapshot: Snapshot, allow: tuple[str, ...] = ()) -> str:
    return b"".join(render_container_families(snapshot, allow)).decode()


class _Parsed:
    """The rendered text parsed back, queried like a registry."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))

    def get_sample_value(self, name: str, labels: dict[str, str]) -> float | None:
        for family in self.families:
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return None


def _registry(snapshot: Snapshot, allow: tuple[str, ...] = ()) -> _Parsed:
    return _Parsed(_render(snapshot, allow))


@pytest.mark.parametrize("chunk_containers", [1000, 3, 1])
def test_exposition_matches_the_golden_file(
    monkeypatch: pytest.MonkeyPatch, chunk_containers: int
) -> None:
    # However the families are cut into chunks, the text is the same.
    monkeypatch.setattr(exposition, "CHUNK_CONTAINERS", chunk_containers)
    text = _render(_snapshot(), ("team", "com.example/tier"))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_table_row_is_exported_for_a_container_with_stats_and_limits() -> None:
    registry = _registry(_snapshot())
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
    families = {f.name: f for f in _registry(_snapshot()).families}
    for spec in CONTAINER_METRICS:
        family = families[spec.family]
        assert family.type == spec.type
        if spec.type == "counter":
            assert spec.name.endswith("_total"), spec.name
        elif spec.name not in GAUGES_NAMED_TOTAL:
            assert not spec.name.endswith("_total"), spec.name
        assert family.documentation, spec.name


def test_unmanaged_container_has_no_app_or_replica_label() -> None:
    for family in _registry(_snapshot()).families:
        for sample in family.samples:
            if sample.labels.get("name") == "postgres":
                assert "app" not in sample.labels
                assert "replica" not in sample.labels
            elif sample.labels.get("name"):  # the root container (name="") has neither
                assert sample.labels["app"] in ("0123456789abcdef", "deadbeef")


def test_stopped_container_exports_state_but_no_usage() -> None:
    registry = _registry(_snapshot())
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


def test_engine_states_are_not_folded_and_health_reads_as_cadvisor() -> None:
    registry = _registry(_snapshot())
    paused = {
        "name": "app-deadbeef-0001",
        "id": B_CGROUP,
        "image": "local/busybox:latest",
        "app": "deadbeef",
        "replica": "1",
    }
    states = {
        state: registry.get_sample_value("sysinner_container_state", {**paused, "state": state})
        for state in ENGINE_STATES
    }
    assert states == {state: 1.0 if state == "paused" else 0.0 for state in ENGINE_STATES}
    assert registry.get_sample_value("container_health_state", paused) == 0
    healthy = {
        "name": "app-0123456789abcdef-00ff",
        "id": "a" * 64,
        "image": "local/busybox:latest",
        "app": "0123456789abcdef",
        "replica": "255",
    }
    assert registry.get_sample_value("container_health_state", healthy) == 1
    assert registry.get_sample_value("sysinner_container_restarts_total", healthy) == 2
    assert registry.get_sample_value("container_spec_cpu_shares", healthy) == 512
    assert registry.get_sample_value("container_spec_memory_swap_limit_bytes", healthy) == 2**27
    # No healthcheck reads -1; no engine state (a driver without one) reads as its driver state;
    # unset shares are the kernel's 1024; unlimited swap (-1) has no series.
    unmanaged = {"name": "postgres", "id": "d" * 64, "image": "postgres:16"}
    assert registry.get_sample_value("container_health_state", unmanaged) == -1
    assert (
        registry.get_sample_value("sysinner_container_state", {**unmanaged, "state": "running"})
        == 1
    )
    assert registry.get_sample_value("container_spec_cpu_shares", unmanaged) == 1024
    assert registry.get_sample_value("container_spec_memory_swap_limit_bytes", paused) is None


def test_docker_labels_only_on_the_info_series_and_escaped() -> None:
    text = _render(_snapshot(), ("team", "com.example/tier"))
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
    text = _render(_snapshot(), ("team",))
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
    registry = _registry(_snapshot())
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
    text = _render(Snapshot())
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_container_families_parse_identically_in_both_formats() -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )

    text = _render(_snapshot(), ("team",))
    om = b"".join(render_container_families(_snapshot(), ("team",), openmetrics=True)).decode()
    plain = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in _Parsed(text).families
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
    text = b"".join(render_container_families(_snapshot(), allow, table=containers)).decode()
    golden = GOLDEN.read_text()
    assert text.startswith(golden)
    added = text[len(golden) :]
    assert added.startswith(
        "# HELP container_test_widgets Widgets per container.\n"
        "# TYPE container_test_widgets gauge\n"
    )
    assert (
        _Parsed(added).get_sample_value(
            "container_test_widgets",
            {"name": "app-deadbeef-0002", "id": "c" * 64, "image": "local/busybox:latest"}
            | {"app": "deadbeef", "replica": "2"},
        )
        == 1
    )  # the stopped container: pid 0

    view = HeldSnapshot(_snapshot())
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


def test_last_seen_is_for_running_containers_only_and_stamped_with_the_poll_time() -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )

    snapshot = dataclasses.replace(_snapshot(), completed_at=T0 + 0.25)
    text = _render(snapshot)
    om = b"".join(render_container_families(snapshot, openmetrics=True)).decode() + "# EOF\n"
    for families in (text_string_to_metric_families(text), parse_openmetrics(om)):
        seen = {
            s.labels["name"]: (s.value, s.timestamp)
            for f in families
            if f.name == "container_last_seen"
            for s in f.samples
        }
        # The stopped container has none; the paused one (b) is still seen.
        assert set(seen) == {"app-0123456789abcdef-00ff", "app-deadbeef-0001", "postgres"}
        for value, timestamp in seen.values():
            assert value == T0 + 0.25
            assert float(timestamp) == T0 + 0.25


def test_host_totals_are_the_root_container_and_ids_are_cgroup_paths() -> None:
    registry = _registry(_snapshot())
    root = {"name": "", "id": "/"}
    assert registry.get_sample_value("container_cpu_usage_seconds_total", root) == 150
    assert registry.get_sample_value("container_memory_working_set_bytes", root) == 943_718_400
    assert registry.get_sample_value("container_network_receive_packets_total", root) == 1000
    # Only the host rows: no spec, state or health series for the root.
    assert registry.get_sample_value("container_health_state", root) is None
    assert registry.get_sample_value("container_cpu_cfs_periods_total", root) is None
    ids = {
        s.labels["name"]: s.labels["id"]
        for f in _Parsed(_render(_snapshot())).families
        if f.name == "container_cpu_usage_seconds"
        for s in f.samples
    }
    # The cgroup path where the driver gave one; the bare id where it could not.
    assert ids["app-deadbeef-0001"] == B_CGROUP
    assert ids["postgres"] == "d" * 64
    no_host = _render(dataclasses.replace(_snapshot(), host=None))
    assert 'id="/"' not in no_host


def test_series_labels_go_on_every_series_when_asked() -> None:
    snapshot = _snapshot()
    plain = _render(snapshot)
    assert "container_label_" not in plain  # the default: on sysinner_container_info only
    every = _render_with(snapshot, series_labels=("*",))
    cpu = {
        s.labels["name"]: s.labels
        for f in _Parsed(every).families
        if f.name == "container_cpu_usage_seconds"
        for s in f.samples
    }
    a = cpu["app-0123456789abcdef-00ff"]
    assert a["container_label_team"] == "core"
    assert a["container_label_com_example_tier"] == 'web "front"\\edge'
    assert not any(k.startswith("container_label_") for k in cpu["postgres"])
    assert not any(k.startswith("container_label_") for k in cpu[""])  # the root container
    only_team = _render_with(snapshot, series_labels=("team", "absent"))
    assert 'container_label_team="core"' in only_team
    assert "container_label_com_example_tier" not in only_team


def test_two_label_keys_of_one_name_give_one_label_the_same_each_time() -> None:
    sample = _snapshot().containers[0]
    info = dataclasses.replace(sample.info, labels={"a.b": "dot", "a-b": "dash"})
    snapshot = Snapshot(containers=(dataclasses.replace(sample, info=info),), completed_at=T0)
    text = _render_with(snapshot, series_labels=("*",))
    line = next(x for x in text.splitlines() if x.startswith("container_cpu_usage_seconds_total{"))
    assert line.count("container_label_a_b=") == 1
    assert 'container_label_a_b="dash"' in line  # "a-b" sorts first


def test_disabled_groups_leave_their_families_out() -> None:
    table = enabled_rows(["network", "oom", "processes"])
    text = _render_with(_snapshot(), table=table)
    assert "container_network_" not in text
    assert "container_oom_events_total" not in text
    assert "container_threads" not in text
    assert "container_cpu_usage_seconds_total{" in text
    assert "container_last_seen{" in text  # always on
    full = _render(_snapshot())
    assert len(text) < len(full)
    assert {row.group for row in CONTAINER_METRICS} - {""} == set(COLLECT_GROUPS)


def _render_with(snapshot: Snapshot, **options: Any) -> str:
    return b"".join(render_container_families(snapshot, **options)).decode()
