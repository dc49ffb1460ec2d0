"""The metric table, and the prometheus_client collectors of the live families.

Container metrics are a table of :class:`ContainerMetric` specs; names follow
cAdvisor's so the common Docker dashboards work unchanged. ``collect()``
builds fresh families at every call and does no I/O.
Every container series carries ``name``, ``id``, ``image`` and, for managed
containers, ``app`` and ``replica`` (decimal); Docker labels go only on the
single ``sysinner_container_info`` series, never on every series.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.collector import Collector, ContainerSample, ErrorKind, PollHealth

MetricType = Literal["counter", "gauge"]
Getter = Callable[[ContainerSample], float | None]

NS_PER_SECOND = 1e9
#: cAdvisor reports CPU quota against the kernel's default 100 ms period.
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class ContainerMetric:
    """One row of the metric table: a per-container series and how to read it."""

    name: str
    help: str
    type: MetricType
    value: Getter

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
        "Processes in the container's cgroup (those started by docker exec included).",
        "gauge",
        _proc(lambda s: s.processes.processes),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_threads",
        "Threads in the container's processes.",
        "gauge",
        _proc(lambda s: s.processes.threads),  # type: ignore[union-attr]
    ),
    ContainerMetric(
        "container_file_descriptors",
        "Open file descriptors of the container's processes.",
        "gauge",
        _proc(lambda s: s.processes.fds),  # type: ignore[union-attr]
    ),
)

_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label_name(key: str) -> str:
    """Return a valid Prometheus label name for a Docker label key (``label_`` prefixed)."""
    return "label_" + _INVALID_LABEL_CHARS.sub("_", key)


def container_labels(sample: ContainerSample, with_id: bool = True) -> dict[str, str]:
    """Return the identifying labels of every series of a container.

    Without ``with_id`` the 64-character ``id`` is left out (names are unique
    on a host, and in a sysinner fleet across hosts): ~40% fewer label bytes.
    """
    info = sample.info
    labels = {"name": info.name, "id": info.id, "image": info.image}
    if not with_id:
        del labels["id"]
    if sample.app is not None and sample.replica is not None:
        labels["app"] = sample.app
        labels["replica"] = str(sample.replica)
    return labels


class ExporterHealthCollector(PromCollector):
    """Renders the exporter's own health: up, poll timings, errors, build info."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        """Yield the exporter's own families."""
        snapshot = self._collector.snapshot
        health: PollHealth = self._collector.health
        yield _single(
            "sysinner_exporter_up",
            "1 when the engine answered the last poll.",
            "gauge",
            1.0 if snapshot.engine_up else 0.0,
        )
        yield _single(
            "sysinner_exporter_poll_duration_seconds",
            "How long the last poll took.",
            "gauge",
            snapshot.duration_seconds,
        )
        phases = Metric(
            "sysinner_exporter_poll_phase_duration_seconds",
            "How long each phase of the last poll took: list, inspect, stats (and process counts).",
            "gauge",
        )
        for phase, seconds in snapshot.phase_seconds:
            phases.add_sample(
                "sysinner_exporter_poll_phase_duration_seconds", {"phase": phase}, seconds
            )
        yield phases
        yield _single(
            "sysinner_exporter_last_successful_poll_timestamp_seconds",
            "When the last successful poll completed, unix seconds; 0 before the first.",
            "gauge",
            health.last_success_at,
        )
        yield _single(
            "sysinner_exporter_polls_total",
            "Polls completed, failed ones included.",
            "counter",
            float(health.polls),
        )
        errors = Metric("sysinner_exporter_errors", "Poll errors by kind.", "counter")
        for kind in (
            ErrorKind.LIST,
            ErrorKind.INSPECT,
            ErrorKind.INSPECT_LATE,
            ErrorKind.STATS,
            ErrorKind.STATS_TIMEOUT,
            ErrorKind.PROCESSES,
        ):
            errors.add_sample(
                "sysinner_exporter_errors_total", {"kind": kind}, float(health.errors[kind])
            )
        yield errors
        yield _single(
            "sysinner_exporter_containers",
            "Containers tracked by the last poll.",
            "gauge",
            float(len(snapshot.containers)),
        )
        source = Metric(
            "sysinner_exporter_stats_source", "Always 1; names the stats source in use.", "gauge"
        )
        source.add_sample(
            "sysinner_exporter_stats_source", {"source": self._collector.stats_source_name}, 1.0
        )
        yield source
        build = Metric("sysinner_exporter_build", "Always 1; the exporter's version.", "info")
        build.add_sample(
            "sysinner_exporter_build_info",
            {"version": __version__, "python_version": platform.python_version()},
            1.0,
        )
        yield build


def _single(name: str, help_text: str, type_: MetricType, value: float) -> Metric:
    family = Metric(name.removesuffix("_total") if type_ == "counter" else name, help_text, type_)
    family.add_sample(name, {}, value)
    return family


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


class RemediationCollector(PromCollector):
    """Renders remediation's decisions and quarantines; reads memory only."""

    def __init__(self, remediation: RemediationView) -> None:
        self._remediation = remediation

    def collect(self) -> Iterator[Metric]:
        """Yield the actions counter and the quarantined gauge."""
        actions = Metric(
            "sysinner_exporter_remediation_actions",
            "Alerts judged by remediation, by action and result (restarted, cooldown, ...).",
            "counter",
        )
        for (action, result), count in sorted(self._remediation.action_counts().items()):
            actions.add_sample(
                "sysinner_exporter_remediation_actions_total",
                {"action": action, "result": result},
                float(count),
            )
        yield actions
        yield _single(
            "sysinner_exporter_remediation_quarantined",
            "Containers remediation will not restart until their window passes or an "
            "operator clears them.",
            "gauge",
            float(self._remediation.quarantined_count()),
        )
        # The state store failing is remediation's fault alone: these say so.
        yield _single(
            "sysinner_exporter_remediation_state_up",
            "1 while remediation's state database works; 0 while alerts answer 503 and it is "
            "reopened with a backoff (the log and /readyz say why).",
            "gauge",
            1.0 if self._remediation.state_up() else 0.0,
        )
        yield _single(
            "sysinner_exporter_remediation_state_write_failures_total",
            "Ledger writes that failed (another process' lock, a full disk, ...) and were owed "
            "until the state database works again.",
            "counter",
            float(self._remediation.state_write_failures),
        )
        yield _single(
            "sysinner_exporter_remediation_state_owed_writes",
            "Ledger writes waiting for the state database.",
            "gauge",
            float(self._remediation.owed_writes()),
        )
        yield _single(
            "sysinner_exporter_remediation_state_lost_total",
            "Opens that found the state database empty or without its schema: every "
            "quarantine, cooldown and dedupe memory it held was lost.",
            "counter",
            float(self._remediation.state_lost_count()),
        )
        # A fan-out receiver posts every alert to every host: N-1 of them land here.
        yield _single(
            "sysinner_exporter_remediation_not_here_total",
            "Alerts naming a container this host does not have: answered not-found without "
            "a history row (pull mode never fetches them).",
            "counter",
            float(self._remediation.not_here),
        )


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


class AlertPullCollector(PromCollector):
    """Renders pull mode's poll of Alertmanager; reads memory only."""

    def __init__(self, puller: AlertPullView) -> None:
        self._puller = puller

    def collect(self) -> Iterator[Metric]:
        """Yield the poll's up, last success, polls, alerts and errors by kind."""
        yield _single(
            "sysinner_exporter_alertmanager_up",
            "1 when the last poll of Alertmanager got an answer from a ready peer; 0 while none "
            "answers (nothing is restarted meanwhile).",
            "gauge",
            1.0 if self._puller.up else 0.0,
        )
        yield _single(
            "sysinner_exporter_alertmanager_last_success_timestamp_seconds",
            "When a poll of Alertmanager last succeeded, unix seconds; 0 before the first.",
            "gauge",
            self._puller.last_success_at,
        )
        yield _single(
            "sysinner_exporter_alertmanager_polls_total",
            "Polls of Alertmanager, failed ones included.",
            "counter",
            float(self._puller.polls),
        )
        yield _single(
            "sysinner_exporter_alertmanager_alerts",
            "Active, unsilenced, uninhibited alerts of the last answer that are this host's.",
            "gauge",
            float(self._puller.alerts_here),
        )
        errors = Metric(
            "sysinner_exporter_alertmanager_errors",
            "Failed requests to Alertmanager peers by kind: unreachable, timeout, status, "
            "decode, not-ready (the cluster is settling).",
            "counter",
        )
        for kind, count in sorted(self._puller.error_counts().items()):
            errors.add_sample(
                "sysinner_exporter_alertmanager_errors_total", {"kind": kind}, float(count)
            )
        yield errors


def build_registry(
    collector: Collector,
    *,
    remediation: RemediationView | None = None,
    alertpull: AlertPullView | None = None,
) -> CollectorRegistry:
    """Return the registry of the live families: health, process, platform.

    Container families are not on it: :mod:`exporter.exposition` renders them
    from the metric table, once per snapshot.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterHealthCollector(collector))
    if remediation is not None:
        registry.register(RemediationCollector(remediation))
    if alertpull is not None:
        registry.register(AlertPullCollector(alertpull))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
