"""The fleet configs in fleet/ (issue 16 item 5) pass promtool and amtool as shipped."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.paths import ROOT
from tests.support.requirements import require

pytestmark = [pytest.mark.promtool, pytest.mark.prometheus]

FLEET = ROOT / "fleet"
PROMETHEUS_CONFIGS = [
    "prometheus-agent.yml",
    "prometheus-central.yml",
    "prometheus-shard.yml",
    "prometheus-global.yml",
]


@pytest.mark.parametrize("name", PROMETHEUS_CONFIGS)
def test_promtool_checks_the_config(name: str) -> None:
    require(shutil.which("promtool") is not None, "promtool (make system-deps)", needs="promtool")
    run = subprocess.run(
        ["promtool", "check", "config", name], cwd=FLEET, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_amtool_checks_the_pull_mode_alertmanager_config() -> None:
    require(
        shutil.which("amtool") is not None,
        "amtool (Debian's prometheus-alertmanager)",
        needs="prometheus",
    )
    run = subprocess.run(
        ["amtool", "check-config", "alertmanager-pull.yml"],
        cwd=FLEET,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_shards_partition_the_targets_and_the_global_view_federates_app_rules() -> None:
    shard = yaml.safe_load((FLEET / "prometheus-shard.yml").read_text())
    (hashmod, keep) = shard["scrape_configs"][0]["relabel_configs"]
    assert hashmod["action"] == "hashmod"
    assert keep == {"source_labels": [hashmod["target_label"]], "regex": "0", "action": "keep"}
    assert shard["rule_files"] == ["../alerts/rules.yml"]
    glob = yaml.safe_load((FLEET / "prometheus-global.yml").read_text())
    (job,) = glob["scrape_configs"]
    assert job["metrics_path"] == "/federate"
    assert job["honor_labels"] is True
    assert len(job["static_configs"][0]["targets"]) == hashmod["modulus"]
    rules = yaml.safe_load((ROOT / "alerts" / "rules.yml").read_text())
    recorded = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert any(r.startswith("app:") for r in recorded)
    assert job["params"]["match[]"] == ['{__name__=~"app:.+"}']
