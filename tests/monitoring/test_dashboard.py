"""dashboards/sysinner-containers.json: valid, current schema, units everywhere, sound PromQL."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import CONTAINER_METRICS
from tests.monitoring.monitoring import (
    DASHBOARD,
    data_panels,
    known_metric_names,
    label_values_parts,
    load_dashboard,
    metric_names,
    panel_queries,
    promtool,
    substitute,
    variable_query,
)
from tests.support.requirements import require

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ROWS = ["Fleet overview", "Replica detail", "Exporter"]
#: Grafana unit ids this dashboard may use (a typo renders as a bare number).
GRAFANA_UNITS = frozenset(
    {
        "short",
        "none",
        "percentunit",
        "bytes",
        "Bps",
        "iops",
        "ops",
        "s",
        "dateTimeFromNow",
        "dateTimeAsIso",
        "bool_yes_no",
    }
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_current_schema_and_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == "sysinner-containers"
    assert dashboard["title"]
    assert dashboard["id"] is None  # importable into any Grafana
    assert DASHBOARD.read_text().endswith("}\n")


def test_template_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for name in ("app", "replica"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        selector, label = label_values_parts(variable_query(var))
        assert label == name
        assert metric_names(selector) <= known_metric_names()
    # replica follows the chosen app.
    assert "$app" in variable_query(variables["replica"])


def test_rows_and_unique_ids(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ROWS
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells


def test_every_panel_has_a_unit_and_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    panels = data_panels(dashboard)
    assert len(panels) >= 25
    for panel in panels:
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in GRAFANA_UNITS, f"{panel['title']!r}: unit {unit!r}"
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def _row_exprs(dashboard: dict[str, Any], row: str) -> str:
    current, exprs = None, []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
        elif current == row:
            exprs.extend(t["expr"] for t in panel["targets"])
    return "\n".join(exprs)


def test_rows_show_what_they_promise(dashboard: dict[str, Any]) -> None:
    fleet = _row_exprs(dashboard, "Fleet overview")
    assert "sysinner_container_state{" in fleet
    assert 'state="running"' in fleet
    assert "topk(" in fleet
    detail = _row_exprs(dashboard, "Replica detail")
    for spec in CONTAINER_METRICS:  # every per-container figure is on the detail row
        if spec.kind != "info":  # labels to join on, not a figure to chart
            assert spec.name in detail, spec.name
    for signal in ("container_health_state", "container_oom_events_total", "cfs_throttled"):
        assert signal in detail, signal
    assert "changes(container_start_time_seconds" in detail
    exporter = _row_exprs(dashboard, "Exporter")
    for name in (
        "up{",
        "sysinner_exporter_up",
        "sysinner_exporter_poll_duration_seconds",
        "sysinner_exporter_errors_total",
        "sysinner_exporter_remediation_actions_total",
        "sysinner_exporter_remediation_quarantined",
    ):
        assert name in exporter, name


def test_every_query_uses_only_known_metrics(dashboard: dict[str, Any]) -> None:
    known = known_metric_names()
    for q in panel_queries(dashboard):
        names = metric_names(substitute(q.expr))
        assert names, f"{q.where}: selects no metric"
        assert names <= known, f"{q.where}: unknown {names - known}"


def test_container_queries_honour_the_template_variables(dashboard: dict[str, Any]) -> None:
    for q in panel_queries(dashboard):
        if "container_" in q.expr:
            assert "$instance" in q.expr, q.where


@pytest.mark.promtool
def test_every_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool has no bare expression check; each query becomes a recording rule.
    require(shutil.which("promtool") is not None, "promtool", needs="promtool")
    queries = panel_queries(dashboard)
    selectors = [
        label_values_parts(variable_query(v))[0]
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    exprs = [substitute(q.expr) for q in queries] + [substitute(s) for s in selectors]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.promtool
def test_query_parse_check_can_fail(tmp_path: Path) -> None:
    require(shutil.which("promtool") is not None, "promtool", needs="promtool")
    path = tmp_path / "broken.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (a (b)"}]}]}
        )
    )
    assert promtool("check", "rules", str(path)).returncode != 0


def test_substitute_leaves_no_variable() -> None:
    expr = 'rate(x{instance=~"$instance", app=~"${app}", replica=~"$replica"}[$__rate_interval])'
    assert substitute(expr, {"app": "0123abcd"}) == (
        'rate(x{instance=~".+", app=~"0123abcd", replica=~".+"}[1m])'
    )
    with pytest.raises(ValueError, match="unsubstituted"):
        substitute('x{a=~"$unknown"}')
