"""What the monitoring tests share: the files under test and small PromQL helpers."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.reference import metric_docs
from tests.support.paths import ROOT

RULES = ROOT / "alerts" / "rules.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"
DASHBOARD = ROOT / "dashboards" / "sysinner-containers.json"
README = ROOT / "README.md"

#: Owned by the remediation issue; the rules and the dashboard use them.
REMEDIATION_METRICS = frozenset(
    {"sysinner_exporter_remediation_actions_total", "sysinner_exporter_remediation_quarantined"}
)
#: Series Prometheus itself or prometheus_client's process collector provide.
STANDARD_METRICS = frozenset(
    {"up", "process_cpu_seconds_total", "process_resident_memory_bytes", "ALERTS"}
)

#: What Grafana would put in place of the template variables when "All" is chosen.
ALL_VALUES = {"instance": ".+", "app": ".+", "replica": ".+"}
RATE_INTERVAL = "1m"
INTERVAL = "15s"

_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)


def load_rules() -> dict[str, Any]:
    """Return alerts/rules.yml parsed."""
    return yaml.safe_load(RULES.read_text())


def alerting_rules() -> list[dict[str, Any]]:
    """Return every alerting rule of alerts/rules.yml."""
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def recording_names() -> set[str]:
    """Return the names the recording rules of alerts/rules.yml record."""
    return {r["record"] for g in load_rules()["groups"] for r in g["rules"] if "record" in r}


def known_metric_names() -> set[str]:
    """Return every series name a rule or panel may query."""
    exporter = {doc.name for doc in metric_docs()}
    return exporter | REMEDIATION_METRICS | STANDARD_METRICS | recording_names()


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (a lexer, not a parser)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    # Grouping clauses go whole, so `sum by (x) (...)` reads as the call `sum (...)`.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.:])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()", text):
        if m.group(0).lower() not in _PROMQL_KEYWORDS:
            names.add(m.group(0))
    return names


@dataclass(frozen=True)
class PanelQuery:
    """One query of the dashboard: where it is and its expression."""

    where: str
    expr: str


def load_dashboard() -> dict[str, Any]:
    """Return the dashboard JSON parsed."""
    return json.loads(DASHBOARD.read_text())


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel that is not a row, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Return every target expression of every panel."""
    return [
        PanelQuery(f"panel {p['title']!r} target {t['refId']}", t["expr"])
        for p in data_panels(dashboard)
        for t in p.get("targets", [])
    ]


def variable_query(variable: dict[str, Any]) -> str:
    """Return a query variable's query string (Grafana stores a string or an object)."""
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def label_values_parts(query: str) -> tuple[str, str]:
    """Split Grafana's ``label_values(selector, label)`` into (PromQL selector, label)."""
    m = re.fullmatch(r"\s*label_values\(\s*(.+)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*", query)
    if m is None:
        raise ValueError(f"not label_values(selector, label): {query!r}")
    return m.group(1), m.group(2)


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana's variables in ``expr`` as Grafana would, with ``values`` for ours."""
    values = {**ALL_VALUES, **(values or {})}
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", INTERVAL)
    expr = expr.replace("${datasource}", "")
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value)
        expr = re.sub(r"\$" + name + r"\b", value, expr)
    if "$" in expr:
        raise ValueError(f"unsubstituted variable left in {expr!r}")
    return expr


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; return the finished process (stdout and stderr as text)."""
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run amtool with ``args``; return the finished process."""
    return subprocess.run(
        ["amtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
