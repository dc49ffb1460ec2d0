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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from exporter.concurrency import map_bounded
from exporter.drivers.base import Driver
from exporter.errors import ConflictError, DriverError, DriverTimeoutError, NotFoundError
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

    @property
    def stats_source_name(self) -> str:
        """Return the name of the stats source in use."""
        return self._source.name

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
                continue  # gone or stopped mid-poll: not an error
            elif isinstance(result, DriverTimeoutError | TimeoutError):
                self.health.errors[ErrorKind.STATS_TIMEOUT] += 1
            else:
                self.health.errors[ErrorKind.STATS] += 1
                log.warning("stats of %s failed: %s", cid[:12], result)
        return samples

    async def poll_once(self) -> Snapshot:
        """Poll the engine once, update :attr:`snapshot` and return it."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._call_timeout):
                listed = await self._driver.container_list()
        except (DriverError, TimeoutError) as e:
            self.health.errors[ErrorKind.LIST] += 1
            self.snapshot = Snapshot(
                completed_at=self._clock(),
                duration_seconds=time.monotonic() - started,
                phase_seconds=((PollPhase.LIST, time.monotonic() - started),),
                engine_up=False,
                error=str(e) or type(e).__name__,
            )
            self._previous.clear()
            self._stale_polls.clear()
            self._inspected.clear()
            return self._finish(self.snapshot)

        listed_at = time.monotonic()
        tracked = [entry for c in listed if (entry := self._listed(c)) is not None]
        listed_ids = {c.id for c in listed}
        left_out = len(listed) - len(tracked)
        for gone in self._inspected.keys() - listed_ids:
            del self._inspected[gone]
        del listed  # thousands of list models are megabytes; the inspected ones replace them
        inspected = await self._inspect_all(tracked, deadline=started + self.interval)
        inspected_at = time.monotonic()
        rows = [
            (info, entry.app, entry.replica)
            for info, entry in zip(inspected, tracked, strict=True)
            if info is not None
        ]
        del tracked, inspected  # a megabyte at thousands of containers, not needed past here
        running = [info for info, _, _ in rows if info.state is ContainerState.RUNNING]
        # Both catch their own errors; gather also cancels both if the poll is cancelled.
        stats, processes, host = await asyncio.gather(
            self._read_stats(running), self._count_processes(running), self._read_host()
        )
        read_at = time.monotonic()
        self._size_layers(running)

        samples: list[ContainerSample] = []
        seen: set[str] = set()
        for info, app, replica in rows:
            seen.add(info.id)
            got = stats.get(info.id)
            sample = ContainerSample(
                info=info,
                app=app,
                replica=replica,
                stats=got.stats if got else None,
                stats_source=got.source if got else None,
                processes=processes.get(info.id),
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
            phase_seconds=(
                (PollPhase.LIST, listed_at - started),
                (PollPhase.INSPECT, inspected_at - listed_at),
                (PollPhase.STATS, read_at - inspected_at),
            ),
            engine_up=True,
            host=host,
            unmanaged_left_out=left_out,
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
        """Poll forever, one poll every ``interval`` seconds, until cancelled."""
        engine_was_up: bool | None = None
        while True:
            started = time.monotonic()
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
            await asyncio.sleep(max(self.interval - elapsed, 0.0))

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
        """Cancel the inspects still under way from earlier polls and wait for them."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

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
