from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from exporter.api.lifecycle import ImagePullRequest
from exporter.models import (
    INT64_MAX,
    MAX_CPU_LIMIT_MILLICORES,
    MAX_ID,
    MIN_MEMORY_LIMIT_BYTES,
    AppReplicaInstance,
    ContainerCreateOptions,
    ContainerInfo,
    ContainerState,
    ContainerStats,
    DriverInfo,
    ImageInfo,
    MountBind,
    PortBinding,
)

GOOD: dict[str, Any] = {
    "name": "app-abc123def456-0001",
    "image": "local/busybox:latest",
    "cmd": ["/bin/sh", "/home/action/.sysinner/ininit"],
    "env": ["FOO=bar", "EMPTY="],
    "labels": {"io.sysinner.app": "abc123def456"},
    "hostname": "web-1.example",
    "cpu_limit": 500,
    "memory_limit": 64 * 1024 * 1024,
    "ports": [
        {"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80},
        {"container_port": 80, "protocol": "udp"},
    ],
    "mounts": [
        {"host_path": "/srv/pods/x/home", "container_path": "/home", "uid": 2048, "gid": 2048}
    ],
    "restart_policy": "unless-stopped",
    "dns_servers": ["10.0.0.53", "fd00::53"],
    "vpc_ipv4": "10.231.0.10",
    "vpc_subnet": "10.231.0.0/24",
}


def create(**changes: Any) -> ContainerCreateOptions:
    return ContainerCreateOptions.model_validate({**GOOD, **changes})


def rejected(field: str, **changes: Any) -> str:
    """Return the error text after asserting validation names ``field``."""
    with pytest.raises(ValidationError) as info:
        create(**changes)
    text = str(info.value)
    assert field in text, text
    return text


def test_good_options_pass_unchanged() -> None:
    opts = create()
    assert opts.name == GOOD["name"]
    assert opts.cpu_limit == 500
    assert opts.memory_limit == 64 * 1024 * 1024
    assert opts.ports[0] == PortBinding(host_ip="127.0.0.1", host_port=8080, container_port=80)
    assert opts.ports[1].protocol == "udp"
    assert opts.ports[1].host_port == 0
    assert opts.mounts[0].uid == 2048
    assert opts.mounts[0].read_only is False
    assert opts.vpc_ipv4 == "10.231.0.10"


def test_minimal_options_take_the_defaults() -> None:
    opts = ContainerCreateOptions(name="app-abc123def456-0001", image="busybox")
    assert opts.restart_policy == "no"
    assert (opts.cpu_limit, opts.memory_limit) == (0, 0)
    assert opts.cmd == opts.env == opts.ports == opts.mounts == opts.dns_servers == []
    assert opts.labels == {}


def test_docker_name_leading_slash_is_dropped() -> None:
    assert create(name="/app-abc123def456-0001").name == "app-abc123def456-0001"


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("cpu_limit", {"cpu_limit": -1}),
        ("memory_limit", {"memory_limit": -1}),
        ("memory_limit", {"memory_limit": MIN_MEMORY_LIMIT_BYTES - 1}),
        ("memory_limit", {"memory_limit": 1}),
        ("restart_policy", {"restart_policy": "sometimes"}),
        ("restart_policy", {"restart_policy": "Always"}),
        ("name", {"name": "bad name"}),
        ("name", {"name": "x"}),
        ("name", {"name": "-app"}),
        ("image", {"image": ""}),
        ("image", {"image": "busy box"}),
        ("hostname", {"hostname": "-bad-"}),
        ("hostname", {"hostname": "a" * 64}),
        ("env", {"env": ["=value"]}),
        ("env", {"env": ["FOO=a\0b"]}),
        ("labels", {"labels": {"": "x"}}),
        ("dns_servers", {"dns_servers": ["dns.example"]}),
        ("dns_servers", {"dns_servers": ["10.0.0.300"]}),
        ("vpc_subnet", {"vpc_subnet": "10.231.0.1/24"}),  # host bits set
        ("vpc_subnet", {"vpc_subnet": "fd00::/64"}),
        ("vpc_ipv4", {"vpc_ipv4": "10.231.0.300"}),
        ("vpc_ipv4", {"vpc_subnet": ""}),  # address without subnet
        ("vpc_ipv4", {"vpc_ipv4": "10.232.0.10"}),  # outside the subnet
        ("vpc_ipv4", {"vpc_ipv4": "10.231.0.0"}),  # the network address
        ("vpc_ipv4", {"vpc_ipv4": "10.231.0.255"}),  # the broadcast address
        ("ports", {"ports": [{"container_port": 80}, {"container_port": 80, "host_port": 81}]}),
        ("container_port", {"ports": [{"container_port": 0}]}),
        ("container_port", {"ports": [{"container_port": 65536}]}),
        ("host_port", {"ports": [{"container_port": 80, "host_port": 65536}]}),
        ("host_port", {"ports": [{"container_port": 80, "host_port": -1}]}),
        ("protocol", {"ports": [{"container_port": 80, "protocol": "icmp"}]}),
        ("protocol", {"ports": [{"container_port": 80, "protocol": "TCP"}]}),
        ("host_ip", {"ports": [{"container_port": 80, "host_ip": "localhost"}]}),
        ("host_ip", {"ports": [{"container_port": 80, "host_ip": "127.0.0.256"}]}),
        ("host_path", {"mounts": [{"host_path": "srv/x", "container_path": "/data"}]}),
        ("container_path", {"mounts": [{"host_path": "/srv/x", "container_path": "data"}]}),
        ("container_path", {"mounts": [{"host_path": "/srv/x", "container_path": "/"}]}),
        ("container_path", {"mounts": [{"host_path": "/srv/x", "container_path": "/a/.."}]}),
        ("host_path", {"mounts": [{"host_path": "/srv/x:rw", "container_path": "/data"}]}),
        ("uid", {"mounts": [{"host_path": "/srv/x", "container_path": "/d", "uid": -1}]}),
        # Past what the engine (int64) or chown (uid_t) can hold: 422, not 502 or 500.
        ("cpu_limit", {"cpu_limit": 2**63 // 1_000_000 + 1}),
        ("memory_limit", {"memory_limit": 2**63}),
        ("memory_limit", {"memory_limit": 2**200}),
        ("uid", {"mounts": [{"host_path": "/srv/x", "container_path": "/d", "uid": 2**32 - 1}]}),
        ("gid", {"mounts": [{"host_path": "/srv/x", "container_path": "/d", "gid": 2**64}]}),
        ("host_port", {"ports": [{"container_port": 80, "host_port": 2**64}]}),
        ("container_port", {"ports": [{"container_port": 2**64}]}),
        ("colour", {"colour": "blue"}),
        ("host_paht", {"mounts": [{"host_paht": "/x", "container_path": "/d"}]}),
    ],
)
def test_each_rule_rejects_and_names_the_field(field: str, changes: dict[str, Any]) -> None:
    rejected(field, **changes)


def test_unknown_field_is_reported_as_such() -> None:
    text = rejected("colour", colour="blue")
    assert "Extra inputs are not permitted" in text


def test_same_port_on_two_protocols_is_fine() -> None:
    opts = create(ports=[{"container_port": 53}, {"container_port": 53, "protocol": "udp"}])
    assert [p.protocol for p in opts.ports] == ["tcp", "udp"]


def test_memory_limit_at_the_engine_minimum_passes() -> None:
    assert create(memory_limit=MIN_MEMORY_LIMIT_BYTES).memory_limit == 6 * 1024 * 1024


def test_bare_models_validate_too() -> None:
    with pytest.raises(ValidationError, match="container_port"):
        PortBinding(container_port=0)
    with pytest.raises(ValidationError, match="container_path"):
        MountBind(host_path="/a", container_path="//")


def info(**changes: Any) -> ContainerInfo:
    return ContainerInfo(
        id="c0ffee",
        name="app-abc123def456-0001",
        image="local/busybox:latest",
        image_id="sha256:5620ab",
        state=ContainerState.RUNNING,
        status="running",
        pid=4242,
        ip="172.17.0.2",
        ports={80: PortBinding(host_ip="127.0.0.1", host_port=8080, container_port=80)},
        created=1795911024,
        started=1795911025,
        labels={"a": "b"},
        cpu_limit=500,
        memory_limit=67108864,
        binds=["/srv/x:/data:ro"],
        last_inspect_time=1795911030,
        **changes,
    )


def test_container_info_json_uses_the_go_tags() -> None:
    data = json.loads(TypeAdapter(ContainerInfo).dump_json(info()))
    assert set(data) == {
        "id",
        "name",
        "image",
        "image_id",
        "state",
        "status",
        "pid",
        "ip",
        "ports",
        "created",
        "started",
        "labels",
        "cpu_limit",
        "memory_limit",
        "binds",
    }
    assert data["image_id"] == "sha256:5620ab"
    assert data["memory_limit"] == 67108864
    assert data["state"] == "running"
    assert data["ports"] == {
        "80": {"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80, "protocol": "tcp"}
    }
    assert "last_inspect_time" not in TypeAdapter(ContainerInfo).dump_python(info())


def test_container_info_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        info().pid = 1  # type: ignore[misc]


def test_container_info_is_validated() -> None:
    with pytest.raises(ValidationError, match="state"):
        dataclasses.replace(info(), state="paused-ish")
    assert dataclasses.replace(info(), state="stopped").state is ContainerState.STOPPED


def test_stats_json_uses_the_go_tags() -> None:
    stats = ContainerStats(time=1.5, cpu_total_usage=7, blk_write_ops=3)
    data = json.loads(TypeAdapter(ContainerStats).dump_json(stats))
    for tag in (
        "time",
        "cpu_total_usage",
        "memory_usage",
        "memory_cache",
        "net_rx_bytes",
        "net_tx_bytes",
        "blk_read_bytes",
        "blk_write_bytes",
        "blk_read_ops",
        "blk_write_ops",
    ):
        assert tag in data
    assert data["blk_write_ops"] == 3


def test_image_and_driver_info_json_use_the_go_tags() -> None:
    image = ImageInfo(name="busybox:latest", id="sha256:1", repo_tags=["busybox:latest"])
    assert {"name", "id", "repo_tags", "repo_digests", "size", "created"} <= set(image.model_dump())
    driver = DriverInfo(name="docker", version="20.10", api_version="1.41", container_num=3)
    assert driver.model_dump()["api_version"] == "1.41"
    assert driver.model_dump()["container_num"] == 3


@pytest.mark.parametrize(
    ("usage", "inactive", "working_set"),
    [(100, 30, 70), (100, 0, 100), (0, 0, 0), (10, 30, 0)],
)
def test_memory_working_set(usage: int, inactive: int, working_set: int) -> None:
    stats = ContainerStats(time=0, memory_usage=usage, memory_inactive_file=inactive)
    assert stats.memory_working_set == working_set


def replica(revision: int, rep_id: int = 1, app: str = "abc123def456") -> AppReplicaInstance:
    return AppReplicaInstance.model_validate(
        {
            "app": {
                "id": app,
                "deploy": {"revision": revision},
                "spec": {"image": "local/busybox:latest"},
            },
            "replica": {"rep_id": rep_id},
        }
    )


def test_replica_instance() -> None:
    assert replica(7).deploy_revision == 7
    with pytest.raises(ValidationError, match="rep_id"):
        replica(1, rep_id=0x10000)
    with pytest.raises(ValidationError, match="revision"):
        replica(-1)


@pytest.mark.parametrize("image", ["busy box", "busybox\0", "busybox\n", "\tbusybox"])
def test_image_references_with_whitespace_or_nul_are_refused_wherever_given(image: str) -> None:
    with pytest.raises(ValidationError, match=r"image\n.*must not contain whitespace or NUL"):
        ContainerCreateOptions(name="app-abcdef12-0001", image=image)
    with pytest.raises(ValidationError, match=r"image\n.*must not contain whitespace or NUL"):
        ImagePullRequest(image=image)


def test_the_largest_values_the_engine_takes_pass() -> None:
    opts = create(
        cpu_limit=MAX_CPU_LIMIT_MILLICORES,
        memory_limit=INT64_MAX,
        mounts=[{"host_path": "/srv/x", "container_path": "/d", "uid": MAX_ID, "gid": MAX_ID}],
    )
    assert opts.cpu_limit * 1_000_000 <= INT64_MAX
    assert opts.mounts[0].uid == MAX_ID
