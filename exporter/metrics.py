"""The metric table: every family the exporter serves, one row each.

Container families are rows of :class:`ContainerMetric`, rendered as text by
:mod:`exporter.exposition` once per snapshot; names follow cAdvisor's so the
common Docker dashboards work unchanged. The live families (the exporter's
own health, remediation) are rows of :class:`LiveMetric`, read from a view
at every scrape by a prometheus_client ``Collector`` that does no I/O.
Adding a metric is adding a row here: the exposition and the README's
reference (:mod:`exporter.reference`) follow from the table.

Every container series carries ``name``, ``id``, ``image`` and, for managed
containers, ``app`` and ``replica`` (decimal); Docker labels go only on the
single ``sysinner_container_info`` series, never on every series.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__
from exporter.snapshot import ContainerSample, ErrorKind, SnapshotView

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
    ``poll_time``, one series of when the poll completed (unix seconds);
    ``state``, one series per container state, labelled ``state``, 1 for the
    container's own and 0 for the others; ``info``, one series of 1 that also
    carries the container's allow-listed Docker labels.
    """

    name: str
    help: str
    type: MetricType
    value: Getter | None = None
    kind: RowKind = "value"

    def __post_init__(self) -> None:
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


def _spec(read: Callable[[ContainerSample], float]) -> Getter:
    """Wrap a getter of a limit: 0 (unlimited) yields no sample, as in cAdvisor."""

    def get(s: ContainerSample) -> float | None:
        v = read(s)
        return v if v else None

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
    ),
    ContainerMetric(
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed, in seconds.",
        "counter",
        _stat(lambda s: s.stats.cpu_user_usage / NS_PER_SECOND),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed, in seconds.",
        "counter",
        _stat(lambda s: s.stats.cpu_system_usage / NS_PER_SECOND),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, page cache included.",
        "gauge",
        _stat(lambda s: s.stats.memory_usage),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_memory_cache",
        "Page cache memory in bytes (cgroup v2: file).",
        "gauge",
        _stat(lambda s: s.stats.memory_cache),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_memory_working_set_bytes",
        "Memory usage minus inactive file pages, in bytes: what the OOM killer weighs.",
        "gauge",
        _stat(lambda s: s.stats.memory_working_set),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_network_receive_bytes_total",
        "Cumulative bytes received over all of the container's interfaces.",
        "counter",
        _stat(lambda s: s.stats.net_rx_bytes),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_network_transmit_bytes_total",
        "Cumulative bytes transmitted over all of the container's interfaces.",
        "counter",
        _stat(lambda s: s.stats.net_tx_bytes),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_fs_reads_bytes_total",
        "Cumulative bytes read from block devices.",
        "counter",
        _stat(lambda s: s.stats.blk_read_bytes),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_fs_writes_bytes_total",
        "Cumulative bytes written to block devices.",
        "counter",
        _stat(lambda s: s.stats.blk_write_bytes),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_fs_reads_total",
        "Cumulative block device read operations.",
        "counter",
        _stat(lambda s: s.stats.blk_read_ops),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_fs_writes_total",
        "Cumulative block device write operations.",
        "counter",
        _stat(lambda s: s.stats.blk_write_ops),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_spec_memory_limit_bytes",
        "Memory limit in bytes; absent when unlimited.",
        "gauge",
        _spec(lambda s: s.info.memory_limit),
    ),
    ContainerMetric(
        "container_spec_cpu_quota",
        "CPU quota in microseconds per container_spec_cpu_period; absent when unlimited.",
        "gauge",
        _spec(lambda s: s.info.cpu_limit * CPU_PERIOD_US // 1000),
    ),
    ContainerMetric(
        "container_spec_cpu_period",
        "CPU period in microseconds that container_spec_cpu_quota is measured against.",
        "gauge",
        _spec(lambda s: CPU_PERIOD_US if s.info.cpu_limit else 0),
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
    ),
    ContainerMetric(
        "container_threads",
        "Tasks in the container's cgroup, every thread of every process: the cgroup's "
        "pids.current where the kernel has it (v2, v1 pids), else the processes' Threads summed.",
        "gauge",
        _proc(lambda s: s.processes.threads),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_file_descriptors",
        "Open file descriptors of the container's processes (a stat of /proc/<pid>/fd on "
        "Linux >= 6.2, else a listing of it).",
        "gauge",
        _proc(lambda s: s.processes.fds),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_last_seen",
        "When the exporter last saw the container, unix seconds.",
        "gauge",
        kind="poll_time",
    ),
    ContainerMetric(
        "sysinner_container_state",
        "1 for the container's current state (running, stopped, starting), 0 for the others.",
        "gauge",
        kind="state",
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


def container_labels(sample: ContainerSample) -> dict[str, str]:
    """Return the identifying labels of every series of a container."""
    info = sample.info
    labels = {"name": info.name, "id": info.id, "image": info.image}
    if sample.app is not None and sample.replica is not None:
        labels["app"] = sample.app
        labels["replica"] = str(sample.replica)
    return labels


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


def build_registry(
    view: SnapshotView,
    *,
    remediation: RemediationView | None = None,
) -> CollectorRegistry:
    """Return the registry of the live families: health, process, platform.

    Container families are not on it: :mod:`exporter.exposition` renders them
    from the metric table, once per snapshot.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterHealthCollector(view))
    if remediation is not None:
        registry.register(RemediationCollector(remediation))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
