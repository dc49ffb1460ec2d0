"""The cgroup stats source on recorded v1 and v2 trees, and how the entry point picks a source."""

from __future__ import annotations

import json
import logging
import resource
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter import wiring
from exporter.api import create_app
from exporter.cgroupfs import container_cgroup_path
from exporter.config import Settings, StatsSourceKind
from exporter.confinement import MountPolicy
from exporter.drivers.docker import DockerDriver
from exporter.drivers.docker_json import stats_from_engine
from exporter.errors import ConfigError, NotFoundError
from exporter.metrics import build_registry
from exporter.naming import NamingScheme
from exporter.poller import Poller
from exporter.sources import cgroup as cgroup_module
from exporter.sources.base import (
    DriverStatsSource,
    FallbackStatsSource,
)
from exporter.sources.cgroup import CgroupStatsSource, cgroup_files_readable
from exporter.testing import FakeDriver
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
    # Swap and OOM kills are the kernel's to tell: the engine's answer has neither.
    only_files = {"cpu_total_usage": 0, "memory_swap": None, "oom_events": None}
    assert (got.memory_swap, got.oom_events) == (0, 0)
    assert (engine.memory_swap, engine.oom_events) == (None, None)
    assert fields(got) | only_files == fields(engine) | only_files
    # The new figures are the recording's, not defaults that happen to agree.
    assert got.memory_max_usage == 3_829_760
    assert got.memory_rss == 106_496
    assert (got.net_rx_packets, got.net_tx_packets) == (12, 6)
    assert (got.cpu_periods, got.cpu_throttled_periods, got.cpu_throttled_time) == (0, 0, 0)
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
        "memory_rss": 5_373_952,
        "memory_swap": 1_048_576,
        "memory_mapped_file": 1_990_656,
        "memory_failcnt": None,  # v2 has none
        "memory_max_usage": 41_943_040,
        "cpu_periods": 0,
        "cpu_throttled_periods": 0,
        "cpu_throttled_time": 0,
        "net_rx_packets": 1290 + 64,
        "net_tx_packets": 1011 + 32,
        "net_rx_errors": 0,
        "net_tx_errors": 0,
        "net_rx_dropped": 1,
        "net_tx_dropped": 0,
        "oom_events": 2,
    }


async def test_v2_host_network_counts_no_traffic_and_empty_io_stat_is_zero() -> None:
    results = await read(DATA / "v2", info(V2_HOSTNET_ID, V2_HOSTNET_PID))
    got = sample(results[V2_HOSTNET_ID])
    # Its net/dev is the host's (lo and ens3): the engine reports no networks for it.
    assert (got.net_rx_bytes, got.net_tx_bytes) == (0, 0)
    # ...so no packet counters at all, rather than zeros it cannot know.
    assert got.net_rx_packets is None
    assert got.net_tx_dropped is None
    # A kernel without memory.peak, swap accounting or memory.events: absent, not 0.
    assert (got.memory_max_usage, got.memory_swap, got.oom_events) == (None, None, None)
    assert got.memory_rss == 602_112
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
        chosen = wiring.build_stats_source(_settings(kind, DATA / layout), driver)
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
    chosen = wiring.build_stats_source(_settings(StatsSourceKind.AUTO, root), DockerDriver())
    results = await chosen.read_many([info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)])
    assert sample(results[V2_SYSTEMD_ID]).cpu_total_usage == 5_123_456_000


def test_forcing_cgroup_without_readable_files_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"stats\.source=cgroup"):
        wiring.build_stats_source(
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


async def test_disabled_groups_spare_their_optional_files(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    src = CgroupStatsSource(
        root / "proc", root / "sys/fs/cgroup", disabled_groups=("cpu", "memory", "oom")
    )
    got = sample((await src.read_many([info(V1_ID, V1_PID)]))[V1_ID])
    assert src.held_files == 8  # net/dev, cgroup and the six required files only
    assert (got.cpu_periods, got.memory_max_usage, got.memory_failcnt, got.oom_events) == (
        None,
        None,
        None,
        None,
    )
    full = sample((await read(DATA / "v1", info(V1_ID, V1_PID)))[V1_ID])
    assert got.memory_usage == full.memory_usage  # the rest is read as ever


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert cgroup_module.held_files_budget() == lowered - lowered // 2
        raised, reported_hard = cgroup_module.raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        expected = (1 << 20) if hard == resource.RLIM_INFINITY else hard
        assert (raised, reported_hard) == (expected, expected)
        # Sized from the raised limit, a reserve left for connections.
        assert cgroup_module.held_files_budget() == raised - min(
            raised // 2, cgroup_module.RESERVED_FDS
        )
        assert CgroupStatsSource().held_files_budget == cgroup_module.held_files_budget()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_held_files_and_their_budget_are_on_readyz_and_metrics(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    fake = FakeDriver()
    fake.add("app-0123abcd-0001", id=V2_HOSTNET_ID, pid=V2_HOSTNET_PID)
    src = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=100)
    poller = Poller(fake, FallbackStatsSource(src, DriverStatsSource(fake)), naming=NamingScheme())
    await poller.poll_once()
    assert poller.held_files == 6
    app = create_app(
        settings=Settings(),
        driver=fake,
        poller=poller,
        registry=build_registry(poller),
        poll_in_background=False,
        api_token=None,
        mount_policy=MountPolicy([]),
    )
    async with TestClient(TestServer(app)) as client:
        doc = await (await client.get("/readyz")).json()
        assert (doc["held_files"], doc["held_files_budget"]) == (6, 100)
        text = await (await client.get("/metrics")).text()
    assert "sysinner_exporter_held_files 6.0" in text
    assert "sysinner_exporter_held_files_budget 100.0" in text
    src.close()
