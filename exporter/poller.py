"""Polling: the engine's containers and their stats, kept as the latest Snapshot.

A poll lists the containers, inspects the tracked ones (pid, start time,
limits) and reads the stats of the running ones, all concurrently and each
call under its own deadline. Exposition never waits on any of this: it
renders whatever :attr:`Poller.snapshot` holds.

Inspect results are reused across polls while the container's list entry is
unchanged: the engine's status text ("Up 3 hours") changes on every restart,
and an entry is re-inspected anyway once it is older than a jittered
``inspect_max_age`` so a ``docker update`` of the limits shows up too. On a
host of thousands of containers this halves the engine calls of a poll.

The engine holds a container's lock while it starts or removes it, and an
inspect of that container waits for it, sometimes for seconds. So inspects
have a soft deadline, one interval after the poll started: a container whose
inspect has not answered by then is left out of this snapshot (counted as
``inspect_late``), and its inspect goes on in the background into the cache,
where the next poll finds it. One slow container never holds up the others,
and a removed one leaves ``/metrics`` at the next poll.

Given an event stream (``events=``, the driver's ``GET /events``), the
poller lists only at start, after every reconnect and every
``resync_interval``: between those, the stream says what changed. An event
re-inspects its container at once (a destroy drops it from the snapshot at
once, without a poll), and a steady poll reads stats and process counts of
the containers it knows and asks the engine nothing else. The stream
breaking is a failed poll: ``up`` 0, reconnects with a backoff, then a
list heals whatever happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from exporter.concurrency import map_bounded
from exporter.drivers.base import ContainerEvent, ContainerEvents, Driver
from exporter.errors import (
    ConflictError,
    DriverError,
    DriverTimeoutError,
    EngineUnreachableError,
    NotFoundError,
)
from exporter.fsusage import LayerSizer
from exporter.models import ContainerInfo, ContainerState, ContainerStats
from exporter.naming import NamingScheme
from exporter.processes import count_processes
from exporter.snapshot import (
    ContainerSample,
    ErrorKind,
    FsUsage,
    PollHealth,
    PollPhase,
    ProcessCounts,
    Snapshot,
)
from exporter.sources.base import SourcedStats, StatsSource

log = logging.getLogger(__name__)

#: A container whose stats failed keeps its previous sample for this many polls.
STALE_POLLS_KEPT = 1
#: Re-inspect an unchanged container at least this often (seconds, before jitter).
INSPECT_MAX_AGE = 300.0
#: The events that change what an inspect says (destroy: that the container is gone).
#: Never exec_*: a container's healthcheck makes three of those a second.
EVENT_ACTIONS = (
    "create",
    "start",
    "die",
    "destroy",
    "rename",
    "pause",
    "unpause",
    "oom",
    "health_status",
    "update",
)
#: Destroyed ids remembered, so that an inspect or a list under way cannot bring one back.
DESTROYED_KEPT = 4096
#: Containers being re-inspected after events at most; past it the next poll lists instead.
MAX_REFRESHING = 1024
#: Containers re-inspected since the last list, remembered at most (past it: list again).
TOUCHED_KEPT = 8192
#: The event stream's reconnect delay: the first, and the longest (at most half an interval).
RECONNECT_FIRST = 0.05
RECONNECT_LONGEST = 5.0


@dataclass(frozen=True, slots=True)
class _Listed:
    """What a poll keeps of a list entry: the list's models are dropped before inspecting."""

    id: str
    name: str
    # (state, status, image id): changes when the container restarts or changes
    # image. A tuple of the driver's (shared) strings, not one string made per
    # container per poll.
    fingerprint: tuple[ContainerState, str, str]
    app: str | None
    replica: int | None


class _Tracked(NamedTuple):
    """A tracked container: its latest inspect and what its name says."""

    info: ContainerInfo
    app: str | None
    replica: int | None


ProcessCounter = Callable[[dict[str, int]], dict[str, ProcessCounts]]


class Poller:
    """Polls a Driver and a StatsSource on an interval and keeps the latest Snapshot."""

    def __init__(
        self,
        driver: Driver,
        stats_source: StatsSource,
        *,
        naming: NamingScheme,
        interval: float = 10.0,
        call_timeout: float = 5.0,
        concurrency: int = 256,
        include_unmanaged: bool = False,
        process_counter: ProcessCounter | None = count_processes,
        clock: Callable[[], float] = time.time,
        inspect_max_age: float = INSPECT_MAX_AGE,
        host_reader: Callable[[], ContainerStats | None] | None = None,
        layer_sizer: LayerSizer | None = None,
        layer_interval: float = 60.0,
        events: ContainerEvents | None = None,
        resync_interval: float = 300.0,
    ) -> None:
        self._driver = driver
        self._source = stats_source
        self._naming = naming
        self.interval = interval
        self._call_timeout = call_timeout
        self._concurrency = concurrency
        self._include_unmanaged = include_unmanaged
        self._process_counter = process_counter
        self._clock = clock
        self._inspect_max_age = inspect_max_age
        self._host_reader = host_reader
        # Layer sizing walks directories: its own slower rounds, in the background.
        self._sizer = layer_sizer
        self._layer_interval = layer_interval
        self._layers: dict[str, FsUsage] = {}
        #: Listed containers left out (unmanaged, without --collect.all) at the last list.
        self._left_out = 0
        self._next_sizing = 0.0
        self._sizing: asyncio.Task[None] | None = None
        # id -> (list fingerprint, monotonic time it expires, inspected info)
        self._inspected: dict[
            str, tuple[tuple[ContainerState, str, str], float, ContainerInfo]
        ] = {}
        self._inspecting: set[str] = set()  # ids whose inspect is under way
        self._background: set[asyncio.Task[object]] = set()
        self._previous: dict[str, ContainerSample] = {}
        self._stale_polls: dict[str, int] = {}
        self.snapshot = Snapshot()
        self.health = PollHealth()
        self._polled = asyncio.Event()
        # What the last list (and the events since) say is tracked, by id.
        self._known: dict[str, _Tracked] = {}
        # Event discovery: the stream, and what it has told since the last list.
        self._events = events
        self._resync_interval = resync_interval
        self._following = False  # the stream task runs (in run())
        self._stream_up = False
        self._stream_error: str | None = None
        self._resync_wanted = True
        self._resync_due_at = 0.0
        self._touched: dict[str, float] = {}  # id -> monotonic time an event's inspect answered
        self._destroyed: OrderedDict[str, None] = OrderedDict()
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()  # refreshing ids with another event since
        self._wake = asyncio.Event()
        self._stream_settled = asyncio.Event()  # the stream opened or failed once

    @property
    def stats_source_name(self) -> str:
        """Return the name of the stats source in use."""
        return self._source.name

    @property
    def held_files(self) -> int:
        """Return how many files the stats source holds open between polls."""
        return int(getattr(self._source, "held_files", 0))

    @property
    def held_files_budget(self) -> int:
        """Return how many files the stats source may hold open at most."""
        return int(getattr(self._source, "held_files_budget", 0))

    def _listed(self, c: ContainerInfo) -> _Listed | None:
        """Return what to keep of a list entry, or None when it is not tracked."""
        parsed = self._naming.parse(c.name)
        if parsed is None and not self._include_unmanaged:
            return None
        return _Listed(
            id=c.id,
            name=c.name,
            fingerprint=(c.state, c.status, c.image_id),
            app=parsed.app if parsed else None,
            replica=parsed.replica if parsed else None,
        )

    def _cached(self, entry: _Listed, now: float) -> ContainerInfo | None:
        cached = self._inspected.get(entry.id)
        if cached is not None and cached[0] == entry.fingerprint and cached[1] > now:
            return cached[2]
        return None

    async def _inspect_all(
        self, tracked: Sequence[_Listed], deadline: float
    ) -> list[ContainerInfo | None]:
        """Return each entry's inspected info; None for gone, failed or late ones."""
        now = time.monotonic()
        infos = [self._cached(e, now) for e in tracked]
        misses = [
            e
            for e, info in zip(tracked, infos, strict=True)
            if info is None and e.id not in self._inspecting
        ]
        if misses:
            batch = asyncio.create_task(
                map_bounded(self._inspect_into_cache, misses, self._concurrency),
                name="poller-inspect",
            )
            self._background.add(batch)
            batch.add_done_callback(self._settled)
            # asyncio.wait, unlike wait_for, leaves the batch running at the deadline.
            await asyncio.wait({batch}, timeout=max(deadline - time.monotonic(), 0.0))
            # What came in meanwhile, from this batch or from earlier polls' ones.
            infos = [
                info if info is not None else self._cached(e, now)
                for e, info in zip(tracked, infos, strict=True)
            ]
        late = sum(1 for e in tracked if e.id in self._inspecting)
        if late:
            self.health.errors[ErrorKind.INSPECT_LATE] += late
            # Under churn this is every poll; the counter is the signal, the log a trace.
            log.debug("%d inspects still under way at the poll's deadline; left for later", late)
        return infos

    def _settled(self, batch: asyncio.Task[object]) -> None:
        self._background.discard(batch)
        if not batch.cancelled() and (error := batch.exception()) is not None:
            # The one place a bug in inspecting is told, whether the batch ended
            # inside its poll or after it; the containers it missed are left out.
            log.error("inspecting failed unexpectedly", exc_info=error)

    async def _inspect_into_cache(self, entry: _Listed) -> None:
        self._inspecting.add(entry.id)
        try:
            info = await self._inspect_now(entry)
        finally:
            self._inspecting.discard(entry.id)
        if info is not None:
            # Jitter spreads re-inspection over polls instead of all at once.
            expires = time.monotonic() + self._inspect_max_age * random.uniform(0.5, 1.0)
            self._inspected[entry.id] = (entry.fingerprint, expires, info)

    async def _inspect_now(self, entry: _Listed) -> ContainerInfo | None:
        try:
            async with asyncio.timeout(self._call_timeout):
                return await self._driver.container_inspect(entry.id)
        except NotFoundError:
            return None  # removed between list and inspect: not an error
        except (DriverError, TimeoutError) as e:
            self.health.errors[ErrorKind.INSPECT] += 1
            # Our own deadline raises a bare TimeoutError, whose text is empty.
            why = str(e) or f"no answer within {self._call_timeout:g}s"
            log.warning("inspect %s failed: %s", entry.name, why)
            return None

    async def _read_stats(self, running: Sequence[ContainerInfo]) -> dict[str, SourcedStats]:
        try:
            async with asyncio.timeout(self._call_timeout * 2):
                results = await self._source.read_many(running)
        except TimeoutError:
            self.health.errors[ErrorKind.STATS_TIMEOUT] += len(running)
            return {}
        samples: dict[str, SourcedStats] = {}
        for cid, result in results.items():
            if isinstance(result, SourcedStats):
                samples[cid] = result
            elif isinstance(result, NotFoundError | ConflictError):
                # Gone or stopped mid-poll: not an error. Following events, it may
                # also be a missed die: ask the engine what the container is now.
                if self._following:
                    self._refresh_soon(cid)
            elif isinstance(result, DriverTimeoutError | TimeoutError):
                self.health.errors[ErrorKind.STATS_TIMEOUT] += 1
            else:
                self.health.errors[ErrorKind.STATS] += 1
                log.warning("stats of %s failed: %s", cid[:12], result)
        return samples

    async def poll_once(self) -> Snapshot:
        """Poll once, update :attr:`snapshot` and return it.

        Lists and inspects first unless the event stream is followed and no
        resync is due; a poll while the stream is down fails as a failed list does.
        """
        started = time.monotonic()
        phases: list[tuple[PollPhase, float]] = []
        if self._following and not self._stream_up:
            return self._failed(
                started, self._stream_error or "the engine's event stream is not open"
            )
        if not self._following or self._resync_wanted or started >= self._resync_due_at:
            error = await self._discover(started, phases)
            if error is not None:
                phases.append((PollPhase.LIST, time.monotonic() - started))
                return self._failed(started, error, tuple(phases))
        read_started = time.monotonic()
        rows = list(self._known.values())
        running = [row.info for row in rows if row.info.state is ContainerState.RUNNING]
        # Both catch their own errors. One after the other, not gathered: both are
        # syscalls in a worker thread, and two such threads hand each other the GIL
        # at every syscall (measured here: the pair took twice the wall it does in turn).
        stats = await self._read_stats(running)
        processes = {cid: s.processes for cid, s in stats.items() if s.processes is not None}
        # The cgroup source counts in its own pass; the counter takes the rest.
        uncounted = [c for c in running if not ((s := stats.get(c.id)) and s.counted)]
        processes.update(await self._count_processes(uncounted))
        host = await self._read_host()
        read_at = time.monotonic()
        self._size_layers(running)
        phases.append((PollPhase.STATS, read_at - read_started))
        if self._following and not self._stream_up:
            # The stream broke during this poll: what it read may already be stale.
            return self._failed(started, self._stream_error or "the engine's event stream broke")

        samples: list[ContainerSample] = []
        seen: set[str] = set()
        for row in rows:
            # Events during the read may have removed or re-inspected the container.
            now_row = self._known.get(row.info.id)
            if now_row is None:
                continue
            info = now_row.info
            seen.add(info.id)
            got = stats.get(info.id) if info.state is ContainerState.RUNNING else None
            sample = ContainerSample(
                info=info,
                app=now_row.app,
                replica=now_row.replica,
                stats=got.stats if got else None,
                stats_source=got.source if got else None,
                processes=processes.get(info.id) if info.pid == row.info.pid else None,
                fs=self._layers.get(info.id),
            )
            if got is None and info.state is ContainerState.RUNNING:
                sample = self._stale_or_bare(sample)
            else:
                self._stale_polls.pop(info.id, None)
            samples.append(sample)
        self._previous = {s.info.id: s for s in samples}
        for gone in set(self._stale_polls) - seen:
            del self._stale_polls[gone]

        self.health.last_success_at = self._clock()
        self.snapshot = Snapshot(
            containers=tuple(samples),
            completed_at=self.health.last_success_at,
            duration_seconds=time.monotonic() - started,
            phase_seconds=tuple(phases),
            engine_up=True,
            host=host,
            unmanaged_left_out=self._left_out,
        )
        return self._finish(self.snapshot)

    def _size_layers(self, running: Sequence[ContainerInfo]) -> None:
        """Start a round of layer sizing when one is due and none is under way."""
        if self._sizer is None or (self._sizing is not None and not self._sizing.done()):
            return
        if time.monotonic() < self._next_sizing:
            return
        self._next_sizing = time.monotonic() + self._layer_interval
        sizer, ids = self._sizer, {c.id for c in running}

        async def round_() -> None:
            try:
                sized = await asyncio.to_thread(sizer.measure, list(running))
            except Exception as e:  # noqa: BLE001 - sizing must never break polling
                log.warning("sizing writable layers failed: %s", e)
                return
            # Bounded by the running containers: the gone ones' figures go.
            self._layers = {
                cid: usage for cid, usage in {**self._layers, **sized}.items() if cid in ids
            }

        self._sizing = asyncio.create_task(round_(), name="poller-layers")
        self._background.add(self._sizing)
        self._sizing.add_done_callback(self._background.discard)

    async def _read_host(self) -> ContainerStats | None:
        """Return the host's totals (cAdvisor's root container), None when they cannot be read."""
        if self._host_reader is None:
            return None
        try:
            return await asyncio.to_thread(self._host_reader)
        except Exception as e:  # noqa: BLE001 - the host's totals must not break the poll
            log.warning("reading the host's totals failed: %s", e)
            return None

    def _failed(
        self, started: float, error: str, phases: tuple[tuple[PollPhase, float], ...] = ()
    ) -> Snapshot:
        """Publish and return a failed poll's snapshot, forgetting what the engine said."""
        self.snapshot = Snapshot(
            completed_at=self._clock(),
            duration_seconds=time.monotonic() - started,
            phase_seconds=phases,
            engine_up=False,
            error=error,
        )
        self._forget_all()
        return self._finish(self.snapshot)

    def _forget_all(self) -> None:
        self._previous.clear()
        self._stale_polls.clear()
        self._inspected.clear()
        self._known.clear()
        self._touched.clear()
        self._resync_wanted = True

    async def _discover(self, started: float, phases: list[tuple[PollPhase, float]]) -> str | None:
        """List and inspect into :attr:`_known`; return why it failed, or None."""
        list_started = time.monotonic()
        try:
            async with asyncio.timeout(self._call_timeout):
                listed = await self._driver.container_list()
        except (DriverError, TimeoutError) as e:
            self.health.errors[ErrorKind.LIST] += 1
            return str(e) or type(e).__name__
        listed_at = time.monotonic()
        tracked = [entry for c in listed if (entry := self._listed(c)) is not None]
        listed_ids = {c.id for c in listed}
        # Counted at each list (events do not track the unmanaged), said by /readyz and check.
        self._left_out = len(listed) - len(tracked)
        for gone in self._inspected.keys() - listed_ids:
            del self._inspected[gone]
        del listed  # thousands of list models are megabytes; the inspected ones replace them
        inspected = await self._inspect_all(tracked, deadline=started + self.interval)
        inspected_at = time.monotonic()
        rows = {
            info.id: _Tracked(info, entry.app, entry.replica)
            for info, entry in zip(inspected, tracked, strict=True)
            if info is not None
        }
        if self._following:
            self._merge_events(rows, tracked, list_started)
        del tracked, inspected  # a megabyte at thousands of containers, not needed past here
        self._known = rows
        phases.append((PollPhase.LIST, listed_at - started))
        phases.append((PollPhase.INSPECT, inspected_at - listed_at))
        return None

    def _merge_events(
        self, rows: dict[str, _Tracked], tracked: Sequence[_Listed], list_started: float
    ) -> None:
        """Let what events said since the list started win over the list, and keep late ones."""
        late = False
        for entry in tracked:
            if entry.id not in rows and entry.id in self._inspecting:
                late = True
                if (known := self._known.get(entry.id)) is not None:
                    rows[entry.id] = known  # inspect late: its last known state beats a gap
        for cid, at in self._touched.items():
            if at >= list_started:
                if (known := self._known.get(cid)) is not None:
                    rows[cid] = known
                else:
                    rows.pop(cid, None)  # renamed out of tracking since
        for cid in self._destroyed.keys() & rows.keys():
            del rows[cid]
        self._touched = {cid: at for cid, at in self._touched.items() if at >= list_started}
        # Inspects still under way land in the cache: the next poll lists again to take them.
        self._resync_wanted = late
        self._resync_due_at = time.monotonic() + self._resync_interval

    # -- event discovery ----------------------------------------------------

    def _on_event(self, event: ContainerEvent) -> None:
        """Apply one event: a destroy at once, anything else by re-inspecting."""
        if event.action == "destroy":
            self._forget(event.id)
            return
        # The event names the container (after a rename, by its new name): one that is
        # not tracked and would not be is not worth an inspect, however it churns.
        name = event.attributes.get("name")
        if name is not None and event.id not in self._known and not self._tracks(name):
            return
        self._refresh_soon(event.id)

    def _tracks(self, name: str) -> bool:
        return self._include_unmanaged or self._naming.parse(name) is not None

    def _forget(self, cid: str) -> None:
        """Drop a container that no longer exists and publish the snapshot without it."""
        self._destroyed[cid] = None
        self._destroyed.move_to_end(cid)
        while len(self._destroyed) > DESTROYED_KEPT:
            self._destroyed.popitem(last=False)
        self._known.pop(cid, None)
        self._touched.pop(cid, None)
        self._inspected.pop(cid, None)
        self._previous.pop(cid, None)
        self._stale_polls.pop(cid, None)
        self._publish_without(cid)

    def _publish_without(self, cid: str) -> None:
        snapshot = self.snapshot
        if any(s.info.id == cid for s in snapshot.containers):
            kept = tuple(s for s in snapshot.containers if s.info.id != cid)
            self.snapshot = dataclasses.replace(snapshot, containers=kept)

    def _publish_changed(self, row: _Tracked) -> None:
        """Put a re-inspected container's new info in the snapshot at once (exit code, health)."""
        snapshot = self.snapshot
        for index, old in enumerate(snapshot.containers):
            if old.info.id == row.info.id:
                sample = dataclasses.replace(old, info=row.info, app=row.app, replica=row.replica)
                if row.info.state is not ContainerState.RUNNING or row.info.pid != old.info.pid:
                    # Another process, or none: the old numbers are not its.
                    sample = dataclasses.replace(
                        sample, stats=None, stats_source=None, stale=False, processes=None
                    )
                containers = list(snapshot.containers)
                containers[index] = sample
                self.snapshot = dataclasses.replace(snapshot, containers=tuple(containers))
                return

    def _refresh_soon(self, cid: str) -> None:
        """Re-inspect ``cid`` in the background; one inspect per container at a time."""
        if cid in self._destroyed:
            return
        if cid in self._refreshing:
            self._dirty.add(cid)  # inspect again once the one under way answers
            return
        if len(self._refreshing) >= MAX_REFRESHING:
            # More changes at once than inspects kept in flight: a list costs less.
            self._resync_wanted = True
            return
        task = asyncio.create_task(self._refresh(cid), name="poller-refresh")
        self._refreshing[cid] = task

    async def _refresh(self, cid: str) -> None:
        try:
            while True:
                self._dirty.discard(cid)
                await self._refresh_once(cid)
                if cid not in self._dirty:
                    return
        except Exception:  # a bug here must not go unseen, nor stop the others
            log.exception("re-inspecting %s after an event failed unexpectedly", cid[:12])
        finally:
            self._refreshing.pop(cid, None)
            self._dirty.discard(cid)

    async def _refresh_once(self, cid: str) -> None:
        try:
            async with asyncio.timeout(self._call_timeout):
                info = await self._driver.container_inspect(cid)
        except NotFoundError:
            self._forget(cid)
            return
        except (DriverError, TimeoutError) as e:
            self.health.errors[ErrorKind.INSPECT] += 1
            log.warning("inspect %s after an event failed: %s", cid[:12], str(e) or "timed out")
            self._resync_wanted = True  # the next poll lists: it heals what this missed
            return
        if cid in self._destroyed or not self._stream_up:
            return  # destroyed meanwhile, or the stream broke: the resync will say
        self._touched[cid] = time.monotonic()
        if len(self._touched) > TOUCHED_KEPT:
            # A list says it all afresh; the entries older than it go then.
            self._resync_wanted = True
        self._inspected.pop(cid, None)  # the next list inspects it afresh
        entry = self._listed(info)
        if entry is None:
            self._known.pop(cid, None)
            self._publish_without(cid)
            return
        row = _Tracked(info, entry.app, entry.replica)
        self._known[cid] = row
        self._publish_changed(row)

    async def _follow(self, events: ContainerEvents) -> None:
        """Follow the event stream forever: reconnect with a backoff, resync on each connect."""
        delay = RECONNECT_FIRST
        longest = min(RECONNECT_LONGEST, max(self.interval / 2, RECONNECT_FIRST))
        while True:
            opened = False
            try:
                async with events.container_events(EVENT_ACTIONS) as stream:
                    opened = True
                    if self._stream_error is not None:
                        log.info("the engine's event stream is open again")
                    self._stream_up = True
                    self._stream_error = None
                    self._resync_wanted = True
                    self._wake.set()  # list now: whatever happened while it was closed
                    self._stream_settled.set()
                    delay = RECONNECT_FIRST
                    async for event in stream:
                        self._on_event(event)
                error = "the engine's event stream ended"
            except EngineUnreachableError as e:
                # Not even opened: the engine is away, said in the words a failed list uses
                # (the README's troubleshooting quotes them).
                error = f"the engine's event stream: {e}" if opened else str(e)
            except (DriverError, TimeoutError) as e:
                error = f"the engine's event stream: {e}" if str(e) else "event stream timed out"
            except Exception as e:  # a bug must not leave a dead stream passing for a live one
                log.exception("following the engine's events failed unexpectedly")
                error = f"the engine's event stream: unexpected {type(e).__name__}: {e}"
            self._stream_lost(error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    def _stream_lost(self, error: str) -> None:
        """Mark the stream down: up 0 at once, as a failed poll; the reconnect lists again."""
        if self._stream_up or self._stream_error is None:
            self.health.errors[ErrorKind.EVENTS] += 1
            log.error("%s; reconnecting", error)
        self._stream_up = False
        self._stream_error = error
        self._stream_settled.set()
        self.snapshot = Snapshot(completed_at=self._clock(), engine_up=False, error=error)
        self._forget_all()

    def _stale_or_bare(self, sample: ContainerSample) -> ContainerSample:
        """Keep a running container's previous stats for one poll after a failed read."""
        cid = sample.info.id
        previous = self._previous.get(cid)
        misses = self._stale_polls.get(cid, 0) + 1
        self._stale_polls[cid] = misses
        if previous is None or previous.stats is None or misses > STALE_POLLS_KEPT:
            return sample
        return dataclasses.replace(
            sample, stats=previous.stats, stats_source=previous.stats_source, stale=True
        )

    async def _count_processes(self, running: Sequence[ContainerInfo]) -> dict[str, ProcessCounts]:
        if self._process_counter is None or not running:
            return {}
        counter = self._process_counter
        pids = {c.id: c.pid for c in running if c.pid > 0}
        try:
            # Reading /proc blocks; keep it off the event loop.
            return await asyncio.to_thread(counter, pids)
        except Exception as e:  # noqa: BLE001 - a broken /proc must not break the poll
            self.health.errors[ErrorKind.PROCESSES] += 1
            log.warning("counting processes failed: %s", e)
            return {}

    def _finish(self, snapshot: Snapshot) -> Snapshot:
        self.health.polls += 1
        self._polled.set()
        return snapshot

    async def wait_next_poll(self) -> Snapshot:
        """Return the snapshot of the next poll to complete."""
        self._polled.clear()
        await self._polled.wait()
        return self.snapshot

    async def run(self) -> None:
        """Poll forever, one poll every ``interval`` seconds, until cancelled.

        With an event stream, follow it meanwhile; a (re)connect polls at once.
        """
        follower: asyncio.Task[None] | None = None
        if self._events is not None:
            follower = asyncio.create_task(self._follow(self._events), name="poller-events")
            self._following = True
            # The stream opens (or fails) within milliseconds: the first poll knows which.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._call_timeout):
                    await self._stream_settled.wait()
        try:
            await self._poll_forever()
        finally:
            self._following = False
            self._stream_up = False
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower

    async def _poll_forever(self) -> None:
        engine_was_up: bool | None = None
        while True:
            started = time.monotonic()
            self._wake.clear()
            try:
                snapshot = await self.poll_once()
            except Exception:  # a bug in one poll must not end polling for good
                log.exception("poll failed unexpectedly")
            else:
                # Once when the engine stops answering, once when it is back: the
                # log is where a user looks first, and every poll would flood it.
                if not snapshot.engine_up and engine_was_up is not False:
                    log.error("engine unreachable: %s", snapshot.error)
                elif snapshot.engine_up and engine_was_up is False:
                    log.info("engine answers again")
                if snapshot.engine_up and engine_was_up is None:
                    self._log_left_out(snapshot)
                engine_was_up = snapshot.engine_up
            elapsed = time.monotonic() - started
            # A reconnected stream wakes the loop early: its list should not wait.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(self.interval - elapsed, 0.0)):
                    await self._wake.wait()

    def _log_left_out(self, snapshot: Snapshot) -> None:
        """Say once, after the first poll, how many containers are left out and why."""
        if snapshot.unmanaged_left_out:
            log.info(
                "tracking %d managed containers; %d unmanaged ones (names outside the naming "
                "pattern) are left out: --collect.all includes them",
                len(snapshot.containers),
                snapshot.unmanaged_left_out,
            )

    async def aclose(self) -> None:
        """Cancel the inspects still under way (polls', events') and wait for them."""
        tasks = [*self._background, *self._refreshing.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run :meth:`run` in a background task for the duration of the block."""
        task = asyncio.create_task(self.run(), name="poller-run")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.aclose()
