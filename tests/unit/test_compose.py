"""docker-compose.yml and deploy/: every file it names exists and the services agree.

The stack cannot run here (its images come from a public registry), so the
tests check what can be checked offline: the files, the cross-references
between the compose file and the configs it mounts, and, with the tools from
Debian, `docker-compose config` and `promtool check config`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter.config import DEFAULT_PORT, Settings, env_name
from tests.support.paths import ROOT
from tests.support.requirements import require

COMPOSE = ROOT / "docker-compose.yml"
#: Made on each host by the operator (see the compose file's header), never committed.
OPERATOR_MADE = {ROOT / "deploy/secrets/api-token"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load(COMPOSE)
    return doc


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Return a service's volumes as {target: (source, mode)}."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *rest = volume.split(":")
        found[target] = (source, rest[0] if rest else "rw")
    return found


def local_source(source: str) -> Path | None:
    """Return the repository path of a relative bind-mount source, None for others."""
    return (ROOT / source).resolve() if source.startswith(".") else None


def flag_value(command: list[str], flag: str) -> str:
    for arg in command:
        if arg.startswith(f"{flag}="):
            return arg.partition("=")[2]
    raise AssertionError(f"{flag} missing from {command}")


def test_every_local_file_the_compose_file_names_exists(compose: dict[str, Any]) -> None:
    named: set[Path] = set()
    for name, service in compose["services"].items():
        if "build" in service:
            build = service["build"]
            context = ROOT / (build["context"] if isinstance(build, dict) else build)
            named.add(context / "Dockerfile")
        for source, _ in mounts(service).values():
            path = local_source(source)
            if path is not None:
                named.add(path)
        assert service, name
    missing = sorted(str(p.relative_to(ROOT)) for p in named - OPERATOR_MADE if not p.exists())
    assert not missing, f"the compose file names files that do not exist: {missing}"
    # The ones that must exist for the stack to be what it claims to be.
    for required in (
        "Dockerfile",
        "deploy/prometheus.yml",
        "alerts/rules.yml",
        "alerts/alertmanager.yml",
        "dashboards/sysinner-containers.json",
        "deploy/grafana/provisioning",
    ):
        assert ROOT / required in named, required


def test_the_exporter_image_is_the_one_make_image_builds_offline(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["exporter"]
    make_vars = dict(
        re.findall(
            r"^(IMAGE|IMAGE_BASE|WHEELHOUSE) \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M
        )
    )
    assert exporter["image"] == make_vars["IMAGE"]
    assert exporter["pull_policy"] == "never"
    build = exporter["build"]
    assert build["network"] == "none"
    assert build["args"]["BASE_IMAGE"] == make_vars["IMAGE_BASE"]
    assert build["args"]["WHEELHOUSE"] == make_vars["WHEELHOUSE"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={make_vars['IMAGE_BASE']}" in dockerfile
    assert "python:3.11-slim" not in dockerfile.split("ARG BASE_IMAGE")[1]


def test_the_operator_made_secret_is_never_committed() -> None:
    ignore = (ROOT / "deploy/secrets/.gitignore").read_text().split()
    assert "*" in ignore
    assert "!.gitignore" in ignore
    header = COMPOSE.read_text().split("services:")[0]
    for path in OPERATOR_MADE:
        assert str(path.relative_to(ROOT)) in header, "the header says how to make it"


def test_exporter_gets_the_socket_its_group_and_the_read_only_host_trees(
    compose: dict[str, Any],
) -> None:
    exporter = compose["services"]["exporter"]
    volumes = mounts(exporter)
    assert volumes["/var/run/docker.sock"][0] == "/var/run/docker.sock"
    assert exporter["group_add"] == [
        "${DOCKER_GID:?export DOCKER_GID=$(stat -c %g /var/run/docker.sock) first}"
    ]
    assert exporter["pid"] == "host"
    env = exporter["environment"]
    assert volumes[env["SYSINNER_EXPORTER_PROC_ROOT"]] == ("/proc", "ro")
    assert volumes[env["SYSINNER_EXPORTER_CGROUP_ROOT"]] == ("/sys/fs/cgroup", "ro")
    token_file = env["SYSINNER_EXPORTER_API_TOKEN_FILE"]
    assert local_source(volumes[token_file][0]) in OPERATOR_MADE
    state = volumes[str(Settings.model_fields["state_dir"].default)]
    assert state[0] in compose["volumes"], "the state dir is a named volume"


def test_exporter_sees_the_pod_base_and_host_prefix_at_the_hosts_paths(
    compose: dict[str, Any],
) -> None:
    # The engine resolves replica mounts on the host: a pod dir the exporter
    # writes at another path (its state volume) is one the engine never sees.
    volumes = mounts(compose["services"]["exporter"])
    env = compose["services"]["exporter"].get("environment", {})
    pod_base = env.get("EXPORTER_POD_BASE_DIR", str(Settings.model_fields["pod_base_dir"].default))
    assert volumes[pod_base] == (pod_base, "rw")
    host_prefix = env.get("EXPORTER_HOST_PREFIX", str(Settings.model_fields["host_prefix"].default))
    assert volumes[host_prefix] == (host_prefix, "ro")


def test_exporter_environment_names_real_settings(compose: dict[str, Any]) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    for name in compose["services"]["exporter"]["environment"]:
        assert name in known, f"{name} is no setting of sysinner-exporter"


def test_prometheus_scrapes_the_exporter_and_loads_the_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    volumes = mounts(prometheus)
    config_path = flag_value(prometheus["command"], "--config.file")
    config = load(local_source(volumes[config_path][0]))  # type: ignore[arg-type]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The rules and the dashboard select job="sysinner-exporter".
    assert 'job="sysinner-exporter"' in (ROOT / "alerts/rules.yml").read_text()
    targets = jobs["sysinner-exporter"]["static_configs"][0]["targets"]
    assert targets == [f"127.0.0.1:{DEFAULT_PORT}"], "the exporter listens on the default port"
    # Movable where docker-compose runs (the newcomer test does), the default port otherwise.
    listen = compose["services"]["exporter"]["environment"]["SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS"]
    assert listen == f"${{SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS:-0.0.0.0:{DEFAULT_PORT}}}"
    for rule_file in config["rule_files"]:
        source = local_source(volumes[rule_file][0])
        assert source == ROOT / "alerts/rules.yml"
    alertmanager = compose["services"]["alertmanager"]
    am_listen = flag_value(alertmanager["command"], "--web.listen-address")
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [am_listen]
    assert (
        flag_value(prometheus["command"], "--web.listen-address")
        == jobs["prometheus"]["static_configs"][0]["targets"][0]
    )


def test_alertmanager_reaches_the_exporter_webhook_with_the_token(
    compose: dict[str, Any],
) -> None:
    alertmanager = compose["services"]["alertmanager"]
    volumes = mounts(alertmanager)
    config_path = flag_value(alertmanager["command"], "--config.file")
    assert local_source(volumes[config_path][0]) == ROOT / "alerts/alertmanager.yml"
    config = load(ROOT / "alerts/alertmanager.yml")
    receiver = next(r for r in config["receivers"] if r["name"] == "sysinner-exporter")
    webhook = receiver["webhook_configs"][0]
    url = urlsplit(webhook["url"])
    # Every service shares the host's network: loopback reaches the exporter.
    assert all(s["network_mode"] == "host" for s in compose["services"].values())
    assert (url.hostname, url.port) == ("127.0.0.1", DEFAULT_PORT)
    credentials = webhook["http_config"]["authorization"]["credentials_file"]
    exporter_token = compose["services"]["exporter"]["environment"][
        "SYSINNER_EXPORTER_API_TOKEN_FILE"
    ]
    exporter_volumes = mounts(compose["services"]["exporter"])
    assert volumes[credentials][0] == exporter_volumes[exporter_token][0], "one token, both ends"


def test_grafana_provisions_the_dashboard_and_the_datasource(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    volumes = mounts(grafana)
    provisioning = local_source(volumes["/etc/grafana/provisioning"][0])
    assert provisioning == ROOT / "deploy/grafana/provisioning"
    providers = load(provisioning / "dashboards/sysinner.yml")["providers"]
    dashboard_dir = PurePosixPath(providers[0]["options"]["path"])
    in_dir = {t: s for t, s in volumes.items() if PurePosixPath(t).parent == dashboard_dir}
    assert [local_source(s[0]) for s in in_dir.values()] == [
        ROOT / "dashboards/sysinner-containers.json"
    ]
    datasources = load(provisioning / "datasources/prometheus.yml")["datasources"]
    assert datasources[0]["type"] == "prometheus"
    assert datasources[0]["isDefault"] is True
    listen = flag_value(compose["services"]["prometheus"]["command"], "--web.listen-address")
    assert datasources[0]["url"] == f"http://{listen}"


@pytest.mark.compose
def test_docker_compose_config_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    require(binary is not None, "docker-compose (Debian package)", needs="compose")
    assert binary is not None
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_GID"}
    ok = subprocess.run(
        [binary, "--file", str(COMPOSE), "config", "--quiet"],
        cwd=ROOT,
        env={**env, "DOCKER_GID": "999"},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    # Without the socket's group the exporter could not reach the engine: refuse.
    refused = subprocess.run(
        [binary, "--file", str(COMPOSE), "config", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "export DOCKER_GID=$(stat -c %g /var/run/docker.sock) first" in refused.stderr


@pytest.mark.promtool
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool (Debian package prometheus)", needs="promtool")
    assert promtool is not None
    config = load(ROOT / "deploy/prometheus.yml")
    # Where the compose file mounts alerts/rules.yml, point at the repository's copy.
    config["rule_files"] = [str(ROOT / "alerts/rules.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(copy)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
