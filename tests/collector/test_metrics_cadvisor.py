"""cAdvisor's semantics in the rendered table: engine states, last seen, ids, labels, groups."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from exporter.exposition import render_container_families
from exporter.metrics import (
    CONTAINER_METRICS,
    enabled_rows,
)
from exporter.models import ENGINE_STATES
from exporter.snapshot import (
    COLLECT_GROUPS,
    Snapshot,
)
from tests.support.exposition import (
    B_CGROUP,
    T0,
    ParsedFamilies,
    example_snapshot,
    parsed_families,
    render_text,
    render_with,
)


def test_engine_states_are_not_folded_and_health_reads_as_cadvisor() -> None:
    registry = parsed_families(example_snapshot())
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


def test_last_seen_is_for_running_containers_only_and_stamped_with_the_poll_time() -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )

    snapshot = dataclasses.replace(example_snapshot(), completed_at=T0 + 0.25)
    text = render_text(snapshot)
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
    registry = parsed_families(example_snapshot())
    root = {"name": "", "id": "/"}
    assert registry.get_sample_value("container_cpu_usage_seconds_total", root) == 150
    assert registry.get_sample_value("container_memory_working_set_bytes", root) == 943_718_400
    assert registry.get_sample_value("container_network_receive_packets_total", root) == 1000
    # Only the host rows: no spec, state or health series for the root.
    assert registry.get_sample_value("container_health_state", root) is None
    assert registry.get_sample_value("container_cpu_cfs_periods_total", root) is None
    ids = {
        s.labels["name"]: s.labels["id"]
        for f in ParsedFamilies(render_text(example_snapshot())).families
        if f.name == "container_cpu_usage_seconds"
        for s in f.samples
    }
    # The cgroup path where the driver gave one; the bare id where it could not.
    assert ids["app-deadbeef-0001"] == B_CGROUP
    assert ids["postgres"] == "d" * 64
    no_host = render_text(dataclasses.replace(example_snapshot(), host=None))
    assert 'id="/"' not in no_host


def test_series_labels_go_on_every_series_when_asked() -> None:
    snapshot = example_snapshot()
    plain = render_text(snapshot)
    assert "container_label_" not in plain  # the default: on sysinner_container_info only
    every = render_with(snapshot, series_labels=("*",))
    cpu = {
        s.labels["name"]: s.labels
        for f in ParsedFamilies(every).families
        if f.name == "container_cpu_usage_seconds"
        for s in f.samples
    }
    a = cpu["app-0123456789abcdef-00ff"]
    assert a["container_label_team"] == "core"
    assert a["container_label_com_example_tier"] == 'web "front"\\edge'
    assert not any(k.startswith("container_label_") for k in cpu["postgres"])
    assert not any(k.startswith("container_label_") for k in cpu[""])  # the root container
    only_team = render_with(snapshot, series_labels=("team", "absent"))
    assert 'container_label_team="core"' in only_team
    assert "container_label_com_example_tier" not in only_team


def test_two_label_keys_of_one_name_give_one_label_the_same_each_time() -> None:
    sample = example_snapshot().containers[0]
    info = dataclasses.replace(sample.info, labels={"a.b": "dot", "a-b": "dash"})
    snapshot = Snapshot(containers=(dataclasses.replace(sample, info=info),), completed_at=T0)
    text = render_with(snapshot, series_labels=("*",))
    line = next(x for x in text.splitlines() if x.startswith("container_cpu_usage_seconds_total{"))
    assert line.count("container_label_a_b=") == 1
    assert 'container_label_a_b="dash"' in line  # "a-b" sorts first


def test_disabled_groups_leave_their_families_out() -> None:
    table = enabled_rows(["network", "oom", "processes"])
    text = render_with(example_snapshot(), table=table)
    assert "container_network_" not in text
    assert "container_oom_events_total" not in text
    assert "container_threads" not in text
    assert "container_cpu_usage_seconds_total{" in text
    assert "container_last_seen{" in text  # always on
    full = render_text(example_snapshot())
    assert len(text) < len(full)
    assert {row.group for row in CONTAINER_METRICS} - {""} == set(COLLECT_GROUPS)
