"""Which subnets the API may give a vpc network: a configured pool, never the host's own.

A vpc network is an engine-wide bridge, and its subnet becomes a route on the
host: a subnet over the host's LAN, its default gateway, loopback or
link-local would cut the host (or the engine) off. So a subnet must lie in
the pool the operator configured (``--api.vpc-subnet-pool``), the pool
itself must miss every reserved range (checked when the settings load), and
at each request the subnet must miss every route the host has then and every
subnet the engine's networks already use (checked by the driver).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import PolicyRefusedError

#: The setting holding the pool (``config.flag_name("api_vpc_subnet_pool")``,
#: spelled out here because config imports this module).
POOL_SETTING = "--api.vpc-subnet-pool"
#: The label on every network the driver makes; its value is the subnet.
VPC_LABEL = "io.sysinner.exporter.vpc"
#: The request field every refusal names.
FIELD = "vpc_subnet"

#: Ranges no vpc subnet may overlap, whatever the pool says (RFC 6890).
RESERVED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved and broadcast (240.0.0.0/4)"),
)


def reserved_overlap(net: ipaddress.IPv4Network) -> str | None:
    """Return what reserved range ``net`` overlaps (or is the default route), else None."""
    if net.prefixlen == 0:
        return "the default route (0.0.0.0/0)"
    for reserved, what in RESERVED:
        if net.overlaps(reserved):
            return what
    return None


def parse_pool(entries: Iterable[str]) -> list[ipaddress.IPv4Network]:
    """Return the pool's networks; ValueError naming an entry that is malformed or reserved."""
    pool = []
    for entry in entries:
        try:
            net = ipaddress.IPv4Network(entry, strict=True)
        except ValueError as e:
            raise ValueError(f"{entry!r} is not an IPv4 network in CIDR form: {e}") from e
        what = reserved_overlap(net)
        if what is not None:
            raise ValueError(f"{entry} overlaps {what}")
        pool.append(net)
    return pool


@dataclass(frozen=True)
class HostRoute:
    """One line of the kernel's IPv4 routing table."""

    interface: str
    destination: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None


def _le_address(hex_text: str) -> ipaddress.IPv4Address:
    # /proc/net/route writes addresses as the host-order u32 in hex: little-endian here.
    return ipaddress.IPv4Address(int(hex_text, 16).to_bytes(4, "little"))


def parse_routes(text: str) -> list[HostRoute]:
    """Return the routes of a ``/proc/net/route`` text (header skipped, bad lines ignored)."""
    routes = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            dest, gateway, mask = (_le_address(cols[i]) for i in (1, 2, 7))
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        routes.append(HostRoute(cols[0], net, None if int(gateway) == 0 else gateway))
    return routes


def read_routes(path: Path) -> list[HostRoute]:
    """Return the host's IPv4 routes from ``path`` (``/proc/net/route``)."""
    return parse_routes(path.read_text(encoding="ascii", errors="replace"))


def refuse(message: str, status: int = 422) -> PolicyRefusedError:
    """Return the refusal of a vpc_subnet, naming the field and the pool's setting."""
    return PolicyRefusedError(FIELD, f"{message} (see {POOL_SETTING})", status=status)


def check_new_subnet(
    subnet: ipaddress.IPv4Network,
    pool: Sequence[ipaddress.IPv4Network],
    routes: Sequence[HostRoute],
    engine_subnets: Sequence[ipaddress.IPv4Network],
) -> None:
    """Raise PolicyRefusedError unless a new network of ``subnet`` is safe to make now.

    Safe: inside the pool, off every reserved range, off every host route
    (the default route's gateway included) and off every engine network.
    """
    check_in_pool(subnet, pool)
    for route in routes:
        if route.destination.prefixlen and subnet.overlaps(route.destination):
            raise refuse(
                f"{subnet} overlaps the host's route to {route.destination} ({route.interface})"
            )
    for route in routes:
        # Every subnet "overlaps" the default route; its gateway must stay reachable.
        if (
            not route.destination.prefixlen
            and route.gateway is not None
            and route.gateway in subnet
        ):
            raise refuse(
                f"{subnet} holds the host's default gateway {route.gateway} ({route.interface})"
            )
    for used in engine_subnets:
        if subnet.overlaps(used):
            raise refuse(f"{subnet} overlaps {used}, which an engine network uses", status=409)


def check_in_pool(subnet: ipaddress.IPv4Network, pool: Sequence[ipaddress.IPv4Network]) -> None:
    """Raise PolicyRefusedError unless ``subnet`` lies inside the pool and off reserved ranges."""
    if not pool:
        raise refuse("vpc networks are off on this host: no subnet pool is configured", 403)
    what = reserved_overlap(subnet)
    if what is not None:
        raise refuse(f"{subnet} overlaps {what}")
    if not any(subnet.subnet_of(entry) for entry in pool):
        shown = ", ".join(str(p) for p in pool)
        raise refuse(f"{subnet} is not inside the subnet pool ({shown})")
