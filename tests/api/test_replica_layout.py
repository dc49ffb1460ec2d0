"""The pod dir layout and its writes: siblings, walks from the pod base, our own record."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from exporter.confinement import Forbidden, MountPolicy
from exporter.models import AppReplicaInstance
from exporter.paths import HostSourcePaths, PodPaths
from exporter.replica_deploy import (
    ReplicaDeployer,
    prepare_pod_dir,
    read_app_instance,
    replica_create_options,
    write_app_instance,
)
from exporter.replicas import AppReplicaInstanceList
from exporter.testing import FakeDriver
from tests.support.api import replica

APP = "0a1b2c3d4e5f"
NAME = "app-0a1b2c3d4e5f-0003"


@pytest.fixture
def sources(tmp_path: Path) -> HostSourcePaths:
    prefix = tmp_path / "innerstack"
    (prefix / "cmd" / "inagent").mkdir(parents=True)
    (prefix / "cmd" / "inagent" / "ininit").write_text("#!/bin/sh\n")
    return HostSourcePaths(str(prefix))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    made = tmp_path / "outside"
    made.mkdir()
    return made


def pod(tmp_path: Path) -> PodPaths:
    return PodPaths(str(tmp_path / "pods"), NAME)


@pytest.mark.parametrize("planted", ["pod dir", "sysinner", "home"])
def test_a_pod_dir_component_that_is_a_symlink_is_refused(
    tmp_path: Path, sources: HostSourcePaths, outside: Path, planted: str
) -> None:
    # e.g. left by a container the API made with a mount of the pod dir before the replica.
    paths = pod(tmp_path)
    link = {
        "pod dir": Path(paths.container_pod_dir()),
        "sysinner": Path(paths.sysinner_dir()),
        "home": Path(paths.home_dir()),
    }[planted]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    with pytest.raises(Forbidden, match="a symlink"):
        prepare_pod_dir(paths, sources, "amd64")
    if planted != "home":  # the instance is never written into home
        with pytest.raises(Forbidden, match="a symlink"):
            write_app_instance(paths, b"{}")
    assert os.listdir(outside) == []


def test_a_pod_dir_the_exporter_does_not_own_is_refused(
    tmp_path: Path, sources: HostSourcePaths
) -> None:
    paths = pod(tmp_path)
    body = AppReplicaInstance.model_validate(replica(APP, 3, 7)).model_dump_json().encode()
    write_app_instance(paths, body)
    pod_dir = Path(paths.container_pod_dir())
    stranger = os.geteuid() + 4242
    os.chown(pod_dir, stranger, -1)
    before = sorted(p.name for p in pod_dir.rglob("*"))
    for act in (
        lambda: prepare_pod_dir(paths, sources, "amd64"),
        lambda: write_app_instance(paths, b"{}"),
        lambda: read_app_instance(paths),
    ):
        with pytest.raises(Forbidden, match=f"owned by uid {stranger}, not by the exporter"):
            act()
    assert sorted(p.name for p in pod_dir.rglob("*")) == before
    assert Path(paths.instance_record_file()).read_bytes() == body
    os.chown(pod_dir, os.geteuid(), -1)
    assert read_app_instance(paths) == body


def test_an_odd_home_costs_the_tenant_its_init_dirs_not_its_deploy(
    tmp_path: Path, sources: HostSourcePaths, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = pod(tmp_path)
    Path(paths.home_dir()).mkdir(parents=True)
    (Path(paths.home_dir()) / "action").symlink_to(outside)
    with caplog.at_level(logging.WARNING):
        prepare_pod_dir(paths, sources, "amd64")
    assert os.listdir(outside) == []
    assert "init dir /home/action/local/bin not made" in caplog.text
    assert Path(paths.ininit_file()).read_text() == "#!/bin/sh\n"


def test_the_exporter_trusts_its_own_record_not_the_tenants_copy(tmp_path: Path) -> None:
    paths = pod(tmp_path)
    body = AppReplicaInstance.model_validate(replica(APP, 3, 7)).model_dump_json().encode()
    write_app_instance(paths, body)
    # The tenant rewrites its copy (a higher revision, or a link to a host secret).
    tenant_copy = Path(paths.app_instance_file())
    tenant_copy.unlink()
    tenant_copy.symlink_to("/etc/shadow")
    assert read_app_instance(paths) == body
    Path(paths.instance_record_file()).unlink()
    assert read_app_instance(paths) is None  # the old layout's pods: deployed again


async def test_a_replica_running_with_the_old_nested_layout_is_refused_with_the_way_out(
    tmp_path: Path,
) -> None:
    paths = pod(tmp_path)
    driver = FakeDriver()
    policy = MountPolicy([str(tmp_path / "pods")], pod_base=str(tmp_path / "pods"))
    deployer = ReplicaDeployer(
        driver,
        AppReplicaInstanceList(),
        pod_base=tmp_path / "pods",
        host_prefix=tmp_path / "innerstack",
        mount_policy=policy,
    )
    driver.add(NAME, mount_sources=(paths.home_dir(), paths.legacy_sysinner_dir()))
    rep = AppReplicaInstance.model_validate(replica(APP, 3, 8))
    options = replica_create_options(rep, f"{NAME}.next", paths)
    with pytest.raises(Forbidden, match=rf"remove it \(DELETE /api/v1/containers/{NAME};"):
        await deployer._create_container(options)
    assert driver.calls["container_create"] == 0
