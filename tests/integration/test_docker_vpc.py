"""The Docker driver's vpc networks on the real engine: an address in a subnet, a shared network."""

from __future__ import annotations

import ipaddress
import random

import docker
import pytest

from exporter.drivers import docker_json as dj
from exporter.drivers.docker import DockerDriver
from tests.support.engine import (
    TEST_VPC_POOL,
    ContainerFactory,
    new_app_id,
    new_container_name,
    sdk_exec,
)


def free_subnet(sdk: docker.DockerClient) -> str:
    """Return a /24 in the tests' vpc pool that no engine network overlaps."""
    taken = [
        ipaddress.ip_network(cfg["Subnet"])
        for net in sdk.api.networks()
        for cfg in ((net.get("IPAM") or {}).get("Config") or [])
        if cfg.get("Subnet")
    ]
    while True:
        pool = ipaddress.ip_network(TEST_VPC_POOL)
        subnet = random.choice(list(pool.subnets(new_prefix=24)))
        if not any(subnet.overlaps(t) for t in taken if t.version == 4):
            return str(subnet)


@pytest.mark.engine
async def test_vpc_address_and_shared_network(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    subnet = free_subnet(sdk)
    net = ipaddress.ip_network(subnet)
    first_ip, second_ip = str(net.network_address + 10), str(net.network_address + 11)
    names = [new_container_name(1), new_container_name(2)]
    try:
        a = await make_container(name=names[0], vpc_subnet=subnet, vpc_ipv4=first_ip)
        b = await make_container(name=names[1], vpc_subnet=subnet, vpc_ipv4=second_ip)
        assert (a.ip, b.ip) == (first_ip, second_ip)

        code, out = sdk_exec(sdk, names[0], ["ip", "-4", "addr", "show"])
        assert code == 0
        assert f"inet {first_ip}/24" in out

        # One network for the subnet, made by the driver and shared by both.
        same = [
            n
            for n in sdk.api.networks()
            if any(c.get("Subnet") == subnet for c in (n.get("IPAM") or {}).get("Config") or [])
        ]
        assert [n["Name"] for n in same] == [dj.vpc_network_name(subnet)]
        for name in names:
            nets = sdk.api.inspect_container(name)["NetworkSettings"]["Networks"]
            assert list(nets) == [dj.vpc_network_name(subnet)]

        # They reach each other on it.
        code, out = sdk_exec(sdk, names[1], ["ping", "-c", "1", "-W", "2", first_ip])
        assert code == 0, out
    finally:
        # Containers first: a network with endpoints cannot be removed.
        for name in names:
            await driver.container_remove(name)
        for n in sdk.networks.list(names=[dj.vpc_network_name(subnet)]):
            n.remove()
    assert not sdk.networks.list(names=[dj.vpc_network_name(subnet)])


@pytest.mark.engine
async def test_vpc_uses_an_existing_network_of_that_subnet(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    subnet = free_subnet(sdk)
    own = sdk.networks.create(
        f"test-net-{new_app_id()}",
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]),
    )
    name = new_container_name()
    try:
        address = str(ipaddress.ip_network(subnet).network_address + 20)
        info = await make_container(name=name, vpc_subnet=subnet, vpc_ipv4=address)
        assert info.ip == address
        nets = sdk.api.inspect_container(name)["NetworkSettings"]["Networks"]
        assert list(nets) == [own.name]
        assert not sdk.networks.list(names=[dj.vpc_network_name(subnet)])
    finally:
        await driver.container_remove(name)
        own.remove()
