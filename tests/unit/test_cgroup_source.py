"""The cgroup stats source on recorded v1 and v2 trees, and how the entry point picks a source."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from errno import ENODEV, ESRCH
from pathlib import Path
from typing import Any, TypeVar

import pytest

from exporter import __main__ as entry
from exporter import cgroupfs
from exporter.cgroupfs import container_cgroup_path
from exporter.config import Settings, StatsSourceKind
from exporter.drivers.docker import DockerDriver
from exporter.drivers.docker_json import stats_from_engine
from exporter.errors import ConfigError, NotFoundError, StatsUnavailableError
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.naming import NamingScheme
from exporter.poller import Poller
from exporter.sources import cgroup as cgroup_module
from exporter.sources.base import (
    DriverStatsSource,
    FallbackStatsSource,
    SourcedStats,
    StatsResult,
)
from exporter.sources.cgroup import CgroupStatsSource, cgroup_files_readable
from exporter.testing import FakeDriver
from tests.support.cgroup_data import (
    DATA,
    OTHER_ID,
    V1_ID,
    V1_PID,
    V2_CGROUPFS_ID,
    V2_CGROUPFS_PID,
    V2_SYSTEMD_ID,
    V2_SYSTEMD_PID,
)

# The v2 cgroupfs-layout container runs on the host's network.
V2_HOSTNET_ID, V2_HOSTNET_PID = V2_CGROUPFS_ID, V2_CGROUPFS_PID
V1_SCOPE = f"/system.slice/docker-{V1_ID}.scope"
V2_SCOPE = f"sys/fs/cgroup/system.slice/docker-{V2_SYSTEMD_ID}.scope"

T = TypeVar("T")


def info(cid: str, pid: int, name: str = "c") -> ContainerInfo:
    return ContainerInfo(id=cid, name=name, state=ContainerState.RUNNING, pid=pid)


def tree(tmp_path: Path, layout: str) -> Path:
    """Return a private copy of a recorded tree that a test may damage."""
    dest = tmp_path / layout
    shutil.copytree(DATA / layout, dest, symlinks=True)
    return dest


def source(root: Path) -> CgroupStatsSource:
    return CgroupStatsSource(root / "proc", root / "sys" / "fs" / "cgroup")


async def read(root: Path, *containers: ContainerInfo) -> dict[str, StatsResult]:
    return await source(root).read_many(containers)


def sample(result: StatsResult) -> ContainerStats:
    assert isinstance(result, SourcedStats), result
    assert result.source == "cgroup"
    return result.stats


def error(result: StatsResult, kind: type[T]) -> T:
    assert isinstance(result, kind), result
    return result


def fields(stats: ContainerStats) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(stats).items() if k != "time"}


def v1_systemd(root: Path, cpu_mount: str) -> None:
    """Rearrange a v1 copy as the systemd driver lays it out, cpu and cpuacct mounted together."""
    cg = root / "sys" / "fs" / "cgroup"
    for controller, mount in (("cpuacct", cpu_mount), ("memory", "memory"), ("blkio", "blkio")):
        old = cg / controller / "docker" / V1_ID
        new = cg / mount / V1_SCOPE.lstrip("/")
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        shutil.rmtree(cg / controller / "docker")
    (root / "proc" / str(V1_PID) / "cgroup").write_text(
        f"10:blkio:{V1_SCOPE}\n"
        f"4:memory:{V1_SCOPE}\n"
        f"3:cpu,cpuacct:{V1_SCOPE}\n"
        f"1:name=systemd:{V1_SCOPE}\n"
        f"0::{V1_SCOPE}\n"
    )


# -- what the kernel says, read right ---------------------------------------


async def test_v1_recording_reads_as_the_engine_answered(tmp_path: Path) -> None:
    results = await read(DATA / "v1", info(V1_ID, V1_PID))
    got = sample(results[V1_ID])
    engine = stats_from_engine(json.loads((DATA / "v1" / "engine_stats.json").read_text()))
    # The idle cgroup gained a few us of CPU between the file read and the engine's.
    assert abs(got.cpu_total_usage - engine.cpu_total_usage) < 1_000_000
    assert fields(got) | {"cpu_total_usage": 0} == fields(engine) | {"cpu_total_usage": 0}
    # And what the recording did shows: 4 MiB direct write/read, 1 MiB cached, pings.
    assert got.blk_write_bytes == 4 * 1024 * 1024
    assert got.blk_write_ops == 64
    assert got.blk_read_bytes >= 4 * 1024 * 1024
    assert got.memory_inactive_file == 1024 * 1024
    assert got.memory_cache >= 1024 * 1024
    assert got.net_rx_bytes > 0
    assert got.net_tx_bytes > 0
    assert got.cpu_user_usage + got.cpu_system_usage > 0


@pytest.mark.parametrize("cpu_mount", ["cpu,cpuacct", "cpuacct"])
async def test_v1_systemd_driver_reads_the_same(tmp_path: Path, cpu_mount: str) -> None:
    cgroupfs = sample((await read(DATA / "v1", info(V1_ID, V1_PID)))[V1_ID])
    root = tree(tmp_path, "v1")
    v1_systemd(root, cpu_mount)
    systemd = sample((await read(root, info(V1_ID, V1_PID)))[V1_ID])
    assert fields(systemd) == fields(cgroupfs)


async def test_v2_systemd_scope_on_two_networks_and_two_disks() -> None:
    results = await read(DATA / "v2", info(V2_SYSTEMD_ID, V2_SYSTEMD_PID))
    assert fields(sample(results[V2_SYSTEMD_ID])) == {
        "cpu_total_usage": 5_123_456_000,
        "cpu_user_usage": 4_100_000_000,
        "cpu_system_usage": 1_023_456_000,
        "memory_usage": 27_951_104,
        "memory_cache": 20_541_440,
        "memory_inactive_file": 15_728_640,
        "net_rx_bytes": 1_810_432 + 9_216,
        "net_tx_bytes": 268_835 + 4_096,
        "blk_read_bytes": 1_052_672 + 4_096,
        "blk_write_bytes": 20_971_520,
        "blk_read_ops": 44,
        "blk_write_ops": 160,
    }


async def test_v2_host_network_counts_no_traffic_and_empty_io_stat_is_zero() -> None:
    results = await read(DATA / "v2", info(V2_HOSTNET_ID, V2_HOSTNET_PID))
    got = sample(results[V2_HOSTNET_ID])
    # Its net/dev is the host's (lo and ens3): the engine reports no networks for it.
    assert (got.net_rx_bytes, got.net_tx_bytes) == (0, 0)
    assert (got.blk_read_bytes, got.blk_write_bytes, got.blk_read_ops) == (0, 0, 0)
    assert got.cpu_total_usage == 81_234_000
    assert got.memory_usage == 954_368


async def test_host_network_is_told_by_interfaces_when_ns_links_are_unreadable(
    tmp_path: Path,
) -> None:
    """A non-root exporter cannot readlink ns/net; the interface names still tell."""
    root = tree(tmp_path, "v2")
    for pid in (1, V2_SYSTEMD_PID, V2_HOSTNET_PID):
        (root / "proc" / str(pid) / "ns" / "net").unlink()
    results = await read(
        root, info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    )
    hostnet = sample(results[V2_HOSTNET_ID])
    assert (hostnet.net_rx_bytes, hostnet.net_tx_bytes) == (0, 0)
    bridged = sample(results[V2_SYSTEMD_ID])
    assert bridged.net_rx_bytes == 1_810_432 + 9_216
    # Without pid 1's net/dev there is nothing to compare with: count what net/dev says.
    (root / "proc/1/net/dev").unlink()
    results = await read(root, info(V2_HOSTNET_ID, V2_HOSTNET_PID))
    assert sample(results[V2_HOSTNET_ID]).net_rx_bytes > 0


async def test_v2_process_in_a_nested_cgroup_reads_the_containers_own(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    # systemd inside a container moves its init to a child cgroup.
    (root / "proc" / str(V2_SYSTEMD_PID) / "cgroup").write_text(
        f"0::/system.slice/docker-{V2_SYSTEMD_ID}.scope/init.scope\n"
    )
    nested = sample((await read(root, info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)))[V2_SYSTEMD_ID])
    assert nested.cpu_total_usage == 5_123_456_000


def test_container_cgroup_path_cuts_after_the_container() -> None:
    cid = V1_ID
    assert container_cgroup_path(f"/docker/{cid}", cid) == f"/docker/{cid}"
    assert container_cgroup_path(f"/system.slice/docker-{cid}.scope", cid) == (
        f"/system.slice/docker-{cid}.scope"
    )
    assert container_cgroup_path(f"/docker/{cid}/init.scope", cid) == f"/docker/{cid}"
    assert container_cgroup_path("/user.slice/session-3.scope", cid) is None
    assert container_cgroup_path(f"/docker/{OTHER_ID}", cid) is None


# -- what goes wrong --------------------------------------------------------


async def test_missing_file_is_unavailable_and_the_fallback_answers(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    (root / f"sys/fs/cgroup/memory/docker/{V1_ID}/memory.stat").unlink()
    c = info(V1_ID, V1_PID, name="app-0123abcd-0001")
    results = await read(root, c)
    assert "memory.stat" in str(error(results[V1_ID], StatsUnavailableError))

    fake = FakeDriver()
    fake.add(c.name, id=V1_ID, pid=V1_PID)
    fake.stats[V1_ID] = ContainerStats(time=1.0, cpu_total_usage=7)
    combo = FallbackStatsSource(source(root), DriverStatsSource(fake))
    assert combo.name == "cgroup+fake"
    answered = (await combo.read_many([c]))[V1_ID]
    assert isinstance(answered, SourcedStats)
    assert answered.source == "fake"
    assert answered.stats.cpu_total_usage == 7
    assert fake.calls["container_stats"] == 1


async def test_missing_controller_is_unavailable(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    shutil.rmtree(root / "sys/fs/cgroup/blkio")
    results = await read(root, info(V1_ID, V1_PID))
    assert "blkio" in str(error(results[V1_ID], StatsUnavailableError))


V1_DIR = f"sys/fs/cgroup/{{}}/docker/{V1_ID}"


def _half(text: str) -> str:
    return text[: len(text) // 2]


@pytest.mark.parametrize(
    ("relative", "damage"),
    [
        (V1_DIR.format("memory") + "/memory.stat", _half),
        (V1_DIR.format("memory") + "/memory.usage_in_bytes", lambda t: t.rstrip("\n")[:3]),
        (V1_DIR.format("memory") + "/memory.usage_in_bytes", lambda t: ""),
        (V1_DIR.format("cpuacct") + "/cpuacct.usage", lambda t: "12ab\n"),
        (V1_DIR.format("cpuacct") + "/cpuacct.stat", lambda t: "user 8\n"),
        (V1_DIR.format("blkio") + "/blkio.throttle.io_service_bytes_recursive", _half),
        (V1_DIR.format("blkio") + "/blkio.throttle.io_serviced_recursive", lambda t: "\n" + t),
        (
            V1_DIR.format("blkio") + "/blkio.throttle.io_serviced_recursive",
            lambda t: "".join(t.splitlines(keepends=True)[:-1]),
        ),
        (f"proc/{V1_PID}/net/dev", _half),
        (f"proc/{V1_PID}/net/dev", lambda t: t.splitlines()[2] + "\n"),
        (f"proc/{V1_PID}/cgroup", lambda t: "\n".join(t.splitlines())),
        (f"proc/{V1_PID}/cgroup", lambda t: "garbage\n"),
    ],
    ids=[
        "memory.stat-half",
        "memory.usage-cut",
        "memory.usage-empty",
        "cpuacct.usage-not-a-number",
        "cpuacct.stat-no-system",
        "blkio-bytes-half",
        "blkio-ops-blank-line",
        "blkio-ops-cut-before-total",
        "net-dev-half",
        "net-dev-no-header",
        "cgroup-no-final-newline",
        "cgroup-garbage",
    ],
)
async def test_half_written_v1_file_is_unavailable_never_a_number(
    tmp_path: Path, relative: str, damage: Callable[[str], str]
) -> None:
    root = tree(tmp_path, "v1")
    path = root / relative
    path.write_text(damage(path.read_text()))
    results = await read(root, info(V1_ID, V1_PID))
    error(results[V1_ID], StatsUnavailableError)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("io.stat", "254:0 rbytes=1052672 wbytes\n"),
        ("io.stat", "254:0 rbytes=1052672 wbytes=20971520 rios=4"),
        ("cpu.stat", ""),
        ("cpu.stat", "usage_usec 5123456\nuser_usec 41"),
        ("memory.stat", "anon 5373952\nfile 20541440\n"),
        ("memory.current", "2795"),
    ],
)
async def test_half_written_v2_file_spoils_only_its_own_container(
    tmp_path: Path, name: str, content: str
) -> None:
    root = tree(tmp_path, "v2")
    (root / V2_SCOPE / name).write_text(content)
    results = await read(
        root, info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    )
    error(results[V2_SYSTEMD_ID], StatsUnavailableError)
    assert sample(results[V2_HOSTNET_ID]).cpu_total_usage == 81_234_000


async def test_container_that_exited_between_list_and_read_is_not_found(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    shutil.rmtree(root / "proc" / str(V2_SYSTEMD_PID))
    results = await read(
        root, info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    )
    error(results[V2_SYSTEMD_ID], NotFoundError)
    sample(results[V2_HOSTNET_ID])


def _fail_reads_of(suffix: str, code: int) -> Callable[[int], bytes]:
    """Return a stand-in for pread_all that fails on held files whose path ends in ``suffix``."""
    real = cgroupfs.pread_all

    def pread_all(fd: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(code, os.strerror(code))
        return real(fd)

    return pread_all


async def test_exit_after_a_good_read_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held /proc/<pid>/cgroup answers ESRCH once its process is gone, as the kernel does."""
    src = source(tree(tmp_path, "v1"))
    c = info(V1_ID, V1_PID)
    sample((await src.read_many([c]))[V1_ID])
    assert src.held_files == 8
    monkeypatch.setattr(cgroupfs, "pread_all", _fail_reads_of(f"{V1_PID}/cgroup", ESRCH))
    error((await src.read_many([c]))[V1_ID], NotFoundError)
    assert src.held_files == 0


@pytest.mark.parametrize(("pid_dir_left", "expected"), [(False, NotFoundError), (True, None)])
async def test_cgroup_removed_under_a_held_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pid_dir_left: bool,
    expected: type[Exception] | None,
) -> None:
    """ENODEV from a held cgroup file: gone if the pid is gone, else unavailable."""
    root = tree(tmp_path, "v1")
    src = source(root)
    c = info(V1_ID, V1_PID)
    sample((await src.read_many([c]))[V1_ID])
    monkeypatch.setattr(cgroupfs, "pread_all", _fail_reads_of("memory.stat", ENODEV))
    if not pid_dir_left:
        shutil.rmtree(root / "proc" / str(V1_PID))
    error((await src.read_many([c]))[V1_ID], expected or StatsUnavailableError)


async def test_held_files_are_reread_from_the_start_each_poll(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    src = source(root)
    c = info(V1_ID, V1_PID)
    first = sample((await src.read_many([c]))[V1_ID])
    usage = root / f"sys/fs/cgroup/cpuacct/docker/{V1_ID}/cpuacct.usage"
    usage.write_text(f"{first.cpu_total_usage + 12345}\n")  # same inode, new content
    # The cgroup directories move away: only the held descriptors can still read them.
    for controller in ("cpuacct", "memory", "blkio"):
        (root / f"sys/fs/cgroup/{controller}").rename(root / f"sys/fs/cgroup/{controller}.old")
    second = sample((await src.read_many([c]))[V1_ID])
    assert second.cpu_total_usage == first.cpu_total_usage + 12345
    assert second.memory_usage == first.memory_usage
    src.close()
    assert src.held_files == 0
    # Closed, it reads by path again, and the paths are gone now.
    error((await src.read_many([c]))[V1_ID], StatsUnavailableError)


async def test_without_a_descriptor_budget_every_read_opens_by_path(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    src = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=0)
    c = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)
    assert sample((await src.read_many([c]))[V2_SYSTEMD_ID]).cpu_total_usage == 5_123_456_000
    assert src.held_files == 0
    (root / V2_SCOPE).rename(root / f"{V2_SCOPE}.old")
    error((await src.read_many([c]))[V2_SYSTEMD_ID], StatsUnavailableError)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_descriptors_of_containers_no_longer_listed_are_closed(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    baseline = _open_fds()
    src = source(root)
    a, b = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    await src.read_many([a, b])
    assert src.held_files == 12  # net/dev, cgroup and four cgroup files each
    assert _open_fds() == baseline + 12
    await src.read_many([a])
    assert src.held_files == 6
    assert _open_fds() == baseline + 6
    src.close()
    assert _open_fds() == baseline


async def test_a_budget_holds_some_containers_and_reads_the_rest_by_path(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    src = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=6)
    a, b = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    results = await src.read_many([a, b])
    assert src.held_files == 6
    assert sample(results[V2_HOSTNET_ID]).cpu_total_usage == 81_234_000
    assert sample(results[V2_SYSTEMD_ID]).cpu_total_usage == 5_123_456_000
    src.close()


async def test_poller_skips_a_vanished_container_silently(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    fake = FakeDriver()
    alive = fake.add("app-0123abcd-0001", id=V2_HOSTNET_ID, pid=V2_HOSTNET_PID)
    gone = fake.add("app-0123abcd-0002", id=V2_SYSTEMD_ID, pid=V2_SYSTEMD_PID)
    shutil.rmtree(root / "proc" / str(V2_SYSTEMD_PID))
    poller = Poller(
        fake,
        source(root),
        naming=NamingScheme(),
        process_counter=None,
    )
    snapshot = await poller.poll_once()
    by_id = {s.info.id: s for s in snapshot.containers}
    assert by_id[alive.id].stats is not None
    assert by_id[alive.id].stats_source == "cgroup"
    assert by_id[gone.id].stats is None
    assert not by_id[gone.id].stale
    assert sum(poller.health.errors.values()) == 0
    assert fake.calls["container_stats"] == 0


@pytest.mark.parametrize(
    "new_cgroup",
    [
        f"0::/docker/{OTHER_ID}\n",  # another container's init got the pid
        "0::/user.slice/user-0.slice/session-4.scope\n",  # a host process got it
    ],
)
async def test_reused_pid_gives_no_numbers_even_after_a_good_read(
    tmp_path: Path, new_cgroup: str
) -> None:
    root = tree(tmp_path, "v2")
    src = source(root)
    c = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)
    sample((await src.read_many([c]))[V2_SYSTEMD_ID])  # resolved and cached
    # The container exits, its pid goes to someone else, the old cgroup lingers.
    (root / "proc" / str(V2_SYSTEMD_PID) / "cgroup").write_text(new_cgroup)
    results = await src.read_many([c])
    assert "not the container's" in str(error(results[V2_SYSTEMD_ID], StatsUnavailableError))


async def test_reused_pid_in_v1(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    cgroup_file = root / "proc" / str(V1_PID) / "cgroup"
    cgroup_file.write_text(cgroup_file.read_text().replace(V1_ID, OTHER_ID))
    results = await read(root, info(V1_ID, V1_PID))
    error(results[V1_ID], StatsUnavailableError)


async def test_no_pid_is_unavailable() -> None:
    results = await read(DATA / "v2", info(V2_SYSTEMD_ID, 0))
    error(results[V2_SYSTEMD_ID], StatsUnavailableError)


async def test_unexpected_error_is_returned_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> ContainerStats:
        raise RuntimeError("boom")

    monkeypatch.setattr(cgroup_module, "stats_v2", broken)
    results = await read(DATA / "v2", info(V2_SYSTEMD_ID, V2_SYSTEMD_PID))
    assert "boom" in str(error(results[V2_SYSTEMD_ID], StatsUnavailableError))


async def test_all_reading_happens_in_one_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = asyncio.to_thread

    async def counting(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        calls.append(len(args[0]))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(cgroup_module.asyncio, "to_thread", counting)
    src = source(DATA / "v2")
    results = await src.read_many(
        [info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)]
    )
    assert len(results) == 2
    assert calls == [2]
    assert await src.read_many([]) == {}
    assert calls == [2]


# -- choosing a source ------------------------------------------------------


def test_probe_finds_both_trees_readable(tmp_path: Path) -> None:
    for layout in ("v1", "v2"):
        root = DATA / layout
        assert cgroup_files_readable(root / "proc", root / "sys/fs/cgroup")
    root = tree(tmp_path, "v2")
    assert not cgroup_files_readable(root / "proc", root / "nowhere")
    (root / "proc/self/cgroup").unlink()
    assert not cgroup_files_readable(root / "proc", root / "sys/fs/cgroup")


def _settings(kind: StatsSourceKind, root: Path) -> Settings:
    return Settings(stats_source=kind, proc_root=root / "proc", cgroup_root=root / "sys/fs/cgroup")


@pytest.mark.parametrize(
    ("kind", "layout", "expected"),
    [
        (StatsSourceKind.AUTO, "v1", "cgroup+docker"),
        (StatsSourceKind.AUTO, "v2", "cgroup+docker"),
        (StatsSourceKind.AUTO, "missing", "docker"),
        (StatsSourceKind.CGROUP, "v2", "cgroup"),
        (StatsSourceKind.DOCKER, "v2", "docker"),
    ],
)
def test_build_stats_source_picks_and_logs(
    caplog: pytest.LogCaptureFixture, kind: StatsSourceKind, layout: str, expected: str
) -> None:
    driver = DockerDriver()
    with caplog.at_level(logging.INFO, logger="exporter"):
        chosen = entry.build_stats_source(_settings(kind, DATA / layout), driver)
    assert chosen.name == expected
    expected_type = {
        "cgroup+docker": FallbackStatsSource,
        "cgroup": CgroupStatsSource,
        "docker": DriverStatsSource,
    }[expected]
    assert isinstance(chosen, expected_type)
    assert any(f"stats source: {expected}" in r.getMessage() for r in caplog.records)


async def test_auto_source_reads_the_tree_and_reports_its_name() -> None:
    root = DATA / "v2"
    chosen = entry.build_stats_source(_settings(StatsSourceKind.AUTO, root), DockerDriver())
    results = await chosen.read_many([info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)])
    assert sample(results[V2_SYSTEMD_ID]).cpu_total_usage == 5_123_456_000


def test_forcing_cgroup_without_readable_files_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"stats\.source=cgroup"):
        entry.build_stats_source(
            _settings(StatsSourceKind.CGROUP, DATA / "missing"), DockerDriver()
        )


async def test_no_visible_pid_at_all_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """An exporter in its own pid namespace sees none of the host's pids: say so, once."""
    src = source(DATA / "v2")
    blind = [info(V2_SYSTEMD_ID, 999_001), info(V2_HOSTNET_ID, 999_002)]
    with caplog.at_level(logging.WARNING, logger="exporter.sources.cgroup"):
        results = await src.read_many(blind)
        await src.read_many(blind)
    assert all(isinstance(r, NotFoundError) for r in results.values())
    warnings = [r.getMessage() for r in caplog.records if "pid: host" in r.getMessage()]
    assert len(warnings) == 1
    assert "none of 2 running containers' pids" in warnings[0]


async def test_pids_seen_once_mean_later_exits_are_not_blamed_on_mounts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = source(DATA / "v2")
    await src.read_many([info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)])
    with caplog.at_level(logging.WARNING, logger="exporter.sources.cgroup"):
        await src.read_many([info(V2_SYSTEMD_ID, 999_001)])
    assert not [r for r in caplog.records if "pid: host" in r.getMessage()]
