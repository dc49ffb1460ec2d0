"""The metric table: every family the exporter serves, one row each.

Container families are rows of :class:`ContainerMetric`, rendered as text by
:mod:`exporter.exposition` once per snapshot; names follow cAdvisor's so the
common Docker dashboards work unchanged. The live families (the exporter's
own health, remediation) are rows of :class:`LiveMetric`, read from a view
at every scrape by a prometheus_client ``Collector`` that does no I/O.
Adding a metric is adding a row here: the exposition and the README's
reference (:mod:`exporter.reference`) follow from the table.

Every container series carries ``name``, ``id`` (the cgroup path, as
cAdvisor's), ``image`` and, for managed containers, ``app`` and ``replica``
(decimal); Docker labels go on the single ``sysinner_container_info``
series, and on every series only when ``--collect.series-labels`` asks.
Each row belongs to a ``--collect.disable`` group (:data:`COLLECT_GROUPS`),
and ``host`` rows also render the host's totals as cAdvisor's root container.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__
from exporter.models import ContainerInfo, ContainerState
from exporter.snapshot import COLLECT_GROUPS, ContainerSample, ErrorKind, FsUsage, SnapshotView

MetricType = Literal["counter", "gauge"]
Getter = Callable[[ContainerSample], float | None]
#: How a container row's series are made (see :class:`ContainerMetric`).
RowKind = Literal["value", "poll_time", "state", "info"]

NS_PER_SECOND = 1e9
#: cAdvisor reports CPU quota against the kernel's default 100 ms period.
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class ContainerMetric:
    """One row of the container table: a family with series per container, and how to read them.

    ``kind`` says what series a container gets (exposition renders each kind
    at C speed): ``value``, one series of ``value``'s number (None: none);
    ``poll_time``, for a running container one series of when the poll
    completed (unix seconds), stamped with that time;
    ``state``, one series per container state, labelled ``state``, 1 for the
    container's own and 0 for the others; ``info``, one series of 1 that also
    carries the container's allow-listed Docker labels. A ``host`` row also
    renders the snapshot's host totals as the root container.
    """

    name: str
    help: str
    type: MetricType
    value: Getter | None = None
    kind: RowKind = "value"
    #: The row has a series for the host too, cAdvisor's root container (id="/").
    host: bool = False
    #: The group ``--collect.disable`` turns it off by (one of COLLECT_GROUPS); "" always on.
    group: str = ""

    def __post_init__(self) -> None:
        if self.group and self.group not in COLLECT_GROUPS:
            raise ValueError(f"{self.name}: unknown group {self.group!r}")
        if (self.value is None) == (self.kind == "value"):
            raise ValueError(f"{self.name}: a getter is for, and only for, a row of kind value")

    @property
    def family(self) -> str:
        """Return the family name (a counter's without ``_total``)."""
        if self.type == "counter":
            return self.name.removesuffix("_total")
        return self.name


def _stat(read: Callable[[ContainerSample], float]) -> Getter:
    """Wrap a getter that needs stats: no stats, no sample."""

    def get(s: ContainerSample) -> float | None:
        return read(s) if s.stats is not None else None

    return get


def _field(name: str, scale: float = 1) -> Getter:
    """Read an optional ContainerStats field: no stats or no figure (None), no sample."""

    def get(s: ContainerSample) -> float | None:
        if s.stats is None:
            return None
        value: int | None = getattr(s.stats, name)
        if value is None:
            return None
        return value / scale if scale != 1 else value

    return get


def _spec(read: Callable[[ContainerSample], float]) -> Getter:
    """Wrap a getter of a limit: 0 (unlimited) yields no sample, as in cAdvisor."""

    def get(s: ContainerSample) -> float | None:
        v = read(s)
        return v if v else None

    return get


def _live(read: Callable[[ContainerSample], float]) -> Getter:
    """Wrap a getter that means something only while the container runs (paused included)."""

    def get(s: ContainerSample) -> float | None:
        return read(s) if s.info.state is ContainerState.RUNNING else None

    return get


#: cAdvisor's container_health_state: healthy 1, unhealthy 0, anything else
#: (no healthcheck, or "starting": not judged yet) -1.
_HEALTH = {"healthy": 1, "unhealthy": 0}
#: The kernel's default CPU weight when the engine sets none (CpuShares 0).
DEFAULT_CPU_SHARES = 1024


def _fs(read: Callable[[FsUsage], float]) -> Getter:
    """Wrap a getter of the layer sizing: not sized yet (or not sizable), no sample."""

    def get(s: ContainerSample) -> float | None:
        return read(s.fs) if s.fs is not None else None

    return get


def _proc(read: Callable[[ContainerSample], float]) -> Getter:
    def get(s: ContainerSample) -> float | None:
        return read(s) if s.processes is not None else None

    return get


# The getters below read fields that _stat / _proc have checked for None.
CONTAINER_METRICS: tuple[ContainerMetric, ...] = (
    ContainerMetric(
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed, in seconds (resets when the container restarts).",
        "counter",
        _stat(lambda s: s.stats.cpu_total_usage / NS_PER_SECOND),  # type: ignore[union-attr]
        host=True,
        group="cpu",
    ),
    ContainerMetric(
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed, in seconds.",
        "counter",
        _stat(lambda s: s.stats.cpu_user_usage / NS_PER_SECOND),  # type: ignore[union-attr]
        host=True,
        group="cpu",
    ),
    ContainerMetric(
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed, in seconds.",
        "counter",
        _stat(lambda s: s.stats.cpu_system_usage / NS_PER_SECOND),  # type: ignore[union-attr]
        host=True,
        group="cpu",
    ),
    ContainerMetric(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, page cache included.",
        "gauge",
        _stat(lambda s: s.stats.memory_usage),  # type: ignore[union-attr]
        host=True,
        group="memory",
    ),
    ContainerMetric(
        "container_memory_cache",
        "Page cache memory in bytes (cgroup v2: file).",
        "gauge",
        _stat(lambda s: s.stats.memory_cache),  # type: ignore[union-attr]
        host=True,
        group="memory",
    ),
    ContainerMetric(
        "container_memory_working_set_bytes",
        "Memory usage minus inactive file pages, in bytes: what the OOM killer weighs.",
        "gauge",
        _stat(lambda s: s.stats.memory_working_set),  # type: ignore[union-attr]
        host=True,
        group="memory",
    ),
    ContainerMetric(
        "container_memory_rss",
        "Anonymous memory (and swap cache) in bytes; cgroup v2: anon.",
        "gauge",
        _field("memory_rss"),
        host=True,
        group="memory",
    ),
    ContainerMetric(
        "container_memory_swap",
        "Container swap usage in bytes; absent where swap is not accounted.",
        "gauge",
        _field("memory_swap"),
        host=True,
        group="memory",
    ),
    ContainerMetric(
        "container_memory_mapped_file",
        "Size of memory-mapped files in bytes, tmpfs included.",
        "gauge",
        _field("memory_mapped_file"),
        group="memory",
    ),
    ContainerMetric(
        "container_memory_failcnt",
        # cAdvisor types it a counter, but a counter's name must end in _total
        # (OpenMetrics, promtool, client parsers rename it): cAdvisor's name wins,
        # and a gauge keeps the name as it is everywhere; rate() works on either.
        "Times memory usage hit the limit, cumulative (cgroup v1 only; cAdvisor's name).",
        "gauge",
        _field("memory_failcnt"),
        group="memory",
    ),
    ContainerMetric(
        "container_memory_max_usage_bytes",
        "Peak memory usage in bytes (cgroup v1; v2 where the kernel has memory.peak).",
        "gauge",
        _field("memory_max_usage"),
        group="memory",
    ),
    ContainerMetric(
        "container_cpu_cfs_periods_total",
        "Elapsed CFS enforcement periods (counted only while a CPU limit is set).",
        "counter",
        _field("cpu_periods"),
        group="cpu",
    ),
    ContainerMetric(
        "container_cpu_cfs_throttled_periods_total",
        "CFS periods in which the container was throttled.",
        "counter",
        _field("cpu_throttled_periods"),
        group="cpu",
    ),
    ContainerMetric(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time the container was throttled, in seconds.",
        "counter",
        _field("cpu_throttled_time", NS_PER_SECOND),
        group="cpu",
    ),
    ContainerMetric(
        "container_oom_events_total",
        "Processes of the container killed by the OOM killer (from the cgroup; the engine's "
        "stats lack it).",
        "counter",
        _field("oom_events"),
        group="oom",
    ),
    ContainerMetric(
        "container_network_receive_bytes_total",
        "Cumulative bytes received over all of the container's interfaces.",
        "counter",
        _stat(lambda s: s.stats.net_rx_bytes),  # type: ignore[union-attr]
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_transmit_bytes_total",
        "Cumulative bytes transmitted over all of the container's interfaces.",
        "counter",
        _stat(lambda s: s.stats.net_tx_bytes),  # type: ignore[union-attr]
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_receive_packets_total",
        "Cumulative packets received over all of the container's interfaces.",
        "counter",
        _field("net_rx_packets"),
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_transmit_packets_total",
        "Cumulative packets transmitted over all of the container's interfaces.",
        "counter",
        _field("net_tx_packets"),
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_receive_errors_total",
        "Cumulative errors encountered while receiving.",
        "counter",
        _field("net_rx_errors"),
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_transmit_errors_total",
        "Cumulative errors encountered while transmitting.",
        "counter",
        _field("net_tx_errors"),
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_receive_packets_dropped_total",
        "Cumulative packets dropped while receiving.",
        "counter",
        _field("net_rx_dropped"),
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_network_transmit_packets_dropped_total",
        "Cumulative packets dropped while transmitting.",
        "counter",
        _field("net_tx_dropped"),
        host=True,
        group="network",
    ),
    ContainerMetric(
        "container_fs_reads_bytes_total",
        "Cumulative bytes read from block devices.",
        "counter",
        _stat(lambda s: s.stats.blk_read_bytes),  # type: ignore[union-attr]
        group="blkio",
    ),
    ContainerMetric(
        "container_fs_writes_bytes_total",
        "Cumulative bytes written to block devices.",
        "counter",
        _stat(lambda s: s.stats.blk_write_bytes),  # type: ignore[union-attr]
        group="blkio",
    ),
    ContainerMetric(
        "container_fs_reads_total",
        "Cumulative block device read operations.",
        "counter",
        _stat(lambda s: s.stats.blk_read_ops),  # type: ignore[union-attr]
        group="blkio",
    ),
    ContainerMetric(
        "container_fs_writes_total",
        "Cumulative block device write operations.",
        "counter",
        _stat(lambda s: s.stats.blk_write_ops),  # type: ignore[union-attr]
        group="blkio",
    ),
    ContainerMetric(
        "container_fs_usage_bytes",
        "Bytes the container's writable layer uses (sized on the slower --collect.fs-interval).",
        "gauge",
        _fs(lambda f: f.usage),
        group="fs",
    ),
    ContainerMetric(
        "container_fs_limit_bytes",
        "Size in bytes of the filesystem that holds the container's writable layer.",
        "gauge",
        _fs(lambda f: f.limit),
        group="fs",
    ),
    ContainerMetric(
        "container_fs_inodes_total",
        "Inodes of the filesystem that holds the container's writable layer.",
        "gauge",
        _fs(lambda f: f.inodes_total),
        group="fs",
    ),
    ContainerMetric(
        "container_fs_inodes_free",
        "Free inodes of the filesystem that holds the container's writable layer.",
        "gauge",
        _fs(lambda f: f.inodes_free),
        group="fs",
    ),
    ContainerMetric(
        "container_spec_memory_limit_bytes",
        "Memory limit in bytes; absent when unlimited.",
        "gauge",
        _spec(lambda s: s.info.memory_limit),
        group="spec",
    ),
    ContainerMetric(
        "container_spec_cpu_quota",
        "CPU quota in microseconds per container_spec_cpu_period; absent when unlimited.",
        "gauge",
        _spec(lambda s: s.info.cpu_limit * CPU_PERIOD_US // 1000),
        group="spec",
    ),
    ContainerMetric(
        "container_spec_cpu_period",
        "CPU period in microseconds that container_spec_cpu_quota is measured against.",
        "gauge",
        _spec(lambda s: CPU_PERIOD_US if s.info.cpu_limit else 0),
        group="spec",
    ),
    ContainerMetric(
        "container_spec_memory_reservation_limit_bytes",
        "Memory reservation (soft limit) in bytes; absent when none.",
        "gauge",
        _spec(lambda s: s.info.memory_reservation),
        group="spec",
    ),
    ContainerMetric(
        "container_spec_memory_swap_limit_bytes",
        "Memory plus swap limit in bytes; absent when unset or unlimited.",
        "gauge",
        _spec(lambda s: max(s.info.memory_swap_limit, 0)),
        group="spec",
    ),
    ContainerMetric(
        "container_spec_cpu_shares",
        "CPU shares (relative weight) of the container; 1024, the kernel's default, when unset.",
        "gauge",
        lambda s: s.info.cpu_shares or DEFAULT_CPU_SHARES,
        group="spec",
    ),
    ContainerMetric(
        "container_start_time_seconds",
        "When the container last started, unix seconds.",
        "gauge",
        _spec(lambda s: s.info.started),
    ),
    ContainerMetric(
        "container_processes",
        "Processes (thread group leaders) in the container's cgroup and those below it, "
        "from cgroup.procs; those started by docker exec included.",
        "gauge",
        _proc(lambda s: s.processes.processes),  # type: ignore[union-attr]
        group="processes",
    ),
    ContainerMetric(
        "container_threads",
        "Tasks in the container's cgroup, every thread of every process: the cgroup's "
        "pids.current where the kernel has it (v2, v1 pids), else the processes' Threads summed.",
        "gauge",
        _proc(lambda s: s.processes.threads),  # type: ignore[union-attr]
        group="processes",
    ),
    ContainerMetric(
        "container_file_descriptors",
        "Open file descriptors of the container's processes (a stat of /proc/<pid>/fd on "
        "Linux >= 6.2, else a listing of it).",
        "gauge",
        _proc(lambda s: s.processes.fds),  # type: ignore[union-attr]
        group="processes",
    ),
    ContainerMetric(
        "container_last_seen",
        "When the exporter last saw the container running, unix seconds; the sample carries "
        "that time as its timestamp, so it outlives the container for Prometheus' lookback.",
        "gauge",
        kind="poll_time",
    ),
    ContainerMetric(
        "container_health_state",
        "Healthcheck status of a running container: 1 healthy, 0 unhealthy, -1 no healthcheck "
        "or not judged yet (starting).",
        "gauge",
        _live(lambda s: _HEALTH.get(s.info.health, -1)),
        group="health",
    ),
    ContainerMetric(
        "sysinner_container_state",
        "1 for the container's engine state (created, running, paused, restarting, removing, "
        "exited, dead), 0 for the others.",
        "gauge",
        kind="state",
    ),
    ContainerMetric(
        # The sysinner_container_restart_count: promtool refuses a
        # "_count" suffix outside histograms and summaries, and a counter
        # (resets included: a manual start zeroes RestartCount) is what it is.
        "sysinner_container_restarts_total",
        "Times the engine restarted the container under its restart policy (the engine's "
        "RestartCount; a manual start resets it).",
        "counter",
        lambda s: s.info.restart_count,
        group="lifecycle",
    ),
    ContainerMetric(
        "sysinner_container_exit_code",
        "Exit code of the container's last exit (0 while running, as the engine resets it).",
        "gauge",
        lambda s: s.info.exit_code,
        group="lifecycle",
    ),
    ContainerMetric(
        "sysinner_container_oom_killed",
        "1 when the container's last exit was an OOM kill of its init (the engine's OOMKilled).",
        "gauge",
        lambda s: 1 if s.info.oom_killed else 0,
        group="lifecycle",
    ),
    ContainerMetric(
        "sysinner_container_stats_stale",
        "1 when the stats shown are the previous poll's because this poll's read failed.",
        "gauge",
        _stat(lambda s: 1 if s.stale else 0),
    ),
    ContainerMetric(
        "sysinner_container_info",
        "Always 1; carries the container's allow-listed Docker labels.",
        "gauge",
        kind="info",
    ),
)


#: cAdvisor's gauges whose names end in _total, kept for the rules that query them
#: (awesome-prometheus-alerts' volume rule divides by container_fs_inodes_total);
#: promtool's linter says so of each, and nothing else.
GAUGES_NAMED_TOTAL = frozenset({"container_fs_inodes_total"})


def enabled_rows(
    disabled: Iterable[str], table: Sequence[ContainerMetric] = CONTAINER_METRICS
) -> tuple[ContainerMetric, ...]:
    """Return the rows of ``table`` whose group is not in ``disabled``."""
    off = frozenset(disabled)
    return tuple(row for row in table if row.group not in off)


def container_id_label(info: ContainerInfo) -> str:
    """Return a container's ``id`` label as cAdvisor writes it: its cgroup path, else its id."""
    return info.cgroup_path or info.id


def container_labels(sample: ContainerSample, with_id: bool = True) -> dict[str, str]:
    """Return the identifying labels of every series of a container.

    Without ``with_id`` the ``id`` is left out (names are unique on a host,
    and in a sysinner fleet across hosts): ~40% fewer label bytes.
    """
    info = sample.info
    # cAdvisor's id is the cgroup path, which the Docker dashboards select on
    # (id=~"/system.slice/docker.+"); the bare id where a driver cannot say.
    labels = {"name": info.name, "id": container_id_label(info), "image": info.image}
    if not with_id:
        del labels["id"]
    if sample.app is not None and sample.replica is not None:
        labels["app"] = sample.app
        labels["replica"] = str(sample.replica)
    return labels


#: The host's cores and memory, asked once: sysinfo(2) answers for the host
#: even inside a container (a cgroup limits use, not what these report).
MACHINE_CPU_CORES = os.cpu_count() or 0
MACHINE_MEMORY_BYTES = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

LiveType = Literal["counter", "gauge", "info"]
#: A sample of a live family: its labels and its value.
LiveSample = tuple[dict[str, str], float]
V = TypeVar("V")


@dataclass(frozen=True)
class LiveMetric(Generic[V]):
    """One row of a live table: a family read from a view ``V`` at every scrape."""

    name: str  # as queried: a counter's ends in _total, an info's in _info
    help: str
    type: LiveType
    samples: Callable[[V], Iterable[LiveSample]]

    @property
    def family(self) -> str:
        """Return the family name (without a counter's ``_total`` or an info's ``_info``)."""
        return self.name.removesuffix({"counter": "_total", "info": "_info"}.get(self.type, ""))

    def collect(self, view: V) -> Metric:
        """Return the family with its samples as ``view`` has them now."""
        family = Metric(self.family, self.help, self.type)
        for labels, value in self.samples(view):
            family.add_sample(self.name, labels, value)
        return family


def _one(read: Callable[[V], float]) -> Callable[[V], Iterable[LiveSample]]:
    """Wrap a reader of one unlabelled number."""

    def samples(view: V) -> Iterable[LiveSample]:
        return (({}, float(read(view))),)

    return samples


HEALTH_METRICS: tuple[LiveMetric[SnapshotView], ...] = (
    LiveMetric(
        "sysinner_exporter_up",
        "1 when the engine answered the last poll.",
        "gauge",
        _one(lambda v: 1.0 if v.snapshot.engine_up else 0.0),
    ),
    LiveMetric(
        "sysinner_exporter_poll_duration_seconds",
        "How long the last poll took.",
        "gauge",
        _one(lambda v: v.snapshot.duration_seconds),
    ),
    LiveMetric(
        "sysinner_exporter_poll_phase_duration_seconds",
        "How long each phase of the last poll took: list, inspect, stats (and process counts).",
        "gauge",
        lambda v: (({"phase": phase}, seconds) for phase, seconds in v.snapshot.phase_seconds),
    ),
    LiveMetric(
        "sysinner_exporter_last_successful_poll_timestamp_seconds",
        "When the last successful poll completed, unix seconds; 0 before the first.",
        "gauge",
        _one(lambda v: v.health.last_success_at),
    ),
    LiveMetric(
        "sysinner_exporter_polls_total",
        "Polls completed, failed ones included.",
        "counter",
        _one(lambda v: v.health.polls),
    ),
    LiveMetric(
        "sysinner_exporter_errors_total",
        "Poll errors by kind.",
        "counter",
        # Every kind, zeros included: a rate() needs the series before the first error.
        lambda v: (({"kind": kind}, float(v.health.errors[kind])) for kind in ErrorKind),
    ),
    LiveMetric(
        "sysinner_exporter_containers",
        "Containers tracked by the last poll.",
        "gauge",
        _one(lambda v: len(v.snapshot.containers)),
    ),
    LiveMetric(
        "machine_cpu_cores",
        "Logical CPU cores of the host.",
        "gauge",
        _one(lambda v: MACHINE_CPU_CORES),
    ),
    LiveMetric(
        "machine_memory_bytes",
        "Memory of the host in bytes (MemTotal).",
        "gauge",
        _one(lambda v: MACHINE_MEMORY_BYTES),
    ),
    LiveMetric(
        "sysinner_exporter_held_files",
        "Cgroup and /proc files held open between polls, so a poll re-reads them without "
        "open(); containers past sysinner_exporter_held_files_budget are read by path.",
        "gauge",
        _one(lambda v: v.held_files),
    ),
    LiveMetric(
        "sysinner_exporter_held_files_budget",
        "Files that may be held open at most: the soft RLIMIT_NOFILE (raised to the hard "
        "limit at start) less a reserve for connections.",
        "gauge",
        _one(lambda v: v.held_files_budget),
    ),
    LiveMetric(
        "sysinner_exporter_stats_source",
        "Always 1; names the stats source in use.",
        "gauge",
        lambda v: (({"source": v.stats_source_name}, 1.0),),
    ),
    LiveMetric(
        "sysinner_exporter_build_info",
        "Always 1; the exporter's version.",
        "info",
        lambda v: (({"version": __version__, "python_version": platform.python_version()}, 1.0),),
    ),
)


class RemediationView(Protocol):
    """What :class:`RemediationCollector` reads; the remediation module provides it."""

    def action_counts(self) -> dict[tuple[str, str], int]:
        """Return decisions taken since start by (action, result)."""
        ...

    def quarantined_count(self) -> int:
        """Return how many containers are quarantined now."""
        ...

    def state_up(self) -> bool:
        """Return True while the state store works."""
        ...

    def state_lost_count(self) -> int:
        """Return how many opens found the state lost."""
        ...

    @property
    def state_write_failures(self) -> int:
        """Ledger writes that failed and were owed."""
        ...

    def owed_writes(self) -> int:
        """Return how many ledger writes wait for the state store."""
        ...

    @property
    def not_here(self) -> int:
        """Alerts naming a container this host does not have (answered, not recorded)."""
        ...


REMEDIATION_METRICS: tuple[LiveMetric[RemediationView], ...] = (
    LiveMetric(
        "sysinner_exporter_remediation_actions_total",
        "Alerts judged by remediation, by action and result (restarted, cooldown, ...).",
        "counter",
        lambda r: (
            ({"action": action, "result": result}, float(count))
            for (action, result), count in sorted(r.action_counts().items())
        ),
    ),
    LiveMetric(
        "sysinner_exporter_remediation_quarantined",
        "Containers remediation will not restart until their window passes or an "
        "operator clears them.",
        "gauge",
        _one(lambda r: r.quarantined_count()),
    ),
    # The state store failing is remediation's fault alone: these say so.
    LiveMetric(
        "sysinner_exporter_remediation_state_up",
        "1 while remediation's state database works; 0 while alerts answer 503 and it is "
        "reopened with a backoff (the log and /readyz say why).",
        "gauge",
        _one(lambda r: 1.0 if r.state_up() else 0.0),
    ),
    LiveMetric(
        "sysinner_exporter_remediation_state_write_failures_total",
        "Ledger writes that failed (another process' lock, a full disk, ...) and were owed "
        "until the state database works again.",
        "counter",
        _one(lambda r: r.state_write_failures),
    ),
    LiveMetric(
        "sysinner_exporter_remediation_state_owed_writes",
        "Ledger writes waiting for the state database.",
        "gauge",
        _one(lambda r: r.owed_writes()),
    ),
    LiveMetric(
        "sysinner_exporter_remediation_state_lost_total",
        "Opens that found the state database empty or without its schema: every "
        "quarantine, cooldown and dedupe memory it held was lost.",
        "counter",
        _one(lambda r: r.state_lost_count()),
    ),
    # A fan-out receiver posts every alert to every host: N-1 of them land here.
    LiveMetric(
        "sysinner_exporter_remediation_not_here_total",
        "Alerts naming a container this host does not have: answered not-found without "
        "a history row (pull mode never fetches them).",
        "counter",
        _one(lambda r: r.not_here),
    ),
)


class TableCollector(Collector, Generic[V]):
    """Renders a live table from a view at every scrape; reads memory only."""

    def __init__(self, view: V, table: Sequence[LiveMetric[V]]) -> None:
        self._view = view
        self._table = tuple(table)

    def collect(self) -> Iterator[Metric]:
        """Yield one fresh family per row."""
        for row in self._table:
            yield row.collect(self._view)


class ExporterHealthCollector(TableCollector[SnapshotView]):
    """Renders the exporter's own health: up, poll timings, errors, build info."""

    def __init__(
        self, view: SnapshotView, table: Sequence[LiveMetric[SnapshotView]] = HEALTH_METRICS
    ) -> None:
        super().__init__(view, table)


class RemediationCollector(TableCollector[RemediationView]):
    """Renders remediation's decisions and quarantines."""

    def __init__(self, remediation: RemediationView) -> None:
        super().__init__(remediation, REMEDIATION_METRICS)


class AlertPullView(Protocol):
    """What :class:`AlertPullCollector` reads; :class:`exporter.alertpull.AlertPuller` has it."""

    @property
    def up(self) -> bool:
        """True while the last poll of Alertmanager got an answer from a ready peer."""
        ...

    @property
    def last_success_at(self) -> float:
        """When a poll of Alertmanager last succeeded, unix seconds; 0 before the first."""
        ...

    @property
    def polls(self) -> int:
        """Polls of Alertmanager so far."""
        ...

    @property
    def alerts_here(self) -> int:
        """Alerts of the last answer that were this host's."""
        ...

    def error_counts(self) -> dict[str, int]:
        """Return failed requests to Alertmanager peers by kind, every kind present."""
        ...


ALERTPULL_METRICS: tuple[LiveMetric[AlertPullView], ...] = (
    LiveMetric(
        "sysinner_exporter_alertmanager_up",
        "1 when the last poll of Alertmanager got an answer from a ready peer; 0 while none "
        "answers (nothing is restarted meanwhile).",
        "gauge",
        _one(lambda p: 1.0 if p.up else 0.0),
    ),
    LiveMetric(
        "sysinner_exporter_alertmanager_last_success_timestamp_seconds",
        "When a poll of Alertmanager last succeeded, unix seconds; 0 before the first.",
        "gauge",
        _one(lambda p: p.last_success_at),
    ),
    LiveMetric(
        "sysinner_exporter_alertmanager_polls_total",
        "Polls of Alertmanager, failed ones included.",
        "counter",
        _one(lambda p: p.polls),
    ),
    LiveMetric(
        "sysinner_exporter_alertmanager_alerts",
        "Active, unsilenced, uninhibited alerts of the last answer that are this host's.",
        "gauge",
        _one(lambda p: p.alerts_here),
    ),
    LiveMetric(
        "sysinner_exporter_alertmanager_errors_total",
        "Failed requests to Alertmanager peers by kind: unreachable, timeout, status, "
        "decode, not-ready (the cluster is settling).",
        "counter",
        lambda p: (({"kind": kind}, float(n)) for kind, n in sorted(p.error_counts().items())),
    ),
)


class AlertPullCollector(TableCollector[AlertPullView]):
    """Renders pull mode's poll of Alertmanager; reads memory only."""

    def __init__(self, puller: AlertPullView) -> None:
        super().__init__(puller, ALERTPULL_METRICS)


class HttpServerView(Protocol):
    """What :class:`HttpServerCollector` reads; :class:`exporter.api.server.GuardedServer` does."""

    @property
    def open_connections(self) -> int:
        """HTTP connections open now."""
        ...

    @property
    def max_connections(self) -> int:
        """The cap past which a new connection is closed at once."""
        ...

    @property
    def refused(self) -> int:
        """Connections closed unanswered because the cap was reached."""
        ...

    @property
    def malformed(self) -> int:
        """Requests that could not be parsed as HTTP."""
        ...


HTTP_METRICS: tuple[LiveMetric[HttpServerView], ...] = (
    LiveMetric(
        "sysinner_exporter_http_connections",
        "HTTP connections open now: scrapes, API calls and idle keep-alive connections.",
        "gauge",
        _one(lambda s: s.open_connections),
    ),
    LiveMetric(
        "sysinner_exporter_http_max_connections",
        "--web.max-connections: a connection past it is closed as soon as it is accepted.",
        "gauge",
        _one(lambda s: s.max_connections),
    ),
    LiveMetric(
        "sysinner_exporter_http_connections_refused_total",
        "Connections closed unanswered because --web.max-connections were open.",
        "counter",
        _one(lambda s: s.refused),
    ),
    LiveMetric(
        "sysinner_exporter_http_malformed_requests_total",
        "Requests that could not be parsed as HTTP (answered 400 and logged a few a minute).",
        "counter",
        _one(lambda s: s.malformed),
    ),
)


class HttpServerCollector(TableCollector[HttpServerView]):
    """Renders the HTTP server's connection cap and refusals; reads memory only."""

    def __init__(self, server: HttpServerView) -> None:
        super().__init__(server, HTTP_METRICS)


def build_registry(
    view: SnapshotView,
    *,
    remediation: RemediationView | None = None,
    alertpull: AlertPullView | None = None,
) -> CollectorRegistry:
    """Return the registry of the live families: health, process, platform.

    Container families are not on it: :mod:`exporter.exposition` renders them
    from the metric table, once per snapshot.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterHealthCollector(view))
    if remediation is not None:
        registry.register(RemediationCollector(remediation))
    if alertpull is not None:
        registry.register(AlertPullCollector(alertpull))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
