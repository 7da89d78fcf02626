"""The SQLite store: send ledger, read checkpoints, leases, OAuth2 token cache, operation logs.

One file per project (default ``.mailconnector/state.db`` beside the project file), WAL mode so that
readers and a writer do not block each other, created with mode 0600 (it holds tokens). Each thread
gets its own connection; every write is one short transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StateError

__all__ = ["Checkpoint", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS send_ledger (
    message_id TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    sent_at REAL NOT NULL,
    status TEXT NOT NULL,
    accepted TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS checkpoints (
    connection TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (connection, folder)
);
CREATE TABLE IF NOT EXISTS delivered (
    connection TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    message_id TEXT,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (connection, folder, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS delivered_mid ON delivered (connection, folder, message_id);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    records_read INTEGER NOT NULL DEFAULT 0,
    records_written INTEGER NOT NULL DEFAULT 0,
    records_failed INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE TABLE IF NOT EXISTS run_errors (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT,
    error TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""


@dataclass(frozen=True)
class Checkpoint:
    connection: str
    folder: str
    uidvalidity: int
    last_uid: int


class Store:
    """Thread-safe access to the project's state database."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            os.chmod(self.path, 0o600)
            self._db().executescript(_SCHEMA)  # executescript manages its own transaction
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the state store {self.path}: {exc}",
                             hint="check the directory is writable, or choose another place with "
                             "settings.state in the project file") from exc

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StateError(f"state store {self.path}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------- send ledger
    def sent_status(self, message_id: str) -> str | None:
        """The ledger's status for ``message_id`` (``sent``, ``partial``, ``uncertain``), None if never sent."""
        row = self._db().execute("SELECT status FROM send_ledger WHERE message_id = ?", (message_id,)).fetchone()
        return None if row is None else str(row[0])

    def record_sent(self, message_id: str, connection: str, status: str, accepted: list[str]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO send_ledger (message_id, connection, sent_at, status, accepted) "
                "VALUES (?, ?, ?, ?, ?)",
                (message_id, connection, time.time(), status, json.dumps(accepted)),
            )

    # -------------------------------------------------------------- checkpoints
    def checkpoint(self, connection: str, folder: str) -> Checkpoint | None:
        row = self._db().execute(
            "SELECT uidvalidity, last_uid FROM checkpoints WHERE connection = ? AND folder = ?",
            (connection, folder),
        ).fetchone()
        return Checkpoint(connection, folder, int(row[0]), int(row[1])) if row else None

    def record_delivered(self, connection: str, folder: str, uidvalidity: int, uid: int,
                         message_id: str | None = None) -> None:
        """Record one delivered message: one statement, its own transaction (an ack must be durable before
        it returns, and this is on the path of every message read)."""
        try:
            self._db().execute(
                "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?, ?)",
                (connection, folder, uidvalidity, uid, message_id, time.time()),
            )
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: {exc}") from exc

    def move_checkpoint(self, connection: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Move the checkpoint forward to ``last_uid`` (never backwards; a new UIDVALIDITY starts over)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (connection, folder) DO UPDATE SET "
                "last_uid = CASE WHEN uidvalidity = excluded.uidvalidity THEN max(last_uid, excluded.last_uid) "
                "ELSE excluded.last_uid END, uidvalidity = excluded.uidvalidity, updated_at = excluded.updated_at",
                (connection, folder, uidvalidity, last_uid, time.time()),
            )

    def adopt_delivered(self, connection: str, folder: str, uidvalidity: int,
                        matches: list[tuple[int, str | None]]) -> None:
        """Move a folder's checkpoint to a new UIDVALIDITY, recording ``matches`` (new UID, Message-ID of a
        message delivered under the old one) as delivered -- in one transaction, so that a crash half-way
        leaves the old UIDVALIDITY in place and the next run matches again."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?, ?)",
                [(connection, folder, uidvalidity, uid, mid, now) for uid, mid in matches],
            )
            db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                (connection, folder, uidvalidity, max((uid for uid, _ in matches), default=0), now),
            )

    def delivered_uids(self, connection: str, folder: str, uidvalidity: int) -> set[int]:
        rows = self._db().execute(
            "SELECT uid FROM delivered WHERE connection = ? AND folder = ? AND uidvalidity = ?",
            (connection, folder, uidvalidity),
        ).fetchall()
        return {int(r[0]) for r in rows}

    def delivered_message_ids(self, connection: str, folder: str) -> set[str]:
        rows = self._db().execute(
            "SELECT message_id FROM delivered WHERE connection = ? AND folder = ? AND message_id IS NOT NULL",
            (connection, folder),
        ).fetchall()
        return {str(r[0]) for r in rows}

    # ------------------------------------------------------------------ leases
    def acquire_lease(self, name: str, *, ttl: float, holder: str | None = None) -> str | None:
        """Take (or renew) a named lease; the holder id, or None when another holder has it."""
        holder = holder or uuid.uuid4().hex
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and float(row[1]) > now:
                return None
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (name, holder, now + ttl))
        return holder

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        row = self._db().execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
        if row is None or float(row[1]) <= time.time():
            return None
        return str(row[0]), float(row[1])

    # ------------------------------------------------------------------ tokens
    def get_token(self, key: str) -> tuple[str, float] | None:
        row = self._db().execute("SELECT value, expires_at FROM tokens WHERE key = ?", (key,)).fetchone()
        return (str(row[0]), float(row[1])) if row else None

    def put_token(self, key: str, value: str, expires_at: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)", (key, value, expires_at))

    def delete_token(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM tokens WHERE key = ?", (key,))

    # ---------------------------------------------------------- operation logs
    def start_run(self, operation: str, settings: dict[str, Any]) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, operation, started_at, status, settings) VALUES (?, ?, ?, 'running', ?)",
                (run_id, operation, time.time(), json.dumps(settings, default=str)),
            )
        return run_id

    def record_run_error(self, run_id: str, record: str | None, error: dict[str, Any]) -> None:
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM run_errors WHERE run_id = ?",
                             (run_id,)).fetchone()[0]
            db.execute("INSERT INTO run_errors VALUES (?, ?, ?, ?)", (run_id, seq, record, json.dumps(error)))

    def finish_run(self, run_id: str, *, status: str, read: int, written: int, failed: int,
                   error: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET ended_at = ?, status = ?, records_read = ?, records_written = ?, "
                "records_failed = ?, error = ? WHERE run_id = ?",
                (time.time(), status, read, written, failed, error, run_id),
            )

    def list_runs(self, *, limit: int = 50, operation: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM runs"
        args: list[Any] = []
        if operation:
            sql += " WHERE operation = ?"
            args.append(operation)
        sql += " ORDER BY started_at DESC LIMIT ?"
        args.append(limit)
        cur = self._db().execute(sql, args)
        cols = [c[0] for c in cur.description]
        return [_run_row(dict(zip(cols, r, strict=True))) for r in cur.fetchall()]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        cur = self._db().execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            return None
        cols = [c[0] for c in cur.description]
        run = _run_row(dict(zip(cols, row, strict=True)))
        errs = self._db().execute("SELECT record, error FROM run_errors WHERE run_id = ? ORDER BY seq",
                                  (run_id,)).fetchall()
        run["errors"] = [{"record": r, "error": json.loads(e)} for r, e in errs]
        return run

    def delete_run(self, run_id: str) -> None:
        """Forget one run (a watch's runs that found nothing are not kept)."""
        with self._tx() as db:
            db.execute("DELETE FROM run_errors WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def prune_runs(self, *, max_age_days: float | None = None, max_count: int | None = None) -> int:
        """Retention: drop runs older than ``max_age_days`` and beyond the newest ``max_count``."""
        removed = 0
        with self._tx() as db:
            ids: set[str] = set()
            if max_age_days is not None:
                cutoff = time.time() - max_age_days * 86400
                ids |= {r[0] for r in db.execute("SELECT run_id FROM runs WHERE started_at < ?", (cutoff,))}
            if max_count is not None:
                ids |= {r[0] for r in db.execute(
                    "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT -1 OFFSET ?", (max_count,))}
            for rid in ids:
                db.execute("DELETE FROM run_errors WHERE run_id = ?", (rid,))
                db.execute("DELETE FROM runs WHERE run_id = ?", (rid,))
                removed += 1
        return removed


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    row["settings"] = json.loads(row.get("settings") or "{}")
    for key in ("started_at", "ended_at"):
        if row.get(key) is not None:
            row[key] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(row[key]))
    return row
