"""Durable state in SQLite: remediation decisions, restart ledger, quarantines.

One connection, used only by one worker thread, so sqlite3 never runs on the
event loop and never needs cross-thread locking. Every read-modify-write runs
in a ``BEGIN IMMEDIATE`` transaction (:meth:`StateStore.transaction`): it takes
the database's write lock at once, so even two exporter processes sharing a
state dir cannot both decide to restart the same container. WAL mode keeps
readers (the history endpoint) from blocking that writer.

Every table has a bound: the history keeps :data:`HISTORY_KEPT` rows and
:data:`HISTORY_MAX_BYTES` of text whatever the outcome, its fields are cut to
a fixed length, actions and quarantine-clears are pruned past the windows
that read them, and operator stops live only while their container does.

A file that cannot be used (corrupt, locked by another process) makes
:meth:`StateStore.open` raise :class:`StateError`; the caller decides what
that costs (remediation turns it into a 503 and retries). A file found empty,
or holding no schema, is opened afresh but said aloud:
:attr:`StateStore.lost` names what was found.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from exporter.errors import ExporterError

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Bumped when the schema changes; version 1 is migrated (see ``_MIGRATE_FROM_1``),
#: a newer one is refused, not guessed at.
SCHEMA_VERSION = 2
#: Decisions kept for the history endpoint, whatever their outcome; older ones are pruned.
HISTORY_KEPT = 10_000
#: Text the history may hold (UTF-8 bytes of its fields); the oldest rows go past it.
HISTORY_MAX_BYTES = 4 * 1024 * 1024
#: The byte bound is checked every this many decisions (a window sum over the table).
HISTORY_BYTES_EVERY = 64
#: Longest alertname and detail stored; longer ones are cut (a label may be huge).
ALERTNAME_MAX_CHARS = 200
DETAIL_MAX_CHARS = 1000
#: The WAL file is truncated back to this after a checkpoint.
WAL_MAX_BYTES = 4 * 1024 * 1024
#: How long a transaction waits for another process' write lock by default, seconds.
BUSY_TIMEOUT_SECONDS = 10.0
#: Actions are the dedupe memory: keep them at least this long, even past the window.
ACTIONS_KEPT_SECONDS = 7 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    container TEXT,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    alertname TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    dry_run INTEGER NOT NULL DEFAULT 0,
    incarnation TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_container ON decisions (container, id);
CREATE TABLE IF NOT EXISTS actions (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    container TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (fingerprint, starts_at, container, dry_run)
);
CREATE INDEX IF NOT EXISTS actions_container ON actions (container, dry_run, at);
CREATE TABLE IF NOT EXISTS quarantine (
    container TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    since REAL NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (container, dry_run)
);
CREATE TABLE IF NOT EXISTS budget_reset (container TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS operator_stops (container TEXT PRIMARY KEY, at REAL NOT NULL);
"""

#: Version 1 keyed the dedupe memory by alert alone (an alert naming another container
#: was a duplicate) and had no incarnation column nor operator stops.
_MIGRATE_FROM_1 = """
ALTER TABLE decisions ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
ALTER TABLE actions RENAME TO actions_v1;
DROP INDEX IF EXISTS actions_container;
CREATE TABLE actions (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    container TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (fingerprint, starts_at, container, dry_run)
);
INSERT INTO actions SELECT fingerprint, starts_at, dry_run, container, at FROM actions_v1;
DROP TABLE actions_v1;
CREATE INDEX actions_container ON actions (container, dry_run, at);
CREATE TABLE IF NOT EXISTS operator_stops (container TEXT PRIMARY KEY, at REAL NOT NULL);
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


class StateError(ExporterError):
    """The state database cannot be opened or used."""


class DecisionRecord(BaseModel):
    """One remediation decision as the history keeps it."""

    model_config = ConfigDict(frozen=True)

    id: int
    at: float = Field(description="when the decision was taken, unix seconds")
    container: str | None = Field(description="the target container; null when unresolved")
    fingerprint: str
    starts_at: str = Field(description="the alert's startsAt, normalised")
    alertname: str = ""
    outcome: str = Field(
        description="restarted, cooldown, quarantined, ...; restarting or starting while under way"
    )
    detail: str = ""
    dry_run: bool = False


class Ledger:
    """Typed reads and writes over the connection, valid inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def action_seen(self, fingerprint: str, starts_at: str, container: str, dry_run: bool) -> bool:
        """Return True when this alert occurrence already led to an action on ``container``."""
        row = self._conn.execute(
            "SELECT 1 FROM actions WHERE fingerprint = ? AND starts_at = ? AND container = ? "
            "AND dry_run = ?",
            (fingerprint, starts_at, container, int(dry_run)),
        ).fetchone()
        return row is not None

    def record_action(
        self, fingerprint: str, starts_at: str, container: str, at: float, dry_run: bool
    ) -> None:
        """Remember that this alert occurrence led to a (possibly dry-run) restart."""
        self._conn.execute(
            "INSERT INTO actions (fingerprint, starts_at, dry_run, container, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (fingerprint, starts_at, int(dry_run), container, at),
        )

    def forget_action(
        self, fingerprint: str, starts_at: str, container: str, dry_run: bool
    ) -> None:
        """Forget an action that was decided but never taken (its alert resolved meanwhile)."""
        self._conn.execute(
            "DELETE FROM actions WHERE fingerprint = ? AND starts_at = ? AND container = ? "
            "AND dry_run = ?",
            (fingerprint, starts_at, container, int(dry_run)),
        )

    def action_times(self, container: str, since: float, dry_run: bool) -> list[float]:
        """Return the times of the container's actions after ``since``, oldest first."""
        rows = self._conn.execute(
            "SELECT at FROM actions WHERE container = ? AND dry_run = ? AND at > ? ORDER BY at",
            (container, int(dry_run), since),
        ).fetchall()
        return [float(r[0]) for r in rows]

    def last_action(self, container: str, dry_run: bool) -> float | None:
        """Return when the container was last acted on, or None."""
        row = self._conn.execute(
            "SELECT MAX(at) FROM actions WHERE container = ? AND dry_run = ?",
            (container, int(dry_run)),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def budget_reset_at(self, container: str) -> float:
        """Return when an operator last cleared the container's quarantine (0 if never)."""
        row = self._conn.execute(
            "SELECT at FROM budget_reset WHERE container = ?", (container,)
        ).fetchone()
        return 0.0 if row is None else float(row[0])

    def quarantine_until(self, container: str, dry_run: bool) -> float | None:
        """Return until when the container is quarantined, or None."""
        row = self._conn.execute(
            "SELECT until FROM quarantine WHERE container = ? AND dry_run = ?",
            (container, int(dry_run)),
        ).fetchone()
        return None if row is None else float(row[0])

    def set_quarantine(self, container: str, since: float, until: float, dry_run: bool) -> None:
        """Quarantine the container from ``since`` until ``until``."""
        self._conn.execute(
            "INSERT OR REPLACE INTO quarantine (container, dry_run, since, until) "
            "VALUES (?, ?, ?, ?)",
            (container, int(dry_run), since, until),
        )

    def end_quarantine(self, container: str, dry_run: bool) -> None:
        """Drop an expired quarantine row."""
        self._conn.execute(
            "DELETE FROM quarantine WHERE container = ? AND dry_run = ?",
            (container, int(dry_run)),
        )

    def clear_quarantine(self, container: str, at: float, window_seconds: float) -> bool:
        """Lift the container's quarantine and restart its budget; True when it was quarantined.

        The budget's reset is kept only when restarts inside the window would count
        against it: otherwise it changes nothing, and a row per name an operator
        cleared would grow the table without bound.
        """
        cur = self._conn.execute(
            "DELETE FROM quarantine WHERE container = ? AND until > ?", (container, at)
        )
        self._conn.execute("DELETE FROM quarantine WHERE container = ?", (container,))
        if self._conn.execute(
            "SELECT 1 FROM actions WHERE container = ? AND at > ? LIMIT 1",
            (container, at - window_seconds),
        ).fetchone():
            self._conn.execute(
                "INSERT OR REPLACE INTO budget_reset (container, at) VALUES (?, ?)",
                (container, at),
            )
        else:
            self._conn.execute("DELETE FROM budget_reset WHERE container = ?", (container,))
        return cur.rowcount > 0

    def hold(self, container: str, at: float) -> None:
        """Remember that an operator stopped ``container`` through the API."""
        self._conn.execute(
            "INSERT OR REPLACE INTO operator_stops (container, at) VALUES (?, ?)", (container, at)
        )

    def release(self, container: str) -> None:
        """Forget an operator stop: the operator started the container, or it is gone."""
        self._conn.execute("DELETE FROM operator_stops WHERE container = ?", (container,))

    def held(self) -> dict[str, float]:
        """Return every container an operator stopped, and when."""
        rows = self._conn.execute("SELECT container, at FROM operator_stops").fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    def held_at(self, container: str) -> float | None:
        """Return when an operator stopped ``container``, or None."""
        row = self._conn.execute(
            "SELECT at FROM operator_stops WHERE container = ?", (container,)
        ).fetchone()
        return None if row is None else float(row[0])

    def quarantined(self, now: float, dry_run: bool) -> dict[str, float]:
        """Return every container quarantined at ``now`` and until when."""
        rows = self._conn.execute(
            "SELECT container, until FROM quarantine WHERE dry_run = ? AND until > ?",
            (int(dry_run), now),
        ).fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    def record_decision(
        self,
        *,
        at: float,
        container: str | None,
        fingerprint: str,
        starts_at: str,
        alertname: str,
        outcome: str,
        detail: str,
        dry_run: bool,
        incarnation: str = "",
    ) -> int:
        """Append a decision to the history, keep the history's bounds, return its id.

        ``incarnation`` names the container's run the decision was taken against
        (its start time and pid), so a restart cut by a kill can tell whether it
        took effect.
        """
        cur = self._conn.execute(
            "INSERT INTO decisions (at, container, fingerprint, starts_at, alertname, outcome, "
            "detail, dry_run, incarnation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                at,
                container,
                fingerprint,
                starts_at,
                alertname[:ALERTNAME_MAX_CHARS],
                outcome,
                detail[:DETAIL_MAX_CHARS],
                int(dry_run),
                incarnation,
            ),
        )
        assert cur.lastrowid is not None
        self._bound_history(cur.lastrowid)
        return cur.lastrowid

    def _bound_history(self, newest: int) -> None:
        """Drop the decisions past :data:`HISTORY_KEPT` rows or :data:`HISTORY_MAX_BYTES`."""
        self._conn.execute("DELETE FROM decisions WHERE id <= ?", (newest - HISTORY_KEPT,))
        if newest % HISTORY_BYTES_EVERY:
            return
        # The newest rows whose running total of text stays within the budget are kept.
        row = self._conn.execute(
            "SELECT MAX(id) FROM (SELECT id, SUM("
            "length(CAST(fingerprint AS BLOB)) + length(CAST(starts_at AS BLOB)) + "
            "length(CAST(alertname AS BLOB)) + length(CAST(outcome AS BLOB)) + "
            "length(CAST(detail AS BLOB)) + length(CAST(incarnation AS BLOB)) + "
            "coalesce(length(CAST(container AS BLOB)), 0)"
            ") OVER (ORDER BY id DESC) AS running FROM decisions) WHERE running > ?",
            (HISTORY_MAX_BYTES,),
        ).fetchone()
        if row is not None and row[0] is not None:
            self._conn.execute("DELETE FROM decisions WHERE id <= ?", (int(row[0]),))

    def history_size(self) -> tuple[int, int]:
        """Return the history's rows and the bytes of text they hold."""
        row = self._conn.execute(
            "SELECT COUNT(*), coalesce(SUM("
            "length(CAST(fingerprint AS BLOB)) + length(CAST(starts_at AS BLOB)) + "
            "length(CAST(alertname AS BLOB)) + length(CAST(outcome AS BLOB)) + "
            "length(CAST(detail AS BLOB)) + length(CAST(incarnation AS BLOB)) + "
            "coalesce(length(CAST(container AS BLOB)), 0)), 0) FROM decisions"
        ).fetchone()
        return int(row[0]), int(row[1])

    def last_decision_of(
        self, container: str, fingerprint: str, starts_at: str
    ) -> tuple[int, str] | None:
        """Return (id, outcome) of the newest decision on one alert occurrence for a container."""
        row = self._conn.execute(
            "SELECT id, outcome FROM decisions WHERE container = ? AND fingerprint = ? "
            "AND starts_at = ? ORDER BY id DESC LIMIT 1",
            (container, fingerprint, starts_at),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def update_decision(self, decision_id: int, outcome: str, detail: str) -> None:
        """Set the final outcome of a decision taken before acting."""
        self._conn.execute(
            "UPDATE decisions SET outcome = ?, detail = ? WHERE id = ?",
            (outcome, detail[:DETAIL_MAX_CHARS], decision_id),
        )

    def incarnation(self, decision_id: int) -> str:
        """Return the container run a decision was taken against ('' when unknown)."""
        row = self._conn.execute(
            "SELECT incarnation FROM decisions WHERE id = ?", (decision_id,)
        ).fetchone()
        return "" if row is None else str(row[0])

    def recent_decisions(self, limit: int, container: str | None = None) -> list[DecisionRecord]:
        """Return the newest decisions first, optionally for one container."""
        if container is None:
            return self._decisions("ORDER BY id DESC LIMIT ?", (limit,))
        return self._decisions("WHERE container = ? ORDER BY id DESC LIMIT ?", (container, limit))

    def decisions_with_outcome(self, *outcomes: str) -> list[DecisionRecord]:
        """Return every decision whose stored outcome is one of ``outcomes``, oldest first."""
        marks = ", ".join("?" for _ in outcomes)
        return self._decisions(f"WHERE outcome IN ({marks}) ORDER BY id", outcomes)

    def _decisions(self, clause: str, params: tuple[object, ...]) -> list[DecisionRecord]:
        rows = self._conn.execute(
            "SELECT id, at, container, fingerprint, starts_at, alertname, outcome, detail, "
            "dry_run FROM decisions " + clause,
            params,
        )
        return [
            DecisionRecord(
                id=r[0],
                at=r[1],
                container=r[2],
                fingerprint=r[3],
                starts_at=r[4],
                alertname=r[5],
                outcome=r[6],
                detail=r[7],
                dry_run=bool(r[8]),
            )
            for r in rows.fetchall()
        ]

    def prune(self, now: float, keep_actions_seconds: float, window_seconds: float) -> None:
        """Drop actions older than needed, ended quarantines and budget resets past the window."""
        self._conn.execute("DELETE FROM actions WHERE at < ?", (now - keep_actions_seconds,))
        self._conn.execute("DELETE FROM quarantine WHERE until < ?", (now,))
        # A reset older than the window excludes nothing the window still counts.
        self._conn.execute("DELETE FROM budget_reset WHERE at < ?", (now - window_seconds,))


def _statements(script: str) -> list[str]:
    """Split a schema script (no ';' inside literals) into statements."""
    return [part.strip() for part in script.split(";") if part.strip()]


class StateStore:
    """The SQLite state file under a state dir, served by one worker thread."""

    #: The state file's name under the state dir; the mount policy protects it.
    FILENAME: Final = "state.sqlite3"

    @classmethod
    def file_in(cls, state_dir: Path) -> Path:
        """Return where the state file of ``state_dir`` lives."""
        return state_dir / cls.FILENAME

    def __init__(self, state_dir: Path, open_busy_timeout: float = 2.0) -> None:
        self.path = self.file_in(state_dir)
        self._open_busy_timeout = open_busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        #: Why the state was found lost at the last open (empty file, no schema), or None.
        self.lost: str | None = None
        #: How many opens found the state lost, for a counter.
        self.lost_count = 0

    @property
    def is_open(self) -> bool:
        """Return True while a connection is open."""
        return self._conn is not None

    async def open(self) -> None:
        """Open (or reopen) the file and its schema (WAL mode); StateError when that fails.

        The worker thread stays after a failure, so the caller may try again.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        await self._submit(self._open_sync)

    def _open_sync(self) -> None:
        self._close_sync()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size: int | None = os.stat(self.path).st_size
            except FileNotFoundError:
                size = None
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._open_busy_timeout)
            try:
                lost = self._prepare(conn, size)
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as e:
            raise StateError(f"cannot open state database {self.path}: {e}") from e
        if lost is not None:
            self.lost = lost
            self.lost_count += 1
            log.warning(
                "state database %s %s: started afresh; every quarantine, cooldown, restart "
                "budget and dedupe memory it held is lost",
                self.path,
                lost,
            )
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection, size: int | None) -> str | None:
        """Check the file, create or migrate its schema; return why it was lost, or None."""
        # A damaged file is refused, never written over: the operator may want it back.
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StateError(f"{self.path} is damaged: {check}")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a decision recorded before a restart must survive a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_MAX_BYTES}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            row = (
                conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if has_meta
                else None
            )
            version = None if row is None else int(row[0])
            if version is not None and version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path}: schema version {version}, this exporter knows {SCHEMA_VERSION}"
                )
            if version == 1:
                for statement in _statements(_MIGRATE_FROM_1):
                    conn.execute(statement)
                log.info("state database %s migrated from schema 1 to 2", self.path)
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            if version is None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if size == 0:
            return "was empty (0 bytes)"
        if size is not None and version is None:
            return "held no remediation schema"
        return None

    async def close(self) -> None:
        """Close the database and stop the worker thread."""
        if self._executor is None:
            return
        try:
            await self._submit(self._close_sync)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def disconnect(self) -> None:
        """Close the connection but keep the worker, so that open() starts afresh."""
        if self._executor is not None:
            await self._submit(self._close_sync)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StateError("state store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def transaction(
        self, fn: Callable[[Ledger], T], busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> T:
        """Run ``fn`` in one write transaction in the worker thread; commit unless it raises.

        ``busy_timeout`` bounds the wait for another process' write lock (StateError after).
        """

        def run() -> T:
            conn = self._conn
            if conn is None:
                raise StateError(f"state database {self.path} is not open")
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StateError(f"state database {self.path}: {e}") from e
            try:
                result = fn(Ledger(conn))
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as e:
                _rollback(conn)
                raise StateError(f"state database {self.path}: {e}") from e
            except BaseException:
                _rollback(conn)
                raise

        return await self._submit(run)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT may have ended it)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.error("state database rollback failed: %s", e)
