"""The cgroup stats source on recorded v1 and v2 trees, and how the entry point picks a source."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from exporter import __main__ as entry
from exporter.cgroupfs import container_cgroup_path
from exporter.config import Settings, StatsSourceKind
from exporter.drivers.docker import DockerDriver
from exporter.drivers.docker_json import stats_from_engine
from exporter.errors import ConfigError, NotFoundError
from exporter.sources.base import (
    DriverStatsSource,
    FallbackStatsSource,
)
from exporter.sources.cgroup import CgroupStatsSource, cgroup_files_readable
from tests.support.cgroup_data import (
    DATA,
    OTHER_ID,
    V1_ID,
    V1_PID,
    V2_SYSTEMD_ID,
    V2_SYSTEMD_PID,
)
from tests.support.cgroup_source import (
    V2_HOSTNET_ID,
    V2_HOSTNET_PID,
    fields,
    info,
    read,
    sample,
    source,
    tree,
    v1_systemd,
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
