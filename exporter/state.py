"""Durable state in SQLite: remediation decisions, restart ledger, quarantines.

One connection, used only by one worker thread, so sqlite3 never runs on the
event loop and never needs cross-thread locking. Every read-modify-write runs
in a ``BEGIN IMMEDIATE`` transaction (:meth:`StateStore.transaction`): it takes
the database's write lock at once, so even two exporter processes sharing a
state dir cannot both decide to restart the same container. WAL mode keeps
readers (the history endpoint) from blocking that writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from exporter.errors import ExporterError

T = TypeVar("T")

#: Bumped when the schema changes incompatibly; an older file is refused, not guessed at.
SCHEMA_VERSION = 1
#: Decisions kept for the history endpoint; older ones are pruned.
HISTORY_KEPT = 10_000
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
    dry_run INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_container ON decisions (container, id);
CREATE TABLE IF NOT EXISTS actions (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    container TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (fingerprint, starts_at, dry_run)
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

    def action_seen(self, fingerprint: str, starts_at: str, dry_run: bool) -> bool:
        """Return True when this alert occurrence already led to an action."""
        row = self._conn.execute(
            "SELECT 1 FROM actions WHERE fingerprint = ? AND starts_at = ? AND dry_run = ?",
            (fingerprint, starts_at, int(dry_run)),
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

    def clear_quarantine(self, container: str, at: float) -> bool:
        """Lift the container's quarantine and restart its budget; True when it was quarantined."""
        cur = self._conn.execute(
            "DELETE FROM quarantine WHERE container = ? AND until > ?", (container, at)
        )
        self._conn.execute("DELETE FROM quarantine WHERE container = ?", (container,))
        self._conn.execute(
            "INSERT OR REPLACE INTO budget_reset (container, at) VALUES (?, ?)", (container, at)
        )
        return cur.rowcount > 0

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
    ) -> int:
        """Append a decision to the history and return its id."""
        cur = self._conn.execute(
            "INSERT INTO decisions "
            "(at, container, fingerprint, starts_at, alertname, outcome, detail, dry_run) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (at, container, fingerprint, starts_at, alertname, outcome, detail, int(dry_run)),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_decision(self, decision_id: int, outcome: str, detail: str) -> None:
        """Set the final outcome of a decision taken before acting."""
        self._conn.execute(
            "UPDATE decisions SET outcome = ?, detail = ? WHERE id = ?",
            (outcome, detail, decision_id),
        )

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

    def prune(self, now: float, keep_actions_seconds: float) -> None:
        """Drop history past :data:`HISTORY_KEPT` and actions older than needed."""
        self._conn.execute(
            "DELETE FROM decisions WHERE id <= (SELECT MAX(id) FROM decisions) - ?",
            (HISTORY_KEPT,),
        )
        self._conn.execute("DELETE FROM actions WHERE at < ?", (now - keep_actions_seconds,))
        self._conn.execute("DELETE FROM quarantine WHERE until < ?", (now,))


class StateStore:
    """The SQLite state file under a state dir, served by one worker thread."""

    def __init__(self, state_dir: Path, filename: str = "state.sqlite3") -> None:
        self.path = state_dir / filename
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the dir and the schema (WAL mode); StateError when that fails."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        try:
            await self._submit(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a decision recorded before a restart must survive a power cut.
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                conn.close()
                raise StateError(
                    f"{self.path}: schema version {row[0]}, this exporter knows {SCHEMA_VERSION}"
                )
        except (sqlite3.Error, OSError) as e:
            raise StateError(f"cannot open state database {self.path}: {e}") from e
        self._conn = conn

    async def close(self) -> None:
        """Close the database and stop the worker thread."""
        if self._executor is None:
            return
        try:
            await self._submit(self._close_sync)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StateError("state store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def transaction(self, fn: Callable[[Ledger], T]) -> T:
        """Run ``fn`` in one write transaction in the worker thread; commit unless it raises."""

        def run() -> T:
            conn = self._conn
            if conn is None:
                raise StateError("state store is not open")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StateError(f"state database {self.path}: {e}") from e
            try:
                result = fn(Ledger(conn))
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as e:
                conn.execute("ROLLBACK")
                raise StateError(f"state database {self.path}: {e}") from e
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._submit(run)
