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
again (:meth:`Remediator.open`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporter.config import Settings
from exporter.drivers.base import Driver
from exporter.errors import DriverError, NotFoundError
from exporter.models import ContainerState
from exporter.naming import NamingScheme
from exporter.state import ACTIONS_KEPT_SECONDS, DecisionRecord, Ledger, StateStore

log = logging.getLogger(__name__)

#: The only action this module takes; it labels the actions metric.
ACTION_RESTART = "restart"
#: Stored outcomes of a restart under way, until its outcome replaces them: decided
#: (the stop may have been sent), then stopped (the start may have been sent).
RESTARTING = "restarting"
STARTING = "starting"


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


def _update_decision(ledger: Ledger, *, decision_id: int, outcome: Outcome, detail: str) -> None:
    ledger.update_decision(decision_id, outcome.value, detail)


def starts_at_key(value: datetime) -> str:
    """Return the dedupe form of an alert's startsAt: UTC, ISO 8601."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


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
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._quarantined: dict[str, float] = {}
        #: (action, result) -> count, for sysinner_exporter_remediation_actions_total.
        self.actions: Counter[tuple[str, str]] = Counter()

    async def open(self) -> None:
        """Open the state store, load the quarantines in force, finish interrupted restarts."""
        await self.store.open()
        now = self._clock()
        self._quarantined = await self.store.transaction(
            lambda ledger: ledger.quarantined(now, self.policy.dry_run)
        )
        await self._finish_interrupted()

    async def _finish_interrupted(self) -> None:
        """See through the restarts an earlier run decided but did not finish (it was killed).

        Their decisions and actions are committed, so cooldowns and budgets already
        count them. The ledger says how far each got (stop done or not) and the
        container whether what was under way took effect.
        """
        pending = await self.store.transaction(
            lambda ledger: ledger.decisions_with_outcome(RESTARTING, STARTING)
        )
        for decision in pending:
            outcome, detail = await self._resume(decision)
            log.warning(
                "remediation: the restart of %s decided at %.0f was interrupted: %s",
                decision.container,
                decision.at,
                detail,
            )
            await self.store.transaction(
                functools.partial(
                    _update_decision, decision_id=decision.id, outcome=outcome, detail=detail
                )
            )

    async def _resume(self, decision: DecisionRecord) -> tuple[Outcome, str]:
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
            if running and decision.outcome == STARTING:
                return Outcome.RESTARTED, f"{why} after the container had started again"
            if running:  # the stop never took effect: the whole restart is still owed
                await self._driver.container_stop(name)
            await self._driver.container_start(name)
        except NotFoundError:
            return Outcome.NOT_FOUND, f"{why}; the container is gone"
        except DriverError as e:
            return Outcome.ERROR, f"{why}; finishing it failed: {e}"
        return Outcome.RESTARTED, f"{why}; finished when the exporter started again"

    async def close(self) -> None:
        """Close the state store."""
        await self.store.close()

    # -- what the metrics read (no I/O) --------------------------------

    def action_counts(self) -> dict[tuple[str, str], int]:
        """Return the decisions taken since start by (action, result), every result present."""
        # Zeros too: rate() over a series that appears only at its first increment misses it.
        counts = {(ACTION_RESTART, o.value): 0 for o in Outcome}
        counts.update(self.actions)
        return counts

    def quarantined_count(self) -> int:
        """Return how many containers are quarantined now."""
        now = self._clock()
        return sum(1 for until in self._quarantined.values() if until > now)

    def quarantined(self) -> dict[str, float]:
        """Return the containers quarantined now and until when (unix seconds)."""
        now = self._clock()
        return {name: until for name, until in self._quarantined.items() if until > now}

    # -- the API's calls -------------------------------------------------

    async def handle(self, payload: AlertmanagerWebhook) -> AlertsResult:
        """Judge every alert of ``payload`` and act on those the policy allows."""
        outcomes = await asyncio.gather(
            *(self._one(i, alert) for i, alert in enumerate(payload.alerts))
        )
        return AlertsResult(dry_run=self.policy.dry_run, outcomes=list(outcomes))

    async def history(self, limit: int, container: str | None = None) -> list[DecisionRecord]:
        """Return the newest decisions first."""
        return await self.store.transaction(
            lambda ledger: ledger.recent_decisions(limit, container)
        )

    async def clear_quarantine(self, name: str) -> bool:
        """Lift ``name``'s quarantine and restart its budget; True when it was quarantined."""
        now = self._clock()
        async with self._lock_for(name):
            was = await self.store.transaction(lambda ledger: ledger.clear_quarantine(name, now))
            self._quarantined.pop(name, None)
        if was:
            log.warning("remediation: quarantine of %s cleared by an operator", name)
        else:
            log.info("remediation: %s was not quarantined; its restart budget starts afresh", name)
        return was

    # -- one alert -------------------------------------------------------

    def _lock_for(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

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

    async def _one(self, index: int, alert: AlertmanagerAlert) -> AlertOutcome:
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

        async with self._lock_for(name):
            outcome, detail = await self._decide_and_act(name, alert, starts_at, alertname)
        return result(name, outcome, detail)

    async def _decide_and_act(
        self, name: str, alert: AlertmanagerAlert, starts_at: str, alertname: str
    ) -> tuple[Outcome, str]:
        """Decide under the container's lock; commit the decision; then act."""
        dry = self.policy.dry_run

        def record(outcome: Outcome, detail: str) -> Callable[[Ledger], int]:
            return lambda ledger: ledger.record_decision(
                at=self._clock(),
                container=name,
                fingerprint=alert.fingerprint,
                starts_at=starts_at,
                alertname=alertname,
                outcome=outcome.value,
                detail=detail,
                dry_run=dry,
            )

        try:
            info = await self._driver.container_inspect(name)
        except NotFoundError:
            detail = f"no container named {name!r}"
            await self.store.transaction(record(Outcome.NOT_FOUND, detail))
            return Outcome.NOT_FOUND, detail
        except DriverError as e:
            detail = f"cannot inspect {name}: {e}"
            await self.store.transaction(record(Outcome.ERROR, detail))
            return Outcome.ERROR, detail
        if info.name != name:
            # The engine resolved the name to something else (an id prefix?): never act on it.
            detail = f"{name!r} resolves to container {info.name!r}"
            await self.store.transaction(record(Outcome.UNMANAGED, detail))
            return Outcome.UNMANAGED, detail

        now = self._clock()
        verdict = await self.store.transaction(
            lambda ledger: self._decide(ledger, name, alert, starts_at, alertname, now)
        )
        if verdict.quarantined_until is not None:
            self._quarantined[name] = verdict.quarantined_until
        if verdict.outcome is not Outcome.RESTARTED:
            return verdict.outcome, verdict.detail

        try:
            async with self._slots:
                await self._driver.container_stop(name)
                # Stopped: a restart cut from here on owes only its start (see open()).
                await self.store.transaction(
                    lambda ledger: ledger.update_decision(
                        verdict.decision_id, STARTING, "stopped; starting"
                    )
                )
                await self._driver.container_start(name)
        except DriverError as e:
            outcome, detail = Outcome.ERROR, f"restart failed: {e}"
            log.error("remediation: restarting %s for %s failed: %s", name, alertname, e)
        else:
            outcome, detail = Outcome.RESTARTED, "stopped and started"
            log.warning("remediation: restarted %s for alert %s", name, alertname or "?")
        await self.store.transaction(
            lambda ledger: ledger.update_decision(verdict.decision_id, outcome.value, detail)
        )
        return outcome, detail

    def _decide(
        self,
        ledger: Ledger,
        name: str,
        alert: AlertmanagerAlert,
        starts_at: str,
        alertname: str,
        now: float,
    ) -> _Verdict:
        """Take the decision inside one write transaction (runs in the state thread)."""
        p = self.policy
        dry = p.dry_run
        quarantined_until: float | None = None

        def decided(outcome: Outcome, detail: str, stored_outcome: str | None = None) -> _Verdict:
            decision_id = ledger.record_decision(
                at=now,
                container=name,
                fingerprint=alert.fingerprint,
                starts_at=starts_at,
                alertname=alertname,
                outcome=stored_outcome or outcome.value,
                detail=detail,
                dry_run=dry,
            )
            return _Verdict(outcome, detail, decision_id, quarantined_until)

        if ledger.action_seen(alert.fingerprint, starts_at, dry):
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
        ledger.prune(now, max(p.window_seconds, p.cooldown_seconds, ACTIONS_KEPT_SECONDS))
        if dry:
            return decided(Outcome.DRY_RUN, "would restart (dry-run)")
        return decided(Outcome.RESTARTED, "restart requested", stored_outcome=RESTARTING)
