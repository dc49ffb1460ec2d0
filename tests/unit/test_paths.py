from __future__ import annotations

import pytest

from exporter import paths
from exporter.paths import HostSourcePaths, PodPaths, container_cmd


def test_in_container_constants_are_the_seeds() -> None:
    assert paths.HOME_DIR == "/home/action"
    assert paths.SYSINNER_DIR == "/home/action/.sysinner"
    assert paths.APP_INSTANCE_FILE == "/home/action/.sysinner/app_instance.json"
    assert paths.ININIT_FILE == "/home/action/.sysinner/ininit"
    assert paths.INAGENT_FILE == "/home/action/.sysinner/inagent"
    assert paths.INAGENT_SOCK == "unix:/home/action/.sysinner/inagent.sock"
    assert paths.CONTAINER_ENTRYPOINT == "/bin/sh"
    assert paths.INIT_DIRS == (
        "/home/action/local/bin",
        "/home/action/local/share",
        "/home/action/local/profile.d",
        "/home/action/var/tmp",
        "/home/action/var/log",
        "/home/action/.ssh",
    )


def test_container_cmd() -> None:
    assert container_cmd() == ["/bin/sh", "/home/action/.sysinner/ininit"]
    # A fresh list each time: a caller appending to it must not change the next one.
    container_cmd().append("x")
    assert container_cmd() == ["/bin/sh", "/home/action/.sysinner/ininit"]


def test_host_source_paths() -> None:
    src = HostSourcePaths("/opt/sysinner/innerstack")
    assert src.ininit_src() == "/opt/sysinner/innerstack/cmd/inagent/ininit"
    assert src.inagent_src("amd64") == "/opt/sysinner/innerstack/bin/inagent-linux-amd64"
    assert src.inagent_src("arm64") == "/opt/sysinner/innerstack/bin/inagent-linux-arm64"


def test_pod_paths() -> None:
    pod = PodPaths("/opt/sysinner/pods", "app-abc123def456-0001")
    base = "/opt/sysinner/pods/app-abc123def456-0001"
    assert pod.container_pod_dir() == base
    assert pod.home_dir() == f"{base}/home"
    assert pod.opt_dir() == f"{base}/opt"
    # The sysinner dir is the home's sibling, not inside it (see exporter.paths).
    assert pod.sysinner_dir() == f"{base}/sysinner"
    assert pod.app_instance_file() == f"{base}/sysinner/app_instance.json"
    assert pod.ininit_file() == f"{base}/sysinner/ininit"
    assert pod.inagent_file() == f"{base}/sysinner/inagent"
    assert pod.instance_record_file() == f"{base}/app_instance.json"
    assert pod.legacy_sysinner_dir() == f"{base}/home/action/.sysinner"


def test_pod_paths_mirror_the_in_container_layout() -> None:
    pod = PodPaths("/srv/pods", "app-abc123def456-0001")
    assert pod.host_path(paths.SYSINNER_DIR) == pod.sysinner_dir()
    assert pod.host_path(paths.APP_INSTANCE_FILE) == pod.app_instance_file()
    assert pod.host_path(paths.ININIT_FILE) == pod.ininit_file()
    assert pod.host_path(paths.INAGENT_FILE) == pod.inagent_file()
    assert pod.host_path("/home") == pod.home_dir()
    for d in paths.INIT_DIRS:
        assert pod.host_path(d) == pod.home_dir() + d.removeprefix("/home")


@pytest.mark.parametrize("outside", ["/etc/passwd", "/home/../etc", "/homework", "/"])
def test_host_path_refuses_paths_outside_home(outside: str) -> None:
    pod = PodPaths("/srv/pods", "app-abc123def456-0001")
    with pytest.raises(ValueError, match="container_path"):
        pod.host_path(outside)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "/abs", "x\0y"])
def test_pod_paths_refuse_names_that_are_not_one_component(name: str) -> None:
    with pytest.raises(ValueError, match="container_name"):
        PodPaths("/srv/pods", name)


def test_pod_paths_accept_dotted_names() -> None:
    assert PodPaths("/srv/pods", "..x").container_pod_dir() == "/srv/pods/..x"


def test_host_path_keeps_names_that_start_with_two_dots() -> None:
    pod = PodPaths("/srv/pods", "app-abc123def456-0001")
    assert pod.host_path("/home/..cache") == pod.home_dir() + "/..cache"
    assert pod.host_path("/home/action/../action/x") == pod.home_dir() + "/action/x"


def test_host_path_refuses_relative_paths_whatever_the_cwd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/")
    pod = PodPaths("/srv/pods", "app-abc123def456-0001")
    with pytest.raises(ValueError, match="container_path"):
        pod.host_path("home/action")
