"""Pull mode: ask Alertmanager's API v2 for the alerts to act on, instead of waiting for a webhook.

Every poll interval (jittered to 80-100% of it, so that a fleet's exporters
spread out) the puller asks one peer of the Alertmanager cluster, trying the
peers in turn, for the active, unsilenced, uninhibited alerts carrying the
action label (and, with ``--remediation.instance``, this host's ``instance``
label). A peer is asked only once it reports its cluster ``ready``
(``GET /api/v2/status``): a settling peer may not have the cluster's silences
yet. Without an instance the alerts are kept to those naming a container of
the latest poll, so another host's alert costs this host nothing at all.

Each new alert occurrence is handed to the same :class:`Remediator` as the
webhook's (one dedupe, cooldown, budget, quarantine and ledger), with a check
that runs just before the stop and asks a ready peer again whether that
alert is still active, unsilenced and uninhibited. If no peer can say so,
nothing is stopped. An occurrence that ended in a final outcome (restarted,
duplicate, ...) is not handed again while it stays active, nor for
:data:`FORGET_SECONDS` after the last answer that held it (the peers may
disagree on a resolve that long); one that may change (cooldown,
quarantined, error, ...) is judged again after :data:`REJUDGE_SECONDS`, as
Alertmanager's repeat would do for a webhook.

Alertmanager unreachable: nothing is restarted, the poll's ``up`` gauge is 0,
its errors are counted by kind, ``/readyz`` says why in its body (and stays 200:
the exporter still does its job of exporting); the engine poll and the metrics go
on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.remediation import AlertmanagerAlert, AlertOutcome, Outcome, Remediator
from exporter.state import StateError

log = logging.getLogger(__name__)

#: Outcomes that do not change while the alert occurrence stays active: never handed again.
FINAL_OUTCOMES = frozenset(
    {
        Outcome.RESTARTED,
        Outcome.DUPLICATE,
        Outcome.DRY_RUN,
        Outcome.IGNORED,
        Outcome.UNMANAGED,
        Outcome.NOT_FOUND,
    }
)
#: An occurrence whose outcome may change (cooldown, quarantine, error, ...) is judged again
#: this often while it stays active, seconds.
REJUDGE_SECONDS = 60.0
#: Most alerts one answer may hold; the rest are left to the next poll (logged).
MAX_ALERTS = 10_000
#: How long an occurrence handed over is remembered after the last answer that held it,
#: seconds. Peers do not gossip alerts: each has its own copy from Prometheus, so a peer the
#: resolve has reached and one it has not disagree until that copy's endsAt, which
#: Prometheus sets four resend delays ahead (4 minutes at its default). Forgetting at the
#: first answer without the occurrence would hand it over again when the next answer
#: comes from the other peer.
FORGET_SECONDS = 600.0
#: Most occurrences remembered from one poll to the next (a poll's new ones come on top):
#: past it the least recently seen are forgotten first.
MAX_REMEMBERED = 2 * MAX_ALERTS
#: Largest answer body read from a peer, bytes.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Longest one request to a peer may take, seconds (and at most the poll interval).
REQUEST_TIMEOUT = 5.0
#: The poll waits between these shares of the interval: jitter spreads a fleet's polls.
JITTER = (0.8, 1.0)


class PullErrorKind(StrEnum):
    """Why one request to one peer failed; labels the errors counter."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    STATUS = "status"
    DECODE = "decode"
    NOT_READY = "not-ready"


class PullError(Exception):
    """One request to one Alertmanager peer failed."""

    def __init__(self, kind: PullErrorKind, peer: str, message: str) -> None:
        super().__init__(f"{peer}: {message}")
        self.kind = kind
        self.peer = peer


class _ApiAlertStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    state: str
    silenced_by: list[str] = Field(default_factory=list, alias="silencedBy")
    inhibited_by: list[str] = Field(default_factory=list, alias="inhibitedBy")


class ApiAlert(BaseModel):
    """One alert of ``GET /api/v2/alerts`` (Alertmanager's gettableAlert)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=256)
    status: _ApiAlertStatus

    def acts(self) -> bool:
        """Return True when the alert is active, unsilenced and uninhibited."""
        s = self.status
        return s.state == "active" and not s.silenced_by and not s.inhibited_by

    def as_webhook_alert(self) -> AlertmanagerAlert:
        """Return the alert as the webhook would have carried it (firing)."""
        return AlertmanagerAlert.model_validate(
            {
                "status": "firing",
                "labels": self.labels,
                "annotations": self.annotations,
                "startsAt": self.starts_at,
                "endsAt": self.ends_at,
                "generatorURL": self.generator_url,
                "fingerprint": self.fingerprint,
            }
        )


def matcher(label: str, value: str) -> str:
    """Return an Alertmanager equality matcher, the value quoted and escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{label}="{escaped}"'


class AlertmanagerClient:
    """Asks the peers of one Alertmanager cluster, in turn, over API v2."""

    def __init__(self, peers: Sequence[str], timeout: float = REQUEST_TIMEOUT) -> None:
        if not peers:
            raise ValueError("no Alertmanager peer given")
        self.peers = [p.rstrip("/") for p in peers]
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        #: The peer that answered last: asked first next time.
        self._first = 0
        #: Failed requests by kind, every kind present.
        self.errors: Counter[PullErrorKind] = Counter({k: 0 for k in PullErrorKind})
        self.last_error: str | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=8),
                raise_for_status=False,
            )
        return self._session

    async def _get(self, peer: str, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """GET ``path`` of ``peer`` and return its JSON; PullError says what went wrong."""
        try:
            async with self._http().get(peer + path, params=list(params)) as r:
                # read(n) returns what is buffered, not n bytes: gather to the end or the bound.
                parts: list[bytes] = []
                size = 0
                async for chunk in r.content.iter_chunked(64 * 1024):
                    parts.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        break
                body = b"".join(parts)
                if r.status != 200:
                    raise PullError(
                        PullErrorKind.STATUS, peer, f"{path} answered {r.status}: {body[:200]!r}"
                    )
        except TimeoutError as e:
            raise PullError(PullErrorKind.TIMEOUT, peer, f"{path} timed out") from e
        except aiohttp.ClientError as e:
            raise PullError(PullErrorKind.UNREACHABLE, peer, f"{path}: {e}") from e
        if len(body) > MAX_BODY_BYTES:
            raise PullError(PullErrorKind.DECODE, peer, f"{path} answered over {MAX_BODY_BYTES}B")
        try:
            return json.loads(body)
        except ValueError as e:
            raise PullError(PullErrorKind.DECODE, peer, f"{path} answered no JSON: {e}") from e

    async def check_ready(self, peer: str) -> None:
        """Return when ``peer`` says its cluster is ready (or it runs alone); else PullError."""
        status = await self._get(peer, "/api/v2/status")
        cluster = status.get("cluster") if isinstance(status, dict) else None
        state = cluster.get("status") if isinstance(cluster, dict) else None
        if state not in ("ready", "disabled"):
            raise PullError(PullErrorKind.NOT_READY, peer, f"cluster status is {state!r}")

    async def _alerts_of(self, peer: str, matchers: Sequence[str]) -> list[ApiAlert]:
        await self.check_ready(peer)
        params = [("active", "true"), ("silenced", "false"), ("inhibited", "false")]
        params += [("filter", m) for m in matchers]
        raw = await self._get(peer, "/api/v2/alerts", params)
        if not isinstance(raw, list):
            raise PullError(PullErrorKind.DECODE, peer, "/api/v2/alerts answered no list")
        if len(raw) > MAX_ALERTS:
            log.warning(
                "alertmanager %s: %d alerts; the first %d taken", peer, len(raw), MAX_ALERTS
            )
        try:
            return [ApiAlert.model_validate(a) for a in raw[:MAX_ALERTS]]
        except ValidationError as e:
            raise PullError(PullErrorKind.DECODE, peer, f"an alert does not parse: {e}") from e

    async def alerts(self, matchers: Sequence[str]) -> tuple[str, list[ApiAlert]]:
        """Return (peer, alerts) from the first ready peer that answers; PullError if none."""
        n = len(self.peers)
        last: PullError | None = None
        for k in range(n):
            i = (self._first + k) % n
            try:
                found = await self._alerts_of(self.peers[i], matchers)
            except PullError as e:
                self.errors[e.kind] += 1
                self.last_error = str(e)
                log.debug("alertmanager peer failed: %s", e)
                last = e
                continue
            self._first = i
            return self.peers[i], [a for a in found if a.acts()]
        assert last is not None
        raise last


@contextlib.asynccontextmanager
async def _cancelling(task: asyncio.Task[None]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


Key = tuple[str, str]  # (fingerprint, startsAt as Alertmanager wrote it)


class _Handed(NamedTuple):
    """What the puller remembers of an occurrence it handed over."""

    outcome: Outcome
    judged_at: float
    seen_at: float  # the last answer that held it


class AlertPuller:
    """Polls Alertmanager and hands this host's alerts to the remediator."""

    def __init__(
        self,
        client: AlertmanagerClient,
        remediator: Remediator,
        *,
        interval: float = 10.0,
        instance: str | None = None,
        names_here: Callable[[], Collection[str] | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._remediator = remediator
        self.interval = interval
        self.instance = instance
        self._names_here = names_here
        self._clock = clock
        #: 1 while the last poll got an answer from a ready peer.
        self.up = False
        self.last_success_at = 0.0
        self.polls = 0
        #: Alerts of the last answer that were this host's.
        self.alerts_here = 0
        #: Occurrences handed over: their last outcome, when, and when last seen active.
        self._handed: dict[Key, _Handed] = {}
        self._in_flight: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def error(self) -> str | None:
        """Return why the last poll failed; None when it succeeded."""
        if self.up:
            return None
        return self.client.last_error or "no poll has completed yet"

    def error_counts(self) -> dict[str, int]:
        """Return failed requests to peers by kind, every kind present."""
        return {k.value: n for k, n in self.client.errors.items()}

    def matchers(self) -> list[str]:
        """Return the filter matchers of the poll."""
        policy = self._remediator.policy
        found = [matcher(policy.action_label, policy.action_value)]
        if self.instance is not None:
            found.append(matcher("instance", self.instance))
        return found

    def _mine(self, alert: ApiAlert) -> bool:
        """Return True when ``alert`` is for this host."""
        if self.instance is not None:
            return alert.labels.get("instance") == self.instance
        names = self._names_here()
        if names is None:
            return False  # the engine's containers are not known: nothing is acted on
        target = self._remediator.target(alert.labels)
        return target is not None and target in names

    def _due(self, key: Key, now: float) -> bool:
        if key in self._in_flight:
            return False
        handed = self._handed.get(key)
        if handed is None:
            return True
        return handed.outcome not in FINAL_OUTCOMES and now - handed.judged_at >= REJUDGE_SECONDS

    async def poll_once(self) -> list[ApiAlert]:
        """Poll once; start handing this host's new alerts over; return the ones handed."""
        self.polls += 1
        try:
            _, alerts = await self.client.alerts(self.matchers())
        except PullError as e:
            if self.up:
                log.error("alertmanager: no peer answered (%s); nothing is restarted meanwhile", e)
            self.up = False
            return []
        if not self.up and self.polls > 1:
            log.warning("alertmanager: answering again")
        self.up = True
        self.last_success_at = self._clock()
        mine = [a for a in alerts if self._mine(a)]
        self.alerts_here = len(mine)
        now = self._clock()
        keyed = [((a.fingerprint, a.starts_at.isoformat()), a) for a in mine]
        self._remember_seen({key for key, _ in keyed}, now)
        due = [(key, a) for key, a in keyed if self._due(key, now)]
        todo = [a for _, a in due]
        if todo:
            keys = [key for key, _ in due]
            self._in_flight.update(keys)
            task = asyncio.create_task(self._hand_over(todo, keys))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return todo

    def _remember_seen(self, active: set[Key], now: float) -> None:
        """Mark the occurrences of this answer seen; forget those unseen for long, or too many."""
        for key in active & self._handed.keys():
            self._handed[key] = self._handed[key]._replace(seen_at=now)
        idle = [k for k in self._handed if k not in self._in_flight]
        stale = {k for k in idle if now - self._handed[k].seen_at > FORGET_SECONDS}
        excess = len(self._handed) - len(stale) - MAX_REMEMBERED
        if excess > 0:
            fresh = sorted(
                (k for k in idle if k not in stale), key=lambda k: self._handed[k].seen_at
            )
            stale.update(fresh[:excess])
        for key in stale:
            del self._handed[key]

    async def _hand_over(self, alerts: list[ApiAlert], keys: list[Key]) -> None:
        """Hand ``alerts`` to the remediator and remember their outcomes."""
        try:
            outcomes: list[AlertOutcome] = await self._remediator.handle_pulled(
                [a.as_webhook_alert() for a in alerts], self.confirm
            )
        except StateError as e:
            # Nothing was decided for the alerts left: the next poll judges them afresh.
            log.warning("alertmanager: alerts not judged, remediation's state fails: %s", e)
            return
        finally:
            self._in_flight.difference_update(keys)
        now = self._clock()
        for key, result in zip(keys, outcomes, strict=True):
            self._handed[key] = _Handed(result.outcome, now, now)

    async def confirm(self, alert: AlertmanagerAlert) -> bool:
        """Return True when a ready peer still reports ``alert`` active, unsilenced, uninhibited."""
        matchers = [matcher(k, v) for k, v in sorted(alert.labels.items())]
        try:
            _, found = await self.client.alerts(matchers)
        except PullError as e:
            log.warning("alertmanager: cannot confirm %s before acting: %s", alert.fingerprint, e)
            return False
        return any(a.fingerprint == alert.fingerprint for a in found)

    async def still_active(self, fingerprint: str) -> bool:
        """Return True when a ready peer reports an alert of this host's with ``fingerprint``.

        Remediation asks before it redoes the stop of a restart an exporter kill cut short.
        """
        if self._closed:
            return False  # shutting down: no new session, and nothing is stopped
        try:
            _, found = await self.client.alerts(self.matchers())
        except PullError as e:
            log.warning("alertmanager: cannot confirm %s before acting: %s", fingerprint, e)
            return False
        return any(a.fingerprint == fingerprint for a in found)

    async def idle(self) -> None:
        """Return once every hand-over started so far is done."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # a bug must not end pull mode for the process' life
                log.exception("alertmanager: poll failed")
            await asyncio.sleep(self.interval * random.uniform(*JITTER))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Poll in the background for the block; then let hand-overs finish and close."""
        task = asyncio.create_task(self._loop())
        try:
            async with _cancelling(task):
                yield
        finally:
            await self.idle()
            self._closed = True
            await self.client.close()
