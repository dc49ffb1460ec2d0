"""A hand-made snapshot and its renderings: what the metric-table tests compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

from exporter.exposition import render_container_families
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.snapshot import (
    ContainerSample,
    FsUsage,
    ProcessCounts,
    Snapshot,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "metrics.prom"


T0 = 1_700_000_000.0


B_CGROUP = "/system.slice/docker-" + "b" * 64 + ".scope"


def example_info(name: str, cid: str, **fields: object) -> ContainerInfo:
    base: dict[str, object] = {
        "id": cid * 64,
        "name": name,
        "image": "local/busybox:latest",
        "state": ContainerState.RUNNING,
        "pid": 4242,
        "created": int(T0) - 100,
        "started": int(T0) - 50,
    }
    base.update(fields)
    return TypeAdapter(ContainerInfo).validate_python(base)


def example_stats(scale: int, *, v2: bool = False) -> ContainerStats:
    """Return a sample; ``v2`` leaves out what cgroup v2 (or the engine) cannot say."""
    return ContainerStats(
        time=T0,
        cpu_total_usage=1_500_000_000 * scale,
        cpu_user_usage=1_000_000_000 * scale,
        cpu_system_usage=500_000_000 * scale,
        memory_usage=10_485_760 * scale,
        memory_cache=2_097_152 * scale,
        memory_inactive_file=1_048_576 * scale,
        net_rx_bytes=1000 * scale,
        net_tx_bytes=2000 * scale,
        blk_read_bytes=4096 * scale,
        blk_write_bytes=8192 * scale,
        blk_read_ops=1 * scale,
        blk_write_ops=2 * scale,
        memory_rss=4_194_304 * scale,
        memory_swap=None if v2 else 65_536 * scale,
        memory_mapped_file=262_144 * scale,
        memory_failcnt=None if v2 else 3 * scale,
        memory_max_usage=None if v2 else 16_777_216 * scale,
        cpu_periods=100 * scale,
        cpu_throttled_periods=20 * scale,
        cpu_throttled_time=250_000_000 * scale,
        net_rx_packets=10 * scale,
        net_tx_packets=20 * scale,
        net_rx_errors=1 * scale,
        net_tx_errors=0,
        net_rx_dropped=2 * scale,
        net_tx_dropped=0,
        oom_events=None if v2 else 1 * scale,
    )


def example_snapshot() -> Snapshot:
    return Snapshot(
        containers=(
            ContainerSample(
                info=example_info(
                    "app-0123456789abcdef-00ff",
                    "a",
                    cpu_limit=500,
                    memory_limit=67_108_864,
                    labels={"team": "core", "com.example/tier": 'web "front"\\edge'},
                    engine_state="running",
                    health="healthy",
                    restart_count=2,
                    memory_reservation=33_554_432,
                    memory_swap_limit=134_217_728,
                    cpu_shares=512,
                ),
                app="0123456789abcdef",
                replica=255,
                stats=example_stats(1),
                stats_source="docker",
                processes=ProcessCounts(3, 5, 17),
                fs=FsUsage(usage=12_288, limit=1 << 30, inodes_total=65_536, inodes_free=60_000),
            ),
            ContainerSample(
                info=example_info(
                    "app-deadbeef-0001",
                    "b",
                    cgroup_path=B_CGROUP,
                    engine_state="paused",
                    health="unhealthy",
                    memory_swap_limit=-1,
                ),
                app="deadbeef",
                replica=1,
                stats=example_stats(2, v2=True),
                stats_source="docker",
                stale=True,
            ),
            ContainerSample(
                info=example_info(
                    "app-deadbeef-0002",
                    "c",
                    state=ContainerState.STOPPED,
                    pid=0,
                    started=0,
                    engine_state="exited",
                    health="unhealthy",
                    exit_code=137,
                    oom_killed=True,
                ),
                app="deadbeef",
                replica=2,
            ),
            ContainerSample(
                info=example_info("postgres", "d", image="postgres:16"),
                app=None,
                replica=None,
                stats=example_stats(3),
                stats_source="docker",
            ),
        ),
        completed_at=T0,
        duration_seconds=0.25,
        engine_up=True,
        host=example_stats(100, v2=True),
    )


def render_text(snapshot: Snapshot, allow: tuple[str, ...] = ()) -> str:
    return b"".join(render_container_families(snapshot, allow)).decode()


class ParsedFamilies:
    """The rendered text parsed back, queried like a registry."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))

    def get_sample_value(self, name: str, labels: dict[str, str]) -> float | None:
        for family in self.families:
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return None


def parsed_families(snapshot: Snapshot, allow: tuple[str, ...] = ()) -> ParsedFamilies:
    return ParsedFamilies(render_text(snapshot, allow))


def render_with(snapshot: Snapshot, **options: Any) -> str:
    return b"".join(render_container_families(snapshot, **options)).decode()
