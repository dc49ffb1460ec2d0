"""alerts/: the rules load cleanly, every alert is unit-tested, Alertmanager routes restarts."""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
import yaml

from tests.monitoring.monitoring import (
    ALERTMANAGER,
    RULE_TESTS,
    RULES,
    alerting_rules,
    amtool,
    known_metric_names,
    load_rules,
    metric_names,
    promtool,
)
from tests.support.requirements import require

#: The exporter's default cooldown (--remediation.cooldown-seconds).
DEFAULT_COOLDOWN_SECONDS = 300
#: Aggregations drop the labels the webhook needs to find its target.
_AGGREGATION = re.compile(
    r"\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)"
    r"\s*(by|without|\()"
)
_DURATION = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    """Return a Prometheus duration such as ``1h30m`` in seconds."""
    parts = _DURATION.findall(duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * _SECONDS[u] for n, u in parts)


@pytest.fixture
def promtool_present() -> None:
    require(shutil.which("promtool") is not None, "promtool", needs="promtool")


@pytest.fixture
def amtool_present() -> None:
    require(
        shutil.which("amtool") is not None,
        "amtool (Debian's prometheus-alertmanager)",
        needs="prometheus",
    )


@pytest.mark.promtool
def test_promtool_check_rules_is_clean(promtool_present: None) -> None:
    result = promtool("check", "rules", str(RULES))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output
    assert not re.search(r"warn|error|duplicate", output, re.IGNORECASE), output


@pytest.mark.promtool
def test_promtool_rule_unit_tests_pass(promtool_present: None) -> None:
    assert RULE_TESTS, "no promtool tests under alerts/tests/"
    result = promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(RULE_TESTS), output


@pytest.mark.promtool
def test_promtool_tests_can_fail(promtool_present: None, tmp_path: Any) -> None:
    # The same tests against rules whose memory threshold is lowered to 80%:
    # the 85% replica must now fire and the unit tests must notice.
    text = RULES.read_text()
    assert "/ container_spec_memory_limit_bytes > 0.9" in text
    (tmp_path / "alerts" / "tests").mkdir(parents=True)
    (tmp_path / "alerts" / "rules.yml").write_text(
        text.replace(
            "/ container_spec_memory_limit_bytes > 0.9", "/ container_spec_memory_limit_bytes > 0.8"
        )
    )
    for path in RULE_TESTS:
        (tmp_path / "alerts" / "tests" / path.name).write_text(path.read_text())
    result = promtool("test", "rules", "containers.yml", cwd=tmp_path / "alerts" / "tests")
    assert result.returncode != 0
    assert "SysinnerContainerMemoryNearLimit" in result.stdout + result.stderr


def _rule_tests() -> list[dict[str, Any]]:
    cases = []
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../rules.yml"], path
        for test in doc["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def test_every_alert_has_a_firing_and_a_silent_promtool_test() -> None:
    cases = _rule_tests()
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = [r["alert"] for r in alerting_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert {n for n in names if n not in fires} == set(), "alerts never tested firing"
    assert {n for n in names if n not in silent} == set(), "alerts never tested silent"
    assert fires | silent <= set(names), "tests name alerts that do not exist"


def test_every_alert_has_severity_for_and_runbook_annotations() -> None:
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert seconds(rule["for"]) >= 60, f"{name}: a `for:` under 1m pages on blips"
        assert set(rule["annotations"]) >= {"summary", "description", "runbook"}, name
        assert re.match(r"1\. ", rule["annotations"]["runbook"]), f"{name}: runbook steps"


def test_restart_alerts_keep_the_labels_the_webhook_needs() -> None:
    restart = [r for r in alerting_rules() if r["labels"].get("action") == "restart"]
    assert {r["alert"] for r in restart} == {
        "SysinnerContainerMemoryNearLimit",
        "SysinnerContainerCpuSaturated",
        "SysinnerContainerUnhealthy",
    }
    for rule in restart:
        assert not _AGGREGATION.search(rule["expr"]), f"{rule['alert']} aggregates labels away"
    # ...and their promtool tests prove name, app and replica reach the alert.
    for case in _rule_tests():
        if case["alertname"] in {r["alert"] for r in restart} and case.get("exp_alerts"):
            for alert in case["exp_alerts"]:
                labels = alert["exp_labels"]
                assert labels["action"] == "restart"
                assert "name" in labels or {"app", "replica"} <= set(labels)


def test_alerts_that_must_not_restart_do_not_ask_to() -> None:
    # Restarting a crash loop, a stopped replica or the exporter helps nobody.
    by_name = {r["alert"]: r for r in alerting_rules()}
    for name in (
        "SysinnerContainerRestartLoop",
        "SysinnerReplicaNotRunning",
        "SysinnerExporterDown",
        "SysinnerContainerOOMKilled",
        "SysinnerContainerCpuThrottled",
    ):
        assert "action" not in by_name[name]["labels"], name


def test_rules_query_only_known_metrics() -> None:
    known = known_metric_names()
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_metric_names_lexer() -> None:
    # The check above is only as good as this lexer.
    expr = (
        'sum by (app, state) (rate(foo_total{a="b", c=~"x(y)"}[5m] offset 1m)) '
        '/ on (app) group_left (name) bar:ratio > bool 0.9 or absent(up{job="x"}) * 1e12'
    )
    assert metric_names(expr) == {"foo_total", "bar:ratio", "up"}


@pytest.mark.prometheus
def test_alertmanager_config_is_valid(amtool_present: None) -> None:
    result = amtool("check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["action=restart", "name=app-0123abcd-0001", "alertname=X"], "sysinner-exporter,team"),
        (["alertname=SysinnerExporterDown", "severity=critical"], "team"),
        (["action=page", "name=app-0123abcd-0001"], "team"),
    ],
)
def test_alertmanager_routes_only_restart_alerts_to_the_exporter(
    amtool_present: None, labels: list[str], receivers: str
) -> None:
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_alertmanager_webhook_receiver_matches_the_exporter() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    routes = [r for r in config["route"]["routes"] if r["receiver"] == "sysinner-exporter"]
    assert len(routes) == 1
    route = routes[0]
    assert route["matchers"] == ['action="restart"']
    assert "name" in route["group_by"]
    assert seconds(route["repeat_interval"]) > DEFAULT_COOLDOWN_SECONDS
    (receiver,) = [r for r in config["receivers"] if r["name"] == "sysinner-exporter"]
    (hook,) = receiver["webhook_configs"]
    assert re.fullmatch(r"http://[^/]+:8733/api/v1/alerts", hook["url"])
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    assert auth["credentials_file"]
