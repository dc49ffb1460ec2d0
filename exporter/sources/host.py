"""The host's totals, as cAdvisor's root container (``id="/"``): CPU, memory, network.

Read from ``<proc_root>/stat``, ``<proc_root>/meminfo`` and the host's
network namespace (``<proc_root>/1/net/dev``), so they are the host's
whichever stats source reads the containers, and whether or not the
exporter runs in a container of its own (with the host's /proc mounted).
"""

from __future__ import annotations

import os
import time

from exporter.cgroupfs import Garbled, complete, parse_int, parse_net_dev, read_file
from exporter.models import ContainerStats

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_NS_PER_SECOND = 1_000_000_000
_KIB = 1024


def parse_proc_stat(data: bytes) -> tuple[int, int, int]:
    """Return (total busy, user, system) CPU time in ns from /proc/stat's ``cpu`` line.

    Busy is every column but idle and iowait, as cAdvisor's root usage counts
    it; user includes nice.
    """
    line = complete(data, "stat").split(b"\n", 1)[0]
    fields = line.split()
    if len(fields) < 8 or fields[0] != b"cpu":
        raise Garbled("stat has no cpu line")
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        parse_int(f, "stat cpu") for f in fields[1:9]
    )
    ticks = _NS_PER_SECOND // _CLK_TCK
    busy = user + nice + system + irq + softirq + steal
    return busy * ticks, (user + nice) * ticks, system * ticks


def parse_meminfo(data: bytes, *keys: bytes) -> list[int]:
    """Return the values of ``keys`` in /proc/meminfo, in bytes."""
    values = {}
    for line in complete(data, "meminfo").splitlines():
        key, _, rest = line.partition(b":")
        values[key] = rest
    found = []
    for key in keys:
        if key not in values:
            raise Garbled(f"meminfo has no {key.decode()!r} line")
        found.append(parse_int(values[key].split()[0], f"meminfo {key.decode()}") * _KIB)
    return found


def read_host_stats(proc_root: str | os.PathLike[str] = "/proc") -> ContainerStats | None:
    """Return the host's totals, or None when /proc cannot say (the root container is left out).

    The network is pid 1's namespace; where pid 1's net/dev is hidden the
    host's totals come without network figures (absent, not 0).
    """
    proc = os.fspath(proc_root).rstrip("/") or "/"
    try:
        busy, user, system = parse_proc_stat(read_file(f"{proc}/stat"))
        total, free, cached, inactive_file, anon, swap_total, swap_free = parse_meminfo(
            read_file(f"{proc}/meminfo"),
            b"MemTotal",
            b"MemFree",
            b"Cached",
            b"Inactive(file)",
            b"AnonPages",
            b"SwapTotal",
            b"SwapFree",
        )
    except (OSError, Garbled):
        return None
    try:
        net = parse_net_dev(read_file(f"{proc}/1/net/dev"))
    except (OSError, Garbled):
        net = None
    usage = total - free
    return ContainerStats(
        time=time.time(),
        cpu_total_usage=busy,
        cpu_user_usage=user,
        cpu_system_usage=system,
        memory_usage=usage,
        memory_cache=cached,
        memory_inactive_file=inactive_file,
        memory_rss=anon,
        memory_swap=swap_total - swap_free,
        net_rx_bytes=net.rx_bytes if net else 0,
        net_tx_bytes=net.tx_bytes if net else 0,
        net_rx_packets=net.rx_packets if net else None,
        net_tx_packets=net.tx_packets if net else None,
        net_rx_errors=net.rx_errors if net else None,
        net_tx_errors=net.tx_errors if net else None,
        net_rx_dropped=net.rx_dropped if net else None,
        net_tx_dropped=net.tx_dropped if net else None,
    )
