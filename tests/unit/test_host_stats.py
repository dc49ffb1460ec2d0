"""The host's totals (cAdvisor's root container) from a /proc written for the test."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.sources.host import read_host_stats

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
STAT = "cpu  100 20 50 1000 30 5 5 2 0 0\ncpu0 50 10 25 500 15 2 3 1 0 0\nintr 1\n"
MEMINFO = (
    "MemTotal:       2000000 kB\n"
    "MemFree:         500000 kB\n"
    "Cached:          300000 kB\n"
    "Inactive(file):  100000 kB\n"
    "AnonPages:       400000 kB\n"
    "SwapTotal:       100000 kB\n"
    "SwapFree:         60000 kB\n"
)
NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast"
    "|bytes    packets errs drop fifo colls carrier compressed\n"
    "    lo:  999 9 0 0 0 0 0 0  999 9 0 0 0 0 0 0\n"
    "  ens3: 5000 50 1 2 0 0 0 0 7000 70 0 3 0 0 0 0\n"
)


def proc(tmp_path: Path, *, net: bool = True) -> Path:
    (tmp_path / "stat").write_text(STAT)
    (tmp_path / "meminfo").write_text(MEMINFO)
    if net:
        (tmp_path / "1" / "net").mkdir(parents=True)
        (tmp_path / "1" / "net" / "dev").write_text(NET_DEV)
    return tmp_path


def test_host_totals_from_proc(tmp_path: Path) -> None:
    s = read_host_stats(proc(tmp_path))
    assert s is not None
    # Busy: everything but idle and iowait; user counts nice.
    assert s.cpu_total_usage == (100 + 20 + 50 + 5 + 5 + 2) * TICK_NS
    assert s.cpu_user_usage == 120 * TICK_NS
    assert s.cpu_system_usage == 50 * TICK_NS
    assert s.memory_usage == (2_000_000 - 500_000) * 1024
    assert s.memory_working_set == (1_500_000 - 100_000) * 1024
    assert (s.memory_cache, s.memory_rss, s.memory_swap) == (
        300_000 * 1024,
        400_000 * 1024,
        40_000 * 1024,
    )
    # pid 1's namespace is the host's; lo is left out as for containers.
    assert (s.net_rx_bytes, s.net_tx_bytes, s.net_rx_packets, s.net_tx_dropped) == (
        5000,
        7000,
        50,
        3,
    )


def test_hidden_pid_1_leaves_no_network_figures_and_no_proc_no_host(tmp_path: Path) -> None:
    s = read_host_stats(proc(tmp_path, net=False))
    assert s is not None
    assert s.net_rx_packets is None
    assert read_host_stats(tmp_path / "nothing") is None
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")  # a meminfo without MemFree
    assert read_host_stats(tmp_path) is None
