"""What a poll produces, and the read-only view of it that renderers and health take.

A leaf: the poller writes these, :mod:`exporter.exposition`,
:mod:`exporter.metrics` and the API's health routes read them through
:class:`SnapshotView`, and none of them needs to know who polls.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

from exporter.models import ContainerInfo, ContainerStats

#: The metric groups ``--collect.disable`` may name (cAdvisor's ``--disable_metrics``):
#: each row of the container table belongs to one, or to none (always on).
COLLECT_GROUPS = (
    "cpu",
    "memory",
    "oom",
    "network",
    "blkio",
    "fs",
    "spec",
    "processes",
    "health",
    "lifecycle",
)


class ErrorKind(StrEnum):
    """The kinds of poll error, as they appear in ``sysinner_exporter_errors_total``."""

    LIST = "list"
    INSPECT = "inspect"
    INSPECT_LATE = "inspect_late"
    STATS = "stats"
    STATS_TIMEOUT = "stats_timeout"
    PROCESSES = "processes"
    EVENTS = "events"  # the engine's event stream broke (or would not open)


class PollPhase(StrEnum):
    """The phases of a poll, as they appear in ``sysinner_exporter_poll_phase_duration_seconds``."""

    LIST = "list"
    INSPECT = "inspect"
    STATS = "stats"  # process counts are read alongside


class ProcessCounts(NamedTuple):
    """How many processes, threads and open file descriptors a container has."""

    processes: int
    threads: int
    fds: int


class FsUsage(NamedTuple):
    """A container's writable layer: bytes it uses, and its filesystem's size and inodes."""

    usage: int
    limit: int
    inodes_total: int
    inodes_free: int


@dataclass(frozen=True, slots=True)
class ContainerSample:
    """One tracked container as the latest poll saw it."""

    info: ContainerInfo
    app: str | None
    replica: int | None
    stats: ContainerStats | None = None
    stats_source: str | None = None
    stale: bool = False
    processes: ProcessCounts | None = None
    fs: FsUsage | None = None  # from the slower layer sizing; None until sized


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The outcome of one poll: what was seen, when, and whether the engine answered."""

    containers: tuple[ContainerSample, ...] = ()
    completed_at: float = 0.0
    duration_seconds: float = 0.0
    #: (phase, seconds) of each phase the poll went through, in order.
    phase_seconds: tuple[tuple[PollPhase, float], ...] = ()
    engine_up: bool = False
    error: str | None = None
    #: The host's totals, rendered as cAdvisor's root container (id="/"); None: unknown.
    host: ContainerStats | None = None
    #: Containers listed but left out because they are not managed (``--collect.all`` is off).
    unmanaged_left_out: int = 0


@dataclass
class PollHealth:
    """Counters about polling itself, cumulative over the process's life."""

    polls: int = 0
    last_success_at: float = 0.0
    errors: Counter[ErrorKind] = field(default_factory=Counter)


class SnapshotView(Protocol):
    """The latest poll, read-only: what the renderers and the health routes rely on.

    :class:`~exporter.poller.Poller` provides it; :class:`HeldSnapshot` is one
    that holds what it is given (the README's reference, tests, benches).
    """

    @property
    def snapshot(self) -> Snapshot:
        """Return the latest snapshot."""
        ...

    @property
    def health(self) -> PollHealth:
        """Return the counters about polling so far."""
        ...

    @property
    def stats_source_name(self) -> str:
        """Return the name of the stats source in use."""
        ...

    @property
    def interval(self) -> float:
        """Return the seconds between two polls."""
        ...

    @property
    def held_files(self) -> int:
        """Return how many files the stats source holds open between polls."""
        ...

    @property
    def held_files_budget(self) -> int:
        """Return how many files the stats source may hold open at most."""
        ...


@dataclass
class HeldSnapshot:
    """A :class:`SnapshotView` of a snapshot given to it, with no poller behind it."""

    snapshot: Snapshot = field(default_factory=Snapshot)
    health: PollHealth = field(default_factory=PollHealth)
    stats_source_name: str = "docker"
    interval: float = 10.0
    held_files: int = 0
    held_files_budget: int = 0
