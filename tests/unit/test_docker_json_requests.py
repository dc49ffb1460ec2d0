"""What the driver sends the engine: container create bodies, and image references split to pull."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.drivers import docker_json as dj
from exporter.models import ContainerCreateOptions


def options(**changes: Any) -> ContainerCreateOptions:
    base: dict[str, Any] = {
        "name": "app-abc123def456-0001",
        "image": "local/busybox:latest",
        "cmd": ["/bin/sh", "/home/action/.sysinner/ininit"],
        "env": ["FOO=bar"],
        "labels": {"io.sysinner.app": "abc123def456"},
        "hostname": "web1",
        "cpu_limit": 1500,
        "memory_limit": 128 * 1024 * 1024,
        "ports": [
            {"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80},
            {"container_port": 53, "protocol": "udp"},
        ],
        "mounts": [
            {"host_path": "/srv/pods/a/home", "container_path": "/home"},
            {"host_path": "/srv/share", "container_path": "/opt/share", "read_only": True},
        ],
        "restart_policy": "on-failure",
        "dns_servers": ["10.0.0.53"],
    }
    return ContainerCreateOptions.model_validate({**base, **changes})


def test_create_body() -> None:
    body = dj.create_body(options())
    host = body["HostConfig"]
    assert body["Image"] == "local/busybox:latest"
    assert body["Entrypoint"] == ["/bin/sh", "/home/action/.sysinner/ininit"]
    assert body["Cmd"] == []
    assert body["Env"] == ["FOO=bar"]
    assert body["Labels"] == {"io.sysinner.app": "abc123def456"}
    assert body["Hostname"] == "web1"
    assert host["NanoCpus"] == 1500 * 1_000_000
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
    assert host["RestartPolicy"] == {"Name": "on-failure"}
    # Mounts, not Binds: the engine refuses a missing source instead of making it as root.
    assert "Binds" not in host
    assert host["Mounts"] == [
        {"Type": "bind", "Source": "/srv/pods/a/home", "Target": "/home", "ReadOnly": False},
        {"Type": "bind", "Source": "/srv/share", "Target": "/opt/share", "ReadOnly": True},
    ]
    assert host["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "", "HostPort": ""}],
    }
    assert body["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert host["Dns"] == ["10.0.0.53"]
    assert "NetworkMode" not in host
    assert "NetworkingConfig" not in body
    json.dumps(body)  # the body goes over the wire as JSON


def test_create_body_without_limits_or_cmd_sets_none() -> None:
    body = dj.create_body(ContainerCreateOptions(name="app-abc123def456-0001", image="busybox"))
    host = body["HostConfig"]
    for key in ("NanoCpus", "Memory", "MemorySwap"):
        assert key not in host
    assert "Entrypoint" not in body
    assert "Cmd" not in body  # the image's own command runs
    assert "Hostname" not in body
    assert host["RestartPolicy"] == {"Name": "no"}


def test_create_body_on_a_vpc_network() -> None:
    opts = options(vpc_subnet="10.231.0.0/24", vpc_ipv4="10.231.0.10")
    net = dj.vpc_network_name("10.231.0.0/24")
    assert net == "sysinner-vpc-10.231.0.0-24"
    body = dj.create_body(opts, net)
    assert body["HostConfig"]["NetworkMode"] == net
    assert body["NetworkingConfig"] == {
        "EndpointsConfig": {net: {"IPAMConfig": {"IPv4Address": "10.231.0.10"}}}
    }


def test_create_body_on_a_network_without_fixed_address() -> None:
    body = dj.create_body(options(vpc_subnet="10.231.0.0/24"), "mynet")
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"mynet": {}}}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", ("busybox", "latest")),
        ("busybox:1.36", ("busybox", "1.36")),
        ("local/busybox:latest", ("local/busybox", "latest")),
        ("127.0.0.1:5000/test/busybox", ("127.0.0.1:5000/test/busybox", "latest")),
        ("127.0.0.1:5000/test/busybox:v2", ("127.0.0.1:5000/test/busybox", "v2")),
        ("registry.example:443/a/b/c:tag", ("registry.example:443/a/b/c", "tag")),
        (
            "127.0.0.1:5000/test/busybox@sha256:" + "a" * 64,
            ("127.0.0.1:5000/test/busybox", "sha256:" + "a" * 64),
        ),
    ],
)
def test_split_image_reference(image: str, expected: tuple[str, str]) -> None:
    assert dj.split_image_reference(image) == expected
