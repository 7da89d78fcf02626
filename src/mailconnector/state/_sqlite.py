"""The embedded store: one SQLite file (mode 0600: it holds tokens), WAL so that readers do not wait for the
writer. Every committed write survives a killed process; the durable ones (claims, checkpoints, resolutions)
are synced to disk before they return (``synchronous=FULL`` for that statement; in WAL mode that also syncs
every write committed before it), so they survive a power cut too, while the rest pays no sync each.
Processes on one machine (or on a disk they share with working locks) share it; its clock is the host's."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import StateError
from ._schema import LATEST, MIGRATIONS, V1_UPGRADE
from ._sql import Dialect, Exec, Rows, SqlStore

__all__ = ["SqliteStore"]

_DIALECT = Dialect(placeholder="?", now="((julianday('now') - 2440587.5) * 86400.0)", greatest="max", share="",
                   real="REAL", serial="INTEGER PRIMARY KEY AUTOINCREMENT", clustered=" WITHOUT ROWID")


class SqliteStore(SqlStore):
    dialect = _DIALECT

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # One writer at a time within this process, queued here: SQLite's own busy handler would make
        # the others sleep in growing steps (1, 2, 5, 10, 20 ms...), which costs a parallel sender dearly.
        # Other processes still meet the busy handler; readers never wait (WAL).
        self._write_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            if self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the state store {self.path}: {exc.strerror or exc}",
                             hint="check the directory is writable, or choose another place with "
                             "settings.state in the project file (or MAILCONNECTOR_STATE)") from exc
        self._prepare()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA busy_timeout=30000")
                _use_wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _error(self, exc: sqlite3.Error) -> StateError:
        text = str(exc)
        hint = None
        if "readonly" in text or "read-only" in text:
            hint = "the store's file or its directory is read-only: make it writable, or set settings.state"
        elif "not a database" in text:
            hint = "settings.state names a file that is not a mailconnector store"
        return StateError(f"state store {self.path}: {text}", hint=hint)

    def _exec(self, sql: str, params: Sequence[Any] = (), *, durable: bool = False) -> tuple[Rows, int]:
        db = self._db()
        writes = not sql.lstrip()[:6].upper().startswith("SELECT")
        try:
            with self._write_lock if writes else contextlib.nullcontext():
                if durable:
                    db.execute("PRAGMA synchronous=FULL")
                try:
                    cur = db.execute(sql, params)
                    rows = cur.fetchall() if cur.description is not None else []
                    return rows, cur.rowcount
                finally:
                    if durable:
                        db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Exec]:
        db = self._db()

        def ex(sql: str, params: Sequence[Any]) -> tuple[Rows, int]:
            cur = db.execute(sql, params)
            return (cur.fetchall() if cur.description is not None else []), cur.rowcount

        with self._write_lock:
            try:
                db.execute("PRAGMA synchronous=FULL")  # transactions are rare and each one matters
                db.execute("BEGIN IMMEDIATE")
                yield ex
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise self._error(exc) from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            finally:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA synchronous=NORMAL")

    def _prepare(self) -> None:
        with self._transaction() as ex:
            tables = {r[0] for r in ex("SELECT name FROM sqlite_master WHERE type = 'table'", ())[0]}
            if "schema_migrations" not in tables:
                ex("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)", ())
                if "send_ledger" in tables:  # the first release's layout
                    for statement in self.schema_statements(V1_UPGRADE.replace("{v2}", MIGRATIONS[2])):
                        ex(statement, ())
                    ex(self.dialect.sql("INSERT INTO schema_migrations VALUES (1, {now}), (2, {now})"), ())
            current = ex("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", ())[0][0][0]
            if current != LATEST:
                self._migrate(ex, int(current))

    def close(self) -> None:
        with self._lock:
            dbs, self._all = self._all, []
        for db in dbs:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._local = threading.local()


def _use_wal(db: sqlite3.Connection, *, patience: float = 30.0) -> None:
    """Switch the file to WAL once. The switch does not wait for a lock as other statements do (the busy
    handler is not called), so processes opening a new store at the same moment take turns here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
