"""The cgroup stats source on copies of the recorded trees: the helpers its tests share."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, TypeVar

from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.sources.base import (
    SourcedStats,
    StatsResult,
)
from exporter.sources.cgroup import CgroupStatsSource
from tests.support.cgroup_data import (
    DATA,
    V1_ID,
    V1_PID,
    V2_CGROUPFS_ID,
    V2_CGROUPFS_PID,
    V2_SYSTEMD_ID,
)

#: The v2 cgroupfs-layout container runs on the host's network.
V2_HOSTNET_ID, V2_HOSTNET_PID = V2_CGROUPFS_ID, V2_CGROUPFS_PID
V1_SCOPE = f"/system.slice/docker-{V1_ID}.scope"
V2_SCOPE = f"sys/fs/cgroup/system.slice/docker-{V2_SYSTEMD_ID}.scope"
T = TypeVar("T")


def info(cid: str, pid: int, name: str = "c") -> ContainerInfo:
    """Return a running container ``cid`` whose main process is ``pid``."""
    return ContainerInfo(id=cid, name=name, state=ContainerState.RUNNING, pid=pid)


def tree(tmp_path: Path, layout: str) -> Path:
    """Return a private copy of a recorded tree that a test may damage."""
    dest = tmp_path / layout
    shutil.copytree(DATA / layout, dest, symlinks=True)
    return dest


def source(root: Path) -> CgroupStatsSource:
    """Return the cgroup source on the tree under ``root``."""
    return CgroupStatsSource(root / "proc", root / "sys" / "fs" / "cgroup")


async def read(root: Path, *containers: ContainerInfo) -> dict[str, StatsResult]:
    """Read ``containers`` with the cgroup source on ``root``."""
    return await source(root).read_many(containers)


def sample(result: StatsResult) -> ContainerStats:
    """Return the stats of a read that the cgroup source answered."""
    assert isinstance(result, SourcedStats), result
    assert result.source == "cgroup"
    return result.stats


def error(result: StatsResult, kind: type[T]) -> T:
    """Return a read's error, which must be a ``kind``."""
    assert isinstance(result, kind), result
    return result


def fields(stats: ContainerStats) -> dict[str, Any]:
    """Return the figures of ``stats`` without the time they were read."""
    return {k: v for k, v in dataclasses.asdict(stats).items() if k != "time"}


def v1_systemd(root: Path, cpu_mount: str) -> None:
    """Rearrange a v1 copy as the systemd driver lays it out, cpu and cpuacct mounted together."""
    cg = root / "sys" / "fs" / "cgroup"
    # cpu (CFS throttling) goes where cpuacct goes when they are mounted together.
    cpu = cpu_mount if "," in cpu_mount else "cpu"
    moves = (("cpuacct", cpu_mount), ("cpu", cpu), ("memory", "memory"), ("blkio", "blkio"))
    for controller, mount in moves:
        old = cg / controller / "docker" / V1_ID
        new = cg / mount / V1_SCOPE.lstrip("/")
        new.mkdir(parents=True, exist_ok=True)
        for file in old.iterdir():
            file.rename(new / file.name)
        shutil.rmtree(cg / controller / "docker")
    (root / "proc" / str(V1_PID) / "cgroup").write_text(
        f"10:blkio:{V1_SCOPE}\n"
        f"4:memory:{V1_SCOPE}\n"
        f"3:cpu,cpuacct:{V1_SCOPE}\n"
        f"1:name=systemd:{V1_SCOPE}\n"
        f"0::{V1_SCOPE}\n"
    )
