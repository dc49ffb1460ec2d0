"""The engine's JSON answers read into the driver's models: stats, inspect, list, timestamps."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from pydantic import TypeAdapter

from exporter.drivers import docker_json as dj
from exporter.models import (
    ContainerInfo,
    ContainerState,
    ContainerStats,
    PortBinding,
)
from tests.support.engine_data import load, ts

# -- stats -------------------------------------------------------------------


def test_stats_cgroup_v1_recording() -> None:
    raw = load("stats_v1.json")
    s = dj.stats_from_engine(raw, now=1.0)
    assert s.time == pytest.approx(ts("2026-11-29T00:10:46.357690+00:00"))
    assert s.cpu_total_usage == raw["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert s.cpu_user_usage == raw["cpu_stats"]["cpu_usage"]["usage_in_usermode"] > 0
    assert s.cpu_system_usage == raw["cpu_stats"]["cpu_usage"]["usage_in_kernelmode"] > 0
    assert s.memory_usage == raw["memory_stats"]["usage"] > 0
    assert s.memory_cache == raw["memory_stats"]["stats"]["cache"] > 0
    # The hierarchical figure, not the cgroup's own.
    assert s.memory_inactive_file == raw["memory_stats"]["stats"]["total_inactive_file"] > 0
    # Two interfaces (eth0 on the bridge, eth1 on a second network), summed.
    nets = raw["networks"]
    assert len(nets) == 2
    assert s.net_rx_bytes == nets["eth0"]["rx_bytes"] + nets["eth1"]["rx_bytes"]
    assert s.net_tx_bytes == nets["eth0"]["tx_bytes"] + nets["eth1"]["tx_bytes"]
    assert s.net_tx_bytes > nets["eth0"]["tx_bytes"] > 0
    # "Read"/"Write" in title case; Sync/Async/Total are not reads or writes.
    assert (s.blk_read_bytes, s.blk_write_bytes) == (503808, 8388608)
    assert (s.blk_read_ops, s.blk_write_ops) == (68, 8)


def test_stats_cgroup_v1_sums_block_devices() -> None:
    raw = load("stats_v1.json")
    blkio = raw["blkio_stats"]
    for key in ("io_service_bytes_recursive", "io_serviced_recursive"):
        second = copy.deepcopy(blkio[key])
        for e in second:
            e["minor"], e["value"] = 16, e["value"] * 10
        blkio[key] = blkio[key] + second
    s = dj.stats_from_engine(raw)
    assert (s.blk_read_bytes, s.blk_write_bytes) == (503808 * 11, 8388608 * 11)
    assert (s.blk_read_ops, s.blk_write_ops) == (68 * 11, 8 * 11)


def test_stats_cgroup_v2_layout() -> None:
    raw = load("stats_v2.json")
    s = dj.stats_from_engine(raw, now=1.0)
    assert s.time == pytest.approx(ts("2026-11-29T00:12:05.512744+00:00"))
    assert s.cpu_total_usage == 612473000
    assert (s.cpu_user_usage, s.cpu_system_usage) == (571196000, 41277000)
    assert s.memory_usage == 2904064
    assert s.memory_cache == raw["memory_stats"]["stats"]["file"] == 1101824
    assert s.memory_inactive_file == raw["memory_stats"]["stats"]["inactive_file"] == 630784
    assert s.memory_working_set == 2904064 - 630784
    assert (s.net_rx_bytes, s.net_tx_bytes) == (1014 + 1278, 158 + 116)
    # Lowercase ops, two devices.
    assert s.blk_read_bytes == 1236992 + 4096
    assert s.blk_write_bytes == 8388608 + 2097152
    # v2 has no per-op counts: null, so zero.
    assert raw["blkio_stats"]["io_serviced_recursive"] is None
    assert (s.blk_read_ops, s.blk_write_ops) == (0, 0)


def test_stats_cgroup_v1_fills_cadvisors_memory_cpu_and_network_families() -> None:
    raw = load("stats_v1.json")
    mem, nets = raw["memory_stats"], raw["networks"]
    s = dj.stats_from_engine(raw)
    # The hierarchical figures, as cAdvisor reads them.
    assert s.memory_rss == mem["stats"]["total_rss"] > 0
    assert s.memory_mapped_file == mem["stats"]["total_mapped_file"] > 0
    assert s.memory_max_usage == mem["max_usage"] > 0
    assert s.memory_failcnt == 0  # omitted when 0 (omitempty) on v1
    throttling = raw["cpu_stats"]["throttling_data"]
    assert (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_time) == (55, 11, 476040870)
    assert s.cpu_throttled_time == throttling["throttled_time"]
    assert s.net_rx_packets == nets["eth0"]["rx_packets"] + nets["eth1"]["rx_packets"] == 28
    assert s.net_tx_packets == 5
    assert (s.net_rx_errors, s.net_tx_errors, s.net_rx_dropped, s.net_tx_dropped) == (0, 0, 0, 0)
    # The engine's answer has no swap and no OOM kills: absent, never 0.
    assert s.memory_swap is None
    assert s.oom_events is None
    raw["memory_stats"]["failcnt"] = 7
    assert dj.stats_from_engine(raw).memory_failcnt == 7


def test_stats_cgroup_v2_has_no_failcnt_or_max_usage() -> None:
    raw = load("stats_v2.json")
    s = dj.stats_from_engine(raw)
    assert s.memory_rss == raw["memory_stats"]["stats"]["anon"] == 155648
    assert s.memory_mapped_file == raw["memory_stats"]["stats"]["file_mapped"] == 405504
    assert (s.memory_failcnt, s.memory_max_usage, s.memory_swap) == (None, None, None)
    assert (s.cpu_periods, s.cpu_throttled_periods) == (24, 11)


def test_stats_op_is_case_insensitive() -> None:
    entries = [
        {"major": 8, "minor": 0, "op": "READ", "value": 1},
        {"major": 8, "minor": 0, "op": "read", "value": 2},
        {"major": 8, "minor": 0, "op": "Read", "value": 4},
        {"major": 8, "minor": 0, "op": "wRiTe", "value": 8},
        {"major": 8, "minor": 0, "op": "Total", "value": 100},
        {"major": 8, "minor": 0, "op": "discard", "value": 100},
    ]
    s = dj.stats_from_engine(
        {"blkio_stats": {"io_service_bytes_recursive": entries, "io_serviced_recursive": entries}}
    )
    assert (s.blk_read_bytes, s.blk_write_bytes) == (7, 8)
    assert (s.blk_read_ops, s.blk_write_ops) == (7, 8)


def test_stats_of_a_created_never_started_container_are_zero() -> None:
    raw = load("stats_created.json")
    assert raw["read"] == "0001-01-01T00:00:00Z"
    s = dj.stats_from_engine(raw, now=1795911111.5)
    # Go's zero time is no time: the sample is stamped when we took it.
    assert s.time == 1795911111.5
    # The engine answers zero throttling for it and no memory at all: absent, not 0.
    assert dataclasses.replace(s, time=0) == ContainerStats(
        time=0, cpu_periods=0, cpu_throttled_periods=0, cpu_throttled_time=0
    )
    assert s.memory_rss is None
    assert s.memory_max_usage is None


def test_stats_with_host_networking_have_no_network_figures() -> None:
    raw = load("stats_v1.json")
    del raw["networks"]
    s = dj.stats_from_engine(raw)
    assert (s.net_rx_bytes, s.net_tx_bytes) == (0, 0)
    assert s.net_rx_packets is None
    assert s.net_tx_dropped is None
    assert s.cpu_total_usage > 0


# -- inspect and list --------------------------------------------------------


def test_inspect_carries_what_cadvisors_families_need() -> None:
    raw = load("inspect_running.json")
    c = dj.container_from_inspect(raw)
    # A running container without a healthcheck, never restarted, default weight.
    assert (c.engine_state, c.health, c.restart_count, c.exit_code, c.oom_killed) == (
        "running",
        "",
        0,
        0,
        False,
    )
    assert c.memory_swap_limit == raw["HostConfig"]["MemorySwap"] == 64 * 1024 * 1024
    assert (c.memory_reservation, c.cpu_shares) == (0, 0)
    assert c.layer_dir == raw["GraphDriver"]["Data"]["UpperDir"]
    assert c.layer_dir.endswith("/diff")
    raw["State"].update(
        Status="restarting", ExitCode=3, OOMKilled=True, Health={"Status": "unhealthy"}
    )
    raw["RestartCount"] = 6
    raw["HostConfig"].update(MemoryReservation=32 * 1024 * 1024, CpuShares=512, MemorySwap=-1)
    c = dj.container_from_inspect(raw)
    assert c.state is ContainerState.STARTING  # the contract's folding stays for the API
    assert (c.engine_state, c.health, c.restart_count, c.exit_code, c.oom_killed) == (
        "restarting",
        "unhealthy",
        6,
        3,
        True,
    )
    assert (c.memory_reservation, c.cpu_shares, c.memory_swap_limit) == (2**25, 512, -1)
    # Kept out of the API's answers, which stay the contract's.
    dumped = TypeAdapter(ContainerInfo).dump_python(c)
    assert "health" not in dumped
    assert "restart_count" not in dumped


def test_list_entry_keeps_the_engine_state_the_contract_folds() -> None:
    entry = load("list.json")[0]
    entry["State"] = "paused"
    c = dj.container_from_list(entry)
    assert c.state is ContainerState.RUNNING
    assert c.engine_state == "paused"


def test_inspect_recording() -> None:
    raw = load("inspect_running.json")
    c = dj.container_from_inspect(raw, now=1795911200)
    assert c.id == raw["Id"]
    assert c.name == "app-0123456789ab-0001"
    assert c.image == "local/busybox:latest"
    assert c.image_id.startswith("sha256:5620ab5a")
    assert c.state is ContainerState.RUNNING
    assert c.status == "running"
    assert c.pid == 6349
    assert c.ip == "172.17.0.2"
    assert c.created == int(ts("2026-11-29T00:10:24.813460+00:00"))
    assert c.started == int(ts("2026-11-29T00:10:25.239253+00:00"))
    assert c.labels == {"io.sysinner.app": "0123456789ab"}
    assert c.cpu_limit == 500
    assert c.memory_limit == 64 * 1024 * 1024
    assert c.binds == ["/tmp/rec:/data:ro"]
    assert c.mount_sources == ("/tmp/rec",)
    assert c.ports == {
        80: PortBinding(host_ip="127.0.0.1", host_port=18080, container_port=80, protocol="tcp")
    }
    assert c.last_inspect_time == 1795911200


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("running", ContainerState.RUNNING),
        ("paused", ContainerState.RUNNING),
        ("exited", ContainerState.STOPPED),
        ("dead", ContainerState.STOPPED),
        ("created", ContainerState.CREATED),
        ("restarting", ContainerState.STARTING),
        ("removing", ContainerState.STOPPED),
    ],
)
def test_inspect_maps_state(status: str, state: ContainerState) -> None:
    raw = load("inspect_running.json")
    raw["State"]["Status"] = status
    c = dj.container_from_inspect(raw)
    assert c.state is state
    assert c.status == status
    assert dj.map_state(status) is state
    assert dj.map_state(status.upper()) is state


def test_unknown_engine_state_counts_as_stopped() -> None:
    assert dj.map_state("") is ContainerState.STOPPED
    assert dj.map_state("teleporting") is ContainerState.STOPPED


def test_inspect_of_a_stopped_container() -> None:
    raw = load("inspect_running.json")
    raw["State"].update(Status="exited", Running=False, Pid=0)
    raw["NetworkSettings"]["Ports"] = {}
    raw["NetworkSettings"]["IPAddress"] = ""
    for net in raw["NetworkSettings"]["Networks"].values():
        net["IPAddress"] = ""
    c = dj.container_from_inspect(raw)
    assert c.state is ContainerState.STOPPED
    assert (c.pid, c.ip, c.ports) == (0, "", {})
    # StartedAt keeps the last start.
    assert c.started == int(ts("2026-11-29T00:10:25.239253+00:00"))


def test_inspect_never_started_has_no_start_time() -> None:
    raw = load("inspect_running.json")
    raw["State"].update(Status="created", StartedAt="0001-01-01T00:00:00Z", Pid=0)
    assert dj.container_from_inspect(raw).started == 0


def test_inspect_ip_on_a_user_network_only() -> None:
    raw = load("inspect_running.json")
    raw["NetworkSettings"]["IPAddress"] = ""
    del raw["NetworkSettings"]["Networks"]["bridge"]
    assert dj.container_from_inspect(raw).ip == "10.231.0.2"


@pytest.mark.parametrize(
    ("host_config", "millicores"),
    [
        ({"NanoCpus": 500_000_000}, 500),
        ({"NanoCpus": 2_000_000_000, "CpuQuota": 50_000}, 2000),  # NanoCpus wins
        ({"NanoCpus": 0, "CpuQuota": 150_000, "CpuPeriod": 100_000}, 1500),
        ({"CpuQuota": 25_000, "CpuPeriod": 50_000}, 500),
        ({"CpuQuota": 50_000, "CpuPeriod": 0}, 500),  # period defaults to 100 ms
        ({"CpuQuota": -1, "CpuPeriod": 100_000}, 0),  # -1: no quota
        ({}, 0),
    ],
)
def test_cpu_millicores(host_config: dict[str, int], millicores: int) -> None:
    assert dj.cpu_millicores(host_config) == millicores
    raw = load("inspect_running.json")
    raw["HostConfig"] = {**raw["HostConfig"], "NanoCpus": 0, **host_config}
    assert dj.container_from_inspect(raw).cpu_limit == millicores


def test_inspect_ports_key_by_container_port_and_keep_protocol() -> None:
    raw = load("inspect_running.json")
    raw["NetworkSettings"]["Ports"] = {
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}, {"HostIp": "::", "HostPort": "5353"}],
        "8080/tcp": None,  # exposed, not published
    }
    c = dj.container_from_inspect(raw)
    assert c.ports == {
        53: PortBinding(host_ip="0.0.0.0", host_port=5353, container_port=53, protocol="udp")
    }


def test_list_recording() -> None:
    raw = load("list.json")
    by_name = {c.name: c for c in map(dj.container_from_list, raw)}
    running = by_name["app-0123456789ab-0001"]
    created = by_name["app-0123456789ab-0002"]
    assert running.state is ContainerState.RUNNING
    assert running.status.startswith("Up ")
    assert running.ip == "172.17.0.2"
    assert running.created == 1795911024
    assert running.image == "local/busybox:latest"
    assert running.image_id.startswith("sha256:")
    assert running.labels == {"io.sysinner.app": "0123456789ab"}
    # The mount policy checks new sources against these, from the list alone.
    assert running.mount_sources == ("/tmp/rec",)
    assert created.mount_sources == ()
    assert running.ports == {
        80: PortBinding(host_ip="127.0.0.1", host_port=18080, container_port=80)
    }
    # The list call carries no pid, start time or limits.
    assert (running.pid, running.started, running.cpu_limit, running.memory_limit) == (0, 0, 0, 0)
    assert created.state is ContainerState.CREATED
    assert (created.ip, created.ports, created.labels) == ("", {}, {})


def test_image_from_list_drops_none_tags() -> None:
    img = dj.image_from_list(
        {
            "Id": "sha256:abc",
            "RepoTags": ["<none>:<none>"],
            "RepoDigests": ["127.0.0.1:5000/test/busybox@sha256:def"],
            "Size": 2000,
            "Created": 1795911000,
            "Labels": None,
        }
    )
    assert img.repo_tags == []
    assert img.name == "127.0.0.1:5000/test/busybox"
    assert (img.size, img.created, img.labels) == (2000, 1795911000, {})
    tagged = dj.image_from_list({"Id": "sha256:1", "RepoTags": ["local/busybox:latest"]})
    assert tagged.name == "local/busybox:latest"
    assert dj.image_from_list({"Id": "sha256:2"}).name == "sha256:2"
