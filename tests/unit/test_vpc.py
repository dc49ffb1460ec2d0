"""vpc subnet policy: the pool, the host's routes as /proc/net/route writes them, the checks."""

from __future__ import annotations

import ipaddress

import pytest

from exporter.config import flag_name
from exporter.errors import PolicyRefusedError
from exporter.vpc import POOL_SETTING, check_in_pool, check_new_subnet, parse_pool, parse_routes

# This machine's table: default via 192.0.2.1 on eth0, docker0, the LAN, a bridge.
ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
br-79476a5c8a15\t0007FB0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
garbage line
"""

Net = ipaddress.IPv4Network


def test_routes_are_read_little_endian() -> None:
    routes = parse_routes(ROUTES)
    assert [(r.interface, str(r.destination), str(r.gateway)) for r in routes] == [
        ("eth0", "0.0.0.0/0", "192.0.2.1"),
        ("docker0", "172.17.0.0/16", "None"),
        ("eth0", "192.0.2.0/24", "None"),
        ("br-79476a5c8a15", "10.251.7.0/24", "None"),
    ]


def test_the_setting_named_is_the_pool_flag() -> None:
    assert flag_name("api_vpc_subnet_pool") == POOL_SETTING


@pytest.mark.parametrize(
    "entry",
    [
        "0.0.0.0/0",
        "0.0.0.0/1",
        "127.0.0.0/8",
        "127.1.0.0/16",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "239.1.0.0/16",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "0.1.0.0/16",
        "10.0.0.1/8",
        "fd00::/64",
        "nonsense",
    ],
)
def test_pool_entries_over_reserved_ranges_or_malformed_are_refused(entry: str) -> None:
    with pytest.raises(
        ValueError, match=entry.split("/")[0] if entry != "nonsense" else "nonsense"
    ):
        parse_pool([entry])


def test_pool_of_private_ranges_is_kept() -> None:
    assert parse_pool(["10.64.0.0/16", "172.30.0.0/15"]) == [
        Net("10.64.0.0/16"),
        Net("172.30.0.0/15"),
    ]


def refused(
    subnet: str, pool: list[str], routes: str = ROUTES, engine: tuple[str, ...] = ()
) -> PolicyRefusedError:
    with pytest.raises(PolicyRefusedError) as caught:
        check_new_subnet(
            Net(subnet), [Net(p) for p in pool], parse_routes(routes), [Net(e) for e in engine]
        )
    assert caught.value.field == "vpc_subnet"
    assert POOL_SETTING in caught.value.message
    return caught.value


def test_no_pool_refuses_every_subnet() -> None:
    assert refused("10.64.1.0/24", []).status == 403


def test_outside_the_pool_is_refused() -> None:
    assert "not inside" in refused("10.65.0.0/24", ["10.64.0.0/16"]).message
    # Wider than its pool entry is outside it too.
    assert "not inside" in refused("10.64.0.0/15", ["10.64.0.0/16"]).message


@pytest.mark.parametrize(
    ("subnet", "why"),
    [
        ("192.0.2.0/24", "route to 192.0.2.0/24 (eth0)"),
        ("192.0.2.128/25", "route to 192.0.2.0/24"),
        ("192.0.0.0/16", "route to 192.0.2.0/24"),
        ("172.17.3.0/24", "route to 172.17.0.0/16 (docker0)"),
        ("10.251.7.0/25", "route to 10.251.7.0/24"),
    ],
)
def test_the_host_routes_are_refused_even_inside_the_pool(subnet: str, why: str) -> None:
    pool = ["192.0.0.0/16", "172.16.0.0/12", "10.0.0.0/8"]
    assert why in refused(subnet, pool).message


def test_a_subnet_holding_the_default_gateway_is_refused() -> None:
    # The gateway outside every other route: only the default route's own check catches it.
    table = (
        ROUTES.splitlines()[0] + "\neth0\t00000000\t0100400A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert "default gateway 10.64.0.1" in refused("10.64.0.0/24", ["10.64.0.0/16"], table).message
    check_new_subnet(Net("10.64.1.0/24"), [Net("10.64.0.0/16")], parse_routes(table), [])


def test_an_engine_network_overlapping_is_a_conflict() -> None:
    err = refused("10.64.1.0/24", ["10.64.0.0/16"], engine=("10.64.0.0/23",))
    assert err.status == 409


def test_a_free_pool_subnet_passes() -> None:
    check_new_subnet(
        Net("10.64.1.0/24"), [Net("10.64.0.0/16")], parse_routes(ROUTES), [Net("172.17.0.0/16")]
    )
    check_in_pool(Net("10.64.1.0/24"), [Net("10.64.0.0/16")])
