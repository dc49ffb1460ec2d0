"""Alertmanager webhook alerts -> restart decisions, taken safely and remembered.

Each alert is judged on its own labels (never the payload's commonLabels):
it must be firing and carry the action label, and it must name a managed
container (``name``, or ``app`` + decimal ``replica`` as the metrics export
them). Then, per container and in this order: an alert occurrence
(fingerprint + startsAt) acts at most once (Alertmanager repeats it every
repeat_interval); a quarantined container is left alone; a container that
used its budget of restarts inside the window is quarantined for a window;
a container restarted less than the cooldown ago is left alone. Otherwise
the decision to restart is committed to the state store *before* the
restart, under a per-container lock, so concurrent deliveries of one alert
restart once and an exporter restart forgets nothing. A restart the exporter
was killed in the middle of is finished when the exporter opens the state
again (:meth:`Remediator.open`), in the background: the server answers meanwhile.
A container it had stopped is started (that restores service); one whose stop
never happened is restarted whole, in pull mode only if Alertmanager still
reports the alert active (:attr:`Remediator.recheck`).

Once a stop is sent the start follows whatever happens to the state store
(another process holding its write lock, a full disk): a ledger write that
fails is logged, counted and owed; the owed writes are made, in order, as
soon as the store works again. A store that cannot be opened or used at all
is a fault of remediation only: alerts answer 503 (nothing was done, so
Alertmanager's retry is judged afresh), the metrics and ``/readyz`` say so,
and the store is reopened with a backoff until it works.

A container an operator stopped through the API (:meth:`Remediator.hold`)
is left alone (``operator-stopped``) until it is started again, through the
API or otherwise (it is seen running), or it is gone.

An alert naming a container this host does not have is answered
``not-found`` and counted (:attr:`Remediator.not_here`), but writes no
history row: a fan-out receiver posts every alert to every host of a fleet,
and N-1 of them would otherwise fill their ledgers with other hosts' alerts.

Alerts pulled from Alertmanager's API (:mod:`exporter.alertpull`) take the
same path (:meth:`Remediator.handle_pulled`) and so share the dedupe memory,
cooldown, budget, quarantine and ledger with the webhook: an alert seen both
ways is one decision. A pulled alert carries a ``confirm`` check that runs
just before the stop; an alert no longer active by then is not acted on
(``resolved``), and its action is forgotten so that it costs no budget. Pull
mode judges an occurrence that may change (cooldown, ...) again every minute;
the same outcome as last recorded for it writes no new history row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from exporter.config import Settings
from exporter.drivers.base import Driver
from exporter.errors import DriverError, NotFoundError
from exporter.models import ContainerInfo, ContainerState
from exporter.naming import NamingScheme
from exporter.state import ACTIONS_KEPT_SECONDS, DecisionRecord, Ledger, StateError, StateStore

log = logging.getLogger(__name__)

R = TypeVar("R")

#: The only action this module takes; it labels the actions metric.
ACTION_RESTART = "restart"
#: Stored outcomes of a restart under way, until its outcome replaces them: decided
#: (the stop may have been sent), then stopped (the start may have been sent).
RESTARTING = "restarting"
STARTING = "starting"
#: How long a ledger write made mid-restart waits for another process' lock before it
#: is owed instead: the container is down meanwhile.
MARK_BUSY_TIMEOUT = 1.0
#: Ledger writes owed while the store fails; past this the oldest are dropped (logged).
OWED_WRITES_KEPT = 10_000
#: Reopen backoff of a failed state store, seconds: first and longest wait.
REOPEN_FIRST_DELAY = 0.5
REOPEN_MAX_DELAY = 30.0


class Outcome(StrEnum):
    """What happened to one alert."""

    RESTARTED = "restarted"
    DRY_RUN = "dry-run"
    COOLDOWN = "cooldown"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    NOT_FOUND = "not-found"
    UNMANAGED = "unmanaged"
    OPERATOR_STOPPED = "operator-stopped"
    RESOLVED = "resolved"
    ERROR = "error"


# -- the Alertmanager webhook payload (version 4) ----------------------------

Labels = dict[str, str]


class _Incoming(BaseModel):
    # Alertmanager may add fields in later versions: ignore what we do not use.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlertmanagerAlert(_Incoming):
    """One alert of a webhook payload."""

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: Annotated[str, Field(min_length=1, max_length=256)]


class AlertmanagerWebhook(_Incoming):
    """Alertmanager's webhook payload, version 4."""

    version: Literal["4"]
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: Annotated[int, Field(ge=0)] = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: Annotated[list[AlertmanagerAlert], Field(max_length=1000)]


class AlertOutcome(BaseModel):
    """The outcome of one alert of a payload, in the payload's order."""

    index: int = Field(description="position of the alert in the payload")
    fingerprint: str
    container: str | None = Field(description="the target container; null when unresolved")
    outcome: Outcome
    detail: str = ""


class AlertsResult(BaseModel):
    """The answer to a webhook delivery."""

    dry_run: bool
    outcomes: list[AlertOutcome]


# -- policy ------------------------------------------------------------------


@dataclass(frozen=True)
class RemediationPolicy:
    """The knobs of remediation, with the issue's defaults."""

    action_label: str = "action"
    action_value: str = "restart"
    cooldown_seconds: float = 300.0
    budget: int = 3
    window_seconds: float = 3600.0
    concurrency: int = 4
    dry_run: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RemediationPolicy:
        """Return the policy the settings describe."""
        return cls(
            action_label=settings.remediation_action_label,
            action_value=settings.remediation_action_value,
            cooldown_seconds=settings.remediation_cooldown_seconds,
            budget=settings.remediation_budget,
            window_seconds=settings.remediation_window_seconds,
            concurrency=settings.remediation_concurrency,
            dry_run=settings.remediation_dry_run,
        )


@dataclass(frozen=True)
class _Verdict:
    outcome: Outcome
    detail: str
    decision_id: int
    quarantined_until: float | None = None


def incarnation_of(info: ContainerInfo) -> str:
    """Return what tells one run of a container from the next: its start time and pid."""
    return f"{info.started}:{info.pid}"


class _NameLocks:
    """One asyncio lock per name, kept only while someone holds or waits for it.

    Alerts may name any number of containers that do not exist: a lock kept
    per name forever would grow without bound.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold ``name``'s lock for the block."""
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._entries[name]


def starts_at_key(value: datetime) -> str:
    """Return the dedupe form of an alert's startsAt: UTC, ISO 8601."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


LedgerWrite = Callable[[Ledger], object]
#: Asked just before a pulled alert's stop: True while the alert is still active.
Confirm = Callable[["AlertmanagerAlert"], Awaitable[bool]]
#: Asked before the stop of a cut restart is redone (pull mode): True while an alert with
#: this fingerprint is still active. The ledger keeps the fingerprint, not the labels.
Recheck = Callable[[str], Awaitable[bool]]


class Remediator:
    """Turns webhook payloads into at most the restarts the policy allows."""

    def __init__(
        self,
        driver: Driver,
        store: StateStore,
        naming: NamingScheme,
        policy: RemediationPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._driver = driver
        self.store = store
        self._naming = naming
        self.policy = policy or RemediationPolicy()
        self._clock = clock
        self._locks = _NameLocks()
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._quarantined: dict[str, float] = {}
        #: Containers an operator stopped through the API, and when.
        self._held: dict[str, float] = {}
        #: (action, result) -> count, for sysinner_exporter_remediation_actions_total.
        self.actions: Counter[tuple[str, str]] = Counter()
        #: Alerts naming a container this host does not have: answered, never recorded.
        self.not_here = 0
        #: Why the state store cannot be used now; None while it works.
        self.state_error: str | None = None
        #: Ledger writes that failed (or found the store failing) and were owed.
        self.state_write_failures = 0
        self._owed: deque[tuple[str, LedgerWrite]] = deque()
        #: Decisions whose restart runs in this process: never resumed as interrupted.
        self._in_flight: set[int] = set()
        #: Pull mode's check that an alert is still active, set before :meth:`open`: a cut
        #: restart whose stop never happened is redone only if its alert still fires.
        self.recheck: Recheck | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._healer: asyncio.Task[None] | None = None

    # -- the state store's life ------------------------------------------

    async def open(self) -> None:
        """Open the state store; if it fails alerts answer 503 and it is reopened meanwhile.

        Quarantines and operator stops in force are loaded; restarts an earlier run
        left unfinished are finished concurrently in the background.
        """
        try:
            await self._restore()
        except StateError as e:
            self._state_failed(e, "opening it")

    async def close(self) -> None:
        """Let restarts under way finish, write what is owed if possible, close the store."""
        if self._healer is not None:
            self._healer.cancel()
            await asyncio.gather(self._healer, return_exceptions=True)
            self._healer = None
        await self.idle()
        if self._owed and self.store.is_open:
            with contextlib.suppress(StateError):
                await self._pay_owed()
        if self._owed:
            # Their decisions stay "restarting"/"starting": the next open finishes them.
            log.error(
                "remediation: %d ledger writes could not be made before exit", len(self._owed)
            )
        await self.store.close()

    async def idle(self) -> None:
        """Return once no restart, resume or ledger write started so far is under way."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _restore(self) -> None:
        """Open the store if needed, make owed writes, reload memory, resume cut restarts."""
        if not self.store.is_open:
            await self.store.open()
        await self._pay_owed()
        now = self._clock()
        dry = self.policy.dry_run
        quarantined, held, pending = await self.store.transaction(
            lambda ledger: (
                ledger.quarantined(now, dry),
                ledger.held(),
                ledger.decisions_with_outcome(RESTARTING, STARTING),
            ),
            busy_timeout=MARK_BUSY_TIMEOUT,
        )
        self._quarantined = quarantined
        self._held = held
        if self.state_error is not None:
            log.warning("remediation: the state database %s works again", self.store.path)
        self.state_error = None
        for decision in pending:
            if decision.id not in self._in_flight:
                self._in_flight.add(decision.id)
                self._spawn(self._finish_interrupted(decision))

    def _state_failed(self, error: StateError, doing: str) -> None:
        """Note that the store failed; say it once per reason; make sure it is reopened."""
        reason = str(error)
        if reason != self.state_error:
            log.error(
                "remediation: the state database failed %s: %s; alerts answer 503 until it "
                "works again (retried with a backoff)",
                doing,
                reason,
            )
        self.state_error = reason
        if self._healer is None or self._healer.done():
            self._healer = asyncio.create_task(self._heal())

    async def _heal(self) -> None:
        """Reopen the store with a backoff until it works and every owed write is made."""
        delay = REOPEN_FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            try:
                await self._restore()
                return
            except StateError as e:
                log.debug("remediation: state database still failing: %s", e)
                self.state_error = str(e)
                # Reopen from scratch next time: the file may have been replaced.
                await self.store.disconnect()
            delay = min(delay * 2, REOPEN_MAX_DELAY)

    def _require_state(self) -> None:
        """Raise StateError while the store cannot be used (the API answers 503)."""
        if self.state_error is not None:
            raise StateError(f"state database unavailable: {self.state_error}")

    async def _pay_owed(self) -> None:
        """Make the owed writes in the order they were owed; StateError stops at the first."""
        while self._owed:
            _, write = self._owed[0]
            # Short waits: the worker thread is not held up while another process locks.
            await self.store.transaction(write, busy_timeout=MARK_BUSY_TIMEOUT)
            self._owed.popleft()

    async def _write(
        self, write: LedgerWrite, what: str, busy_timeout: float = MARK_BUSY_TIMEOUT
    ) -> bool:
        """Write to the ledger, or owe the write when the store fails; True when written.

        While writes are owed, later ones queue behind them so that the ledger
        sees them in order (a final outcome never overwritten by an older mark).
        """
        if self.state_error is None and not self._owed:
            try:
                await self.store.transaction(write, busy_timeout=busy_timeout)
                return True
            except StateError as e:
                self._state_failed(e, f"writing {what}")
        self.state_write_failures += 1
        if len(self._owed) >= OWED_WRITES_KEPT:
            dropped, _ = self._owed.popleft()
            log.error("remediation: too many owed ledger writes; dropped: %s", dropped)
        self._owed.append((what, write))
        log.warning("remediation: ledger write owed until the state database works: %s", what)
        if self._healer is None or self._healer.done():
            self._healer = asyncio.create_task(self._heal())
        return False

    def _spawn(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        """Run ``coro`` as a task that close() waits for, whoever awaits it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- restarts cut by an exporter stop -----------------------------------

    async def _finish_interrupted(self, decision: DecisionRecord) -> None:
        """See through one restart an earlier run decided but did not finish (it was killed).

        Its decision and action are committed, so cooldowns and budgets already
        count it. The ledger says how far it got (stop done or not, the run it was
        decided against) and the container whether what was under way took effect.
        """
        name = decision.container or ""
        try:
            incarnation = await self.store.transaction(
                lambda ledger: ledger.incarnation(decision.id)
            )
            async with self._locks.hold(name), self._slots:
                outcome, detail = await self._resume(decision, incarnation)
            log.warning(
                "remediation: the restart of %s decided at %.0f was interrupted: %s",
                name,
                decision.at,
                detail,
            )
            dry = decision.dry_run

            def record(ledger: Ledger) -> None:
                if outcome is Outcome.RESOLVED:
                    # Never taken: it costs no budget and starts no cooldown.
                    ledger.forget_action(decision.fingerprint, decision.starts_at, name, dry)
                ledger.update_decision(decision.id, outcome.value, detail)

            await self._write(record, f"decision {decision.id} of {name}: {outcome.value}")
        except StateError as e:
            self._state_failed(e, f"finishing the restart of {name}")
        finally:
            self._in_flight.discard(decision.id)

    async def _resume(self, decision: DecisionRecord, incarnation: str) -> tuple[Outcome, str]:
        """Finish one interrupted restart; return its outcome."""
        name = decision.container or ""
        why = "interrupted by an exporter stop"
        if self.policy.dry_run:
            return Outcome.ERROR, f"{why}; not finished: remediation is now dry-run"
        try:
            info = await self._driver.container_inspect(name)
            if info.name != name:
                return Outcome.UNMANAGED, f"{why}; {name!r} now resolves to {info.name!r}"
            running = info.state is ContainerState.RUNNING
            if running and incarnation and incarnation_of(info) != incarnation:
                return Outcome.RESTARTED, f"{why} after the container had started again"
            if running and decision.outcome == STARTING:
                return Outcome.RESTARTED, f"{why} after the container had started again"
            if running:  # the stop never took effect: the whole restart is still owed
                # Pull mode stops only for an alert still active; the exporter may have been
                # down for long. A container already stopped is started whatever the alert
                # says: that restores service, it does not act on the alert.
                if self.recheck is not None and not await self._recheck(decision):
                    return Outcome.RESOLVED, (
                        f"{why} before its stop; the alert was no longer active "
                        "(or no Alertmanager peer could say): nothing done"
                    )
                await self._driver.container_stop(name)
            await self._driver.container_start(name)
        except NotFoundError:
            return Outcome.NOT_FOUND, f"{why}; the container is gone"
        except DriverError as e:
            return Outcome.ERROR, f"{why}; finishing it failed: {e}"
        return Outcome.RESTARTED, f"{why}; finished when the exporter started again"

    async def _recheck(self, decision: DecisionRecord) -> bool:
        """Return True when pull mode's check finds the decision's alert still active."""
        assert self.recheck is not None
        try:
            return await self.recheck(decision.fingerprint)
        except Exception as e:  # noqa: BLE001 - an unanswered check is a no: nothing is stopped
            log.warning("remediation: cannot confirm the alert on %s: %s", decision.container, e)
            return False

    # -- what the metrics and readiness read (no I/O) ----------------------

    def action_counts(self) -> dict[tuple[str, str], int]:
        """Return the decisions taken since start by (action, result), every result present."""
        # Zeros too: rate() over a series that appears only at its first increment misses it.
        counts = {(ACTION_RESTART, o.value): 0 for o in Outcome}
        counts.update(self.actions)
        return counts

    def quarantined_count(self) -> int:
        """Return how many containers are quarantined now."""
        return len(self.quarantined())

    def quarantined(self) -> dict[str, float]:
        """Return the containers quarantined now and until when (unix seconds)."""
        now = self._clock()
        for name in [n for n, until in self._quarantined.items() if until <= now]:
            del self._quarantined[name]
        return dict(self._quarantined)

    def state_up(self) -> bool:
        """Return True while the state store works."""
        return self.state_error is None

    def state_lost_count(self) -> int:
        """Return how many opens found the state lost (an empty file, no schema)."""
        return self.store.lost_count

    def owed_writes(self) -> int:
        """Return how many ledger writes wait for the state store."""
        return len(self._owed)

    def tracked_names(self) -> int:
        """Return how many names have per-name memory (locks, holds, quarantines)."""
        return len(self._locks) + len(self._held) + len(self._quarantined)

    # -- the API's calls -------------------------------------------------

    async def handle(self, payload: AlertmanagerWebhook) -> AlertsResult:
        """Judge every alert of ``payload`` and act on those the policy allows.

        StateError (a 503) when the store fails before an alert could be decided:
        nothing was done for that alert, so a retry judges it afresh; the alerts
        that were acted on are in the ledger and a retry finds them duplicates.
        """
        return AlertsResult(
            dry_run=self.policy.dry_run, outcomes=await self._judge(payload.alerts, None)
        )

    async def handle_pulled(
        self, alerts: Sequence[AlertmanagerAlert], confirm: Confirm
    ) -> list[AlertOutcome]:
        """Judge alerts pulled from Alertmanager; ``confirm`` runs just before each stop.

        StateError as :meth:`handle`: the alerts not decided are judged afresh next time.
        """
        return await self._judge(alerts, confirm)

    async def _judge(
        self, alerts: Sequence[AlertmanagerAlert], confirm: Confirm | None
    ) -> list[AlertOutcome]:
        self._require_state()
        results = await asyncio.gather(
            *(self._one(i, alert, confirm) for i, alert in enumerate(alerts)),
            return_exceptions=True,
        )
        outcomes: list[AlertOutcome] = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            outcomes.append(r)
        return outcomes

    def target(self, labels: Labels) -> str | None:
        """Return the managed container an alert's labels name, or None."""
        name, refused, _ = self._target(labels)
        return name if refused is None else None

    async def history(self, limit: int, container: str | None = None) -> list[DecisionRecord]:
        """Return the newest decisions first."""
        self._require_state()
        return await self.store.transaction(
            lambda ledger: ledger.recent_decisions(limit, container)
        )

    async def clear_quarantine(self, name: str) -> bool:
        """Lift ``name``'s quarantine and restart its budget; True when it was quarantined."""
        self._require_state()
        now = self._clock()
        window = self.policy.window_seconds
        async with self._locks.hold(name):
            try:
                was = await self.store.transaction(
                    lambda ledger: ledger.clear_quarantine(name, now, window)
                )
            except StateError as e:
                self._state_failed(e, f"clearing the quarantine of {name}")
                raise
            self._quarantined.pop(name, None)
        if was:
            log.warning("remediation: quarantine of %s cleared by an operator", name)
        else:
            log.info("remediation: %s was not quarantined; its restart budget starts afresh", name)
        return was

    def held(self) -> dict[str, float]:
        """Return the containers an operator stopped through the API, and when."""
        return dict(self._held)

    async def hold(self, name: str) -> None:
        """Record that an operator stops ``name`` through the API: alerts leave it alone.

        Called before the stop is sent, under the name's lock, so a restart under
        way finishes first and none starts after. Kept in memory at once and in
        the ledger as soon as the store takes it.
        """
        now = self._clock()
        async with self._locks.hold(name):
            self._held[name] = now
            await self._write(lambda ledger: ledger.hold(name, now), f"operator stop of {name}")

    async def release(self, name: str) -> None:
        """Forget an operator's stop of ``name`` (started through the API, or gone)."""
        async with self._locks.hold(name):
            self._forget_hold(name)

    def _forget_hold(self, name: str) -> None:
        if self._held.pop(name, None) is not None:
            self._spawn(
                self._write(lambda ledger: ledger.release(name), f"operator start of {name}")
            )

    # -- one alert -------------------------------------------------------

    def _target(self, labels: Labels) -> tuple[str | None, Outcome | None, str]:
        """Return (container, None, "") or (name or None, a refusing outcome, why)."""
        name = labels.get("name")
        app, replica = labels.get("app"), labels.get("replica")
        from_parts: str | None = None
        if app is not None and replica is not None:
            if not replica.isdecimal():
                return None, Outcome.UNMANAGED, f"replica {replica!r} is not a decimal number"
            try:
                from_parts = self._naming.format(app, int(replica))
            except ValueError as e:
                return None, Outcome.UNMANAGED, f"app/replica do not name a managed container: {e}"
        if name is not None:
            if not self._naming.is_valid(name):
                return name, Outcome.UNMANAGED, f"{name!r} is not a managed container name"
            if from_parts is not None and from_parts != name:
                return name, Outcome.IGNORED, f"name {name!r} and app/replica disagree"
            return name, None, ""
        if from_parts is not None:
            return from_parts, None, ""
        return None, Outcome.IGNORED, "no name or app+replica label on the alert"

    async def _one(
        self, index: int, alert: AlertmanagerAlert, confirm: Confirm | None = None
    ) -> AlertOutcome:
        starts_at = starts_at_key(alert.starts_at)
        alertname = alert.labels.get("alertname", "")

        def result(container: str | None, outcome: Outcome, detail: str) -> AlertOutcome:
            self.actions[(ACTION_RESTART, outcome.value)] += 1
            return AlertOutcome(
                index=index,
                fingerprint=alert.fingerprint,
                container=container,
                outcome=outcome,
                detail=detail,
            )

        if alert.status != "firing":
            return result(None, Outcome.IGNORED, "alert is resolved")
        wanted = alert.labels.get(self.policy.action_label)
        if wanted != self.policy.action_value:
            return result(
                None,
                Outcome.IGNORED,
                f"no {self.policy.action_label}={self.policy.action_value!r} label",
            )
        name, refused, why = self._target(alert.labels)
        if refused is not None or name is None:
            return result(name, refused or Outcome.IGNORED, why)

        async def locked() -> tuple[Outcome, str]:
            async with self._locks.hold(name):
                return await self._decide_and_act(name, alert, starts_at, alertname, confirm)

        # Shielded: a client that hangs up never cuts a restart between its stop and start.
        outcome, detail = await asyncio.shield(self._spawn(locked()))
        return result(name, outcome, detail)

    async def _decide_and_act(
        self,
        name: str,
        alert: AlertmanagerAlert,
        starts_at: str,
        alertname: str,
        confirm: Confirm | None = None,
    ) -> tuple[Outcome, str]:
        """Decide under the container's lock; commit the decision; then act."""
        dry = self.policy.dry_run

        # Pull mode judges an occurrence that may change (cooldown, quarantined, ...) again
        # every minute: the same outcome again is counted in the actions metric, not written
        # to the history once more. A webhook delivery is Alertmanager's own repeat, at the
        # repeat_interval its operator chose: each one is recorded, as before.
        quiet_repeat = confirm is not None

        async def refuse(outcome: Outcome, detail: str) -> tuple[Outcome, str]:
            # Nothing is done, so a failing store only defers the record of it.
            at = self._clock()

            def record(ledger: Ledger) -> None:
                if quiet_repeat and self._same_as_last(ledger, name, alert, starts_at, outcome):
                    return
                ledger.record_decision(
                    at=at,
                    container=name,
                    fingerprint=alert.fingerprint,
                    starts_at=starts_at,
                    alertname=alertname,
                    outcome=outcome.value,
                    detail=detail,
                    dry_run=dry,
                )

            await self._write(record, f"{outcome.value} decision for {name}")
            return outcome, detail

        try:
            info = await self._driver.container_inspect(name)
        except NotFoundError:
            # No container: no per-name memory either (its operator stop ends with it).
            self._quarantined.pop(name, None)
            self._forget_hold(name)
            # Most likely another host's container (a fan-out posts everywhere): counted,
            # not recorded, so N hosts do not keep N-1 history rows per alert.
            self.not_here += 1
            return Outcome.NOT_FOUND, f"no container named {name!r} on this host"
        except DriverError as e:
            return await refuse(Outcome.ERROR, f"cannot inspect {name}: {e}")
        if info.name != name:
            # The engine resolved the name to something else (an id prefix?): never act on it.
            return await refuse(Outcome.UNMANAGED, f"{name!r} resolves to container {info.name!r}")
        held_at = self._held.get(name)
        if held_at is not None and info.state is ContainerState.RUNNING:
            # Started again by other means than the API: the operator's stop no longer stands.
            self._forget_hold(name)
            held_at = None

        now = self._clock()
        try:
            verdict = await self.store.transaction(
                lambda ledger: self._decide(
                    ledger, name, alert, starts_at, alertname, now, info, held_at, quiet_repeat
                )
            )
        except StateError as e:
            # Nothing was done and nothing recorded: the 503 lets Alertmanager retry.
            self._state_failed(e, f"deciding on {name}")
            raise
        if verdict.quarantined_until is not None:
            self._quarantined[name] = verdict.quarantined_until
        if verdict.outcome is not Outcome.RESTARTED:
            return verdict.outcome, verdict.detail
        if confirm is None:
            return await self._restart(name, verdict.decision_id, alertname)
        return await self._restart(
            name, verdict.decision_id, alertname, (confirm, alert, starts_at)
        )

    @staticmethod
    def _same_as_last(
        ledger: Ledger, name: str, alert: AlertmanagerAlert, starts_at: str, outcome: Outcome
    ) -> bool:
        """Return True when the last decision recorded on this occurrence had ``outcome``."""
        last = ledger.last_decision_of(name, alert.fingerprint, starts_at)
        return last is not None and last[1] == outcome.value

    async def _still_active(
        self, name: str, decision_id: int, check: tuple[Confirm, AlertmanagerAlert, str]
    ) -> bool:
        """Ask ``confirm``; when the alert is gone undo the decision's action and say so."""
        confirm, alert, starts_at = check
        try:
            active = await confirm(alert)
        except Exception as e:  # noqa: BLE001 - an unanswered check is a no: nothing is stopped
            log.warning("remediation: cannot confirm the alert on %s is active: %s", name, e)
            active = False
        if active:
            return True
        dry = self.policy.dry_run
        detail = "the alert was no longer active just before the stop; nothing done"

        def undo(ledger: Ledger) -> None:
            ledger.forget_action(alert.fingerprint, starts_at, name, dry)
            ledger.update_decision(decision_id, Outcome.RESOLVED.value, detail)

        await self._write(undo, f"decision {decision_id} of {name}: resolved")
        log.info("remediation: the alert on %s resolved before its restart; nothing done", name)
        return False

    async def _restart(
        self,
        name: str,
        decision_id: int,
        alertname: str,
        check: tuple[Confirm, AlertmanagerAlert, str] | None = None,
    ) -> tuple[Outcome, str]:
        """Stop then start ``name``; once stopped it is started whatever the ledger does."""
        self._in_flight.add(decision_id)
        try:
            async with self._slots:
                # Just before the stop (a slot may have taken a while): is it still wanted?
                if check is not None and not await self._still_active(name, decision_id, check):
                    return Outcome.RESOLVED, "the alert resolved before the restart; nothing done"
                try:
                    await self._driver.container_stop(name)
                except DriverError as e:
                    outcome, detail = Outcome.ERROR, f"restart failed: {e}"
                else:
                    # Stopped: a restart cut from here on owes only its start (see open()).
                    await self._write(
                        lambda ledger: ledger.update_decision(
                            decision_id, STARTING, "stopped; starting"
                        ),
                        f"decision {decision_id} of {name}: stopped",
                    )
                    try:
                        await self._driver.container_start(name)
                    except DriverError as e:
                        outcome, detail = Outcome.ERROR, f"restart failed: {e}"
                    else:
                        outcome, detail = Outcome.RESTARTED, "stopped and started"
            if outcome is Outcome.RESTARTED:
                log.warning("remediation: restarted %s for alert %s", name, alertname or "?")
            else:
                log.error("remediation: restarting %s for %s failed: %s", name, alertname, detail)
            written = await self._write(
                lambda ledger: ledger.update_decision(decision_id, outcome.value, detail),
                f"decision {decision_id} of {name}: {outcome.value}",
            )
            if not written:
                detail += "; recorded once the state database works again"
            return outcome, detail
        finally:
            self._in_flight.discard(decision_id)

    def _decide(
        self,
        ledger: Ledger,
        name: str,
        alert: AlertmanagerAlert,
        starts_at: str,
        alertname: str,
        now: float,
        info: ContainerInfo,
        held_at: float | None,
        quiet_repeat: bool = False,
    ) -> _Verdict:
        """Take the decision inside one write transaction (runs in the state thread).

        With ``quiet_repeat`` an outcome equal to the last one recorded for this
        occurrence writes no new history row (pull mode's re-judgments).
        """
        p = self.policy
        dry = p.dry_run
        quarantined_until: float | None = None

        def decided(outcome: Outcome, detail: str, stored_outcome: str | None = None) -> _Verdict:
            if quiet_repeat and stored_outcome is None:
                last = ledger.last_decision_of(name, alert.fingerprint, starts_at)
                if last is not None and last[1] == outcome.value:
                    return _Verdict(outcome, detail, last[0], quarantined_until)
            decision_id = ledger.record_decision(
                at=now,
                container=name,
                fingerprint=alert.fingerprint,
                starts_at=starts_at,
                alertname=alertname,
                outcome=stored_outcome or outcome.value,
                detail=detail,
                dry_run=dry,
                incarnation=incarnation_of(info),
            )
            return _Verdict(outcome, detail, decision_id, quarantined_until)

        if held_at is None and info.state is not ContainerState.RUNNING:
            held_at = ledger.held_at(name)  # another exporter on this state may have held it
        if held_at is not None:
            return decided(
                Outcome.OPERATOR_STOPPED,
                f"stopped by an operator through the API at {held_at:.0f}; "
                "start it to hand it back to remediation",
            )

        if ledger.action_seen(alert.fingerprint, starts_at, name, dry):
            return decided(Outcome.DUPLICATE, "this alert occurrence was already acted on")

        until = ledger.quarantine_until(name, dry)
        if until is not None and until > now:
            return decided(Outcome.QUARANTINED, f"quarantined for {until - now:.0f}s more")
        if until is not None:
            ledger.end_quarantine(name, dry)

        since = max(now - p.window_seconds, ledger.budget_reset_at(name))
        recent = ledger.action_times(name, since, dry)
        if len(recent) >= p.budget:
            quarantined_until = now + p.window_seconds
            ledger.set_quarantine(name, now, quarantined_until, dry)
            log.warning(
                "remediation: %s quarantined for %.0fs: %d restarts within %.0fs "
                "(clear with DELETE /api/v1/remediation/quarantine/%s)",
                name,
                p.window_seconds,
                len(recent),
                p.window_seconds,
                name,
            )
            return decided(
                Outcome.QUARANTINED,
                f"{len(recent)} restarts within {p.window_seconds:.0f}s used the budget of "
                f"{p.budget}; quarantined for {p.window_seconds:.0f}s",
            )

        last = ledger.last_action(name, dry)
        if last is not None and now - last < p.cooldown_seconds:
            wait = p.cooldown_seconds - (now - last)
            return decided(Outcome.COOLDOWN, f"restarted {now - last:.0f}s ago; {wait:.0f}s left")

        ledger.record_action(alert.fingerprint, starts_at, name, now, dry)
        ledger.prune(
            now, max(p.window_seconds, p.cooldown_seconds, ACTIONS_KEPT_SECONDS), p.window_seconds
        )
        if dry:
            return decided(Outcome.DRY_RUN, "would restart (dry-run)")
        return decided(Outcome.RESTARTED, "restart requested", stored_outcome=RESTARTING)
