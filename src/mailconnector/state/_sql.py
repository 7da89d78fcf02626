"""The store's logic, once, in SQL that SQLite and PostgreSQL both run; each backend only says how to
talk to its database (``_Backend``) and fills a few dialect words.

Every write that must not be lost is one statement or one short transaction, durable when it returns.
Atomicity comes from the database, not from a lock in this process: a claim is one
``INSERT ... ON CONFLICT DO NOTHING``, a lease one conditional upsert, a fenced write one statement whose
``WHERE EXISTS`` checks the lease (``FOR SHARE`` on PostgreSQL, so that a takeover waits for it).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import StateError
from ._leases import gone_from_this_host, lease_lost_error, new_holder
from ._model import (
    Checkpoint,
    Claim,
    Delivered,
    Fence,
    LeaseInfo,
    LedgerEntry,
    LedgerStatus,
)
from ._schema import LATEST, MIGRATIONS

__all__ = ["Dialect", "SqlStore"]

Rows = list[tuple[Any, ...]]
# Runs one statement: (sql, params) -> (rows, rowcount). Rows are fetched only for statements that return them.
Exec = Callable[[str, Sequence[Any]], tuple[Rows, int]]


@dataclass(frozen=True)
class Dialect:
    placeholder: str  # "?" or "%s"
    now: str  # the database's clock, in seconds since the epoch
    greatest: str  # the two-argument maximum
    share: str  # locks a fence's lease row for the rest of the statement's transaction
    real: str
    serial: str
    clustered: str  # after a table's definition: the table stored as its primary key, where the database can

    def sql(self, text: str) -> str:
        text = text.replace("{now}", self.now).replace("{greatest}", self.greatest).replace("{share}", self.share)
        return text.replace("?", self.placeholder) if self.placeholder != "?" else text


class SqlStore:
    """The roles of ``StateStore`` over a SQL database. Subclasses provide ``_exec``, ``_transaction``,
    ``_prepare`` (creating and upgrading the tables) and ``location``."""

    dialect: Dialect
    location: str

    # -------------------------------------------------------------- backend
    def _exec(self, sql: str, params: Sequence[Any] = (), *, durable: bool = False) -> tuple[Rows, int]:
        """Run one statement. ``durable``: it must be on disk when this returns, even across a power cut
        (a claim; the checkpoint that precedes after-read actions). Other writes may be lost in a power cut
        (never in a process kill), and each such loss errs on the safe side: a lost settle or release
        leaves a claim that becomes ``uncertain``; a lost lease renewal is an expired lease."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Exec]:
        raise NotImplementedError
        yield  # pragma: no cover

    def close(self) -> None:
        raise NotImplementedError

    def _q(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self._exec(self.dialect.sql(sql), params)[0]

    def _w(self, sql: str, params: Sequence[Any] = (), *, durable: bool = False) -> int:
        return self._exec(self.dialect.sql(sql), params, durable=durable)[1]

    def _migrate(self, ex: Exec, current: int) -> None:
        """Bring a store at version ``current`` up to ``LATEST`` (inside the caller's transaction)."""
        if current > LATEST:
            raise StateError(
                f"the state store {self.location} was written by a newer release of mailconnector (schema "
                f"version {current}; this release knows up to {LATEST})",
                hint="upgrade mailconnector on this machine, or point settings.state at another store")
        for version in sorted(v for v in MIGRATIONS if v > current):
            for statement in self.schema_statements(MIGRATIONS[version]):
                ex(statement, ())
            ex(self.dialect.sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, {now})"),
               (version,))

    def schema_statements(self, script: str) -> list[str]:
        text = script.format(real=self.dialect.real, serial=self.dialect.serial, clustered=self.dialect.clustered)
        return [s.strip() for s in text.split(";") if s.strip()]

    # ---------------------------------------------------------- send ledger
    def claim(self, message_id: str, *, connection: str, holder: str, recipients: list[str]) -> Claim:
        for _ in range(3):  # the row can vanish between the insert and the look (a release): look again
            inserted = self._w(
                "INSERT INTO ledger (message_id, connection, status, holder, claimed_at, recipients) "
                "VALUES (?, ?, 'claimed', ?, {now}, ?) ON CONFLICT (message_id) DO NOTHING",
                (message_id, connection, holder, json.dumps(recipients)), durable=True)
            if inserted:
                return Claim(True, "claimed", holder)
            rows = self._q("SELECT status, holder FROM ledger WHERE message_id = ?", (message_id,))
            if rows:
                return Claim(False, rows[0][0], rows[0][1])
        raise StateError(f"the send ledger entry of {message_id} keeps changing under this claim",
                         hint="another sender is claiming and releasing it; run again")

    def settle(self, message_id: str, *, holder: str, status: LedgerStatus, accepted: list[str],
               note: str | None = None) -> None:
        changed = self._w("UPDATE ledger SET status = ?, accepted = ?, settled_at = {now}, note = ? "
                          "WHERE message_id = ? AND holder = ?",
                          (status, json.dumps(accepted), note, message_id, holder))
        if not changed:  # the claim was resolved by hand meanwhile: keep what is known now
            self._w("INSERT INTO ledger (message_id, connection, status, holder, claimed_at, settled_at, accepted, "
                    "note) VALUES (?, '', ?, ?, {now}, {now}, ?, ?) ON CONFLICT (message_id) DO NOTHING",
                    (message_id, status, holder, json.dumps(accepted), note))

    def release(self, message_id: str, *, holder: str) -> None:
        self._w("DELETE FROM ledger WHERE message_id = ? AND holder = ? AND status = 'claimed'", (message_id, holder))

    def abandon(self, message_id: str, *, holder: str) -> bool:
        return bool(self._w(
            "UPDATE ledger SET status = 'uncertain', settled_at = {now}, note = ? "
            "WHERE message_id = ? AND holder = ? AND status = 'claimed'",
            ("the sender that claimed it stopped (killed?) before recording the server's answer",
             message_id, holder)))

    def ledger_entry(self, message_id: str) -> LedgerEntry | None:
        rows = self._q(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE message_id = ?", (message_id,))
        return _ledger_entry(rows[0]) if rows else None

    def ledger_entries(self, *, status: str | None = None, search: str | None = None,
                       limit: int = 100) -> list[LedgerEntry]:
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append("status = ?")
            args.append(status)
        if search:
            pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(lower(message_id) LIKE ? ESCAPE '\\' OR lower(recipients) LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        sql = f"SELECT {_LEDGER_COLUMNS} FROM ledger"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY claimed_at DESC, message_id LIMIT ?"
        return [_ledger_entry(r) for r in self._q(sql, (*args, limit))]

    def resolve(self, message_id: str, *, sent: bool, note: str) -> LedgerEntry | None:
        if sent:
            self._w("UPDATE ledger SET status = 'sent', settled_at = {now}, note = ? "
                    "WHERE message_id = ? AND status = 'uncertain'", (note, message_id), durable=True)
        else:
            self._w("DELETE FROM ledger WHERE message_id = ? AND status = 'uncertain'", (message_id,), durable=True)
        return self.ledger_entry(message_id)

    # ----------------------------------------------------------- read state
    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        rows = self._q("SELECT uidvalidity, last_uid FROM read_checkpoints WHERE account = ? AND folder = ?",
                       (account, folder))
        return Checkpoint(account, folder, int(rows[0][0]), int(rows[0][1])) if rows else None

    def _fence(self, fence: Fence | None) -> tuple[str, tuple[Any, ...]]:
        if fence is None:
            return "1 = 1", ()
        return ("EXISTS (SELECT 1 FROM leases WHERE name = ? AND holder = ? AND token = ? {share})",
                (fence.name, fence.holder, fence.token))

    def _fenced(self, count: int, fence: Fence | None) -> None:
        if fence is not None and count == 0:
            raise lease_lost_error(fence.name)

    def record_delivered(self, account: str, folder: str, uidvalidity: int, uid: int, message_id: str | None,
                         action: str, fence: Fence | None) -> None:
        cond, args = self._fence(fence)
        count = self._w(
            "INSERT INTO read_delivered (account, folder, uidvalidity, uid, message_id, action, done, delivered_at) "
            f"SELECT ?, ?, ?, ?, ?, ?, ?, {{now}} WHERE {cond} "
            "ON CONFLICT (account, folder, uidvalidity, uid) DO UPDATE SET message_id = excluded.message_id, "
            "action = excluded.action, done = excluded.done, delivered_at = excluded.delivered_at",
            (account, folder, uidvalidity, uid, message_id, action, int(action == "keep_unread"), *args))
        self._fenced(count, fence)

    def actions_done(self, account: str, folder: str, uidvalidity: int, uids: list[int],
                     fence: Fence | None) -> None:
        cond, args = self._fence(fence)
        for start in range(0, len(uids), 500):
            chunk = uids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            count = self._w(f"UPDATE read_delivered SET done = 1 WHERE account = ? AND folder = ? AND uidvalidity = ? "
                            f"AND uid IN ({marks}) AND {cond}", (account, folder, uidvalidity, *chunk, *args))
            if fence is not None and count == 0 and not self.check_fence(fence):
                self._fenced(0, fence)

    def move_checkpoint(self, account: str, folder: str, uidvalidity: int, last_uid: int,
                        fence: Fence | None) -> None:
        cond, args = self._fence(fence)
        count = self._w(
            f"INSERT INTO read_checkpoints (account, folder, uidvalidity, last_uid, updated_at) "
            f"SELECT ?, ?, ?, ?, {{now}} WHERE {cond} ON CONFLICT (account, folder) DO UPDATE SET "
            "last_uid = CASE WHEN read_checkpoints.uidvalidity = excluded.uidvalidity "
            "THEN {greatest}(read_checkpoints.last_uid, excluded.last_uid) ELSE excluded.last_uid END, "
            "uidvalidity = excluded.uidvalidity, updated_at = excluded.updated_at",
            (account, folder, uidvalidity, last_uid, *args), durable=True)  # also makes the acks before it durable
        self._fenced(count, fence)

    def adopt_delivered(self, account: str, folder: str, uidvalidity: int, matches: list[tuple[int, str | None]],
                        fence: Fence | None) -> None:
        cond, args = self._fence(fence)
        sql = self.dialect.sql
        with self._transaction() as ex:
            rows, _ = ex(sql(f"SELECT 1 WHERE {cond}"), args)
            self._fenced(len(rows), fence)
            for uid, mid in matches:
                ex(sql("INSERT INTO read_delivered (account, folder, uidvalidity, uid, message_id, action, done, "
                       "delivered_at) VALUES (?, ?, ?, ?, ?, 'adopted', 1, {now}) "
                       "ON CONFLICT (account, folder, uidvalidity, uid) DO NOTHING"),
                   (account, folder, uidvalidity, uid, mid))
            ex(sql("INSERT INTO read_checkpoints (account, folder, uidvalidity, last_uid, updated_at) "
                   "VALUES (?, ?, ?, ?, {now}) ON CONFLICT (account, folder) DO UPDATE SET "
                   "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, "
                   "updated_at = excluded.updated_at"),
               (account, folder, uidvalidity, max((uid for uid, _ in matches), default=0)))

    def delivered(self, account: str, folder: str, uidvalidity: int) -> dict[int, Delivered]:
        rows = self._q("SELECT uid, message_id, action, done, delivered_at FROM read_delivered "
                       "WHERE account = ? AND folder = ? AND uidvalidity = ?", (account, folder, uidvalidity))
        return {int(r[0]): Delivered(int(r[0]), r[1], str(r[2]), bool(r[3]), float(r[4])) for r in rows}

    def delivered_message_ids(self, account: str, folder: str) -> set[str]:
        rows = self._q("SELECT message_id FROM read_delivered WHERE account = ? AND folder = ? "
                       "AND message_id IS NOT NULL", (account, folder))
        return {str(r[0]) for r in rows}

    def adopt_account(self, old_account: str, old_folder: str, account: str, folder: str) -> bool:
        """Move read state kept under another key (a first-release store's ``connection:NAME`` and the folder
        as then spelled) to ``account``/``folder``, unless that already has some."""
        sql = self.dialect.sql
        with self._transaction() as ex:
            rows, _ = ex(sql("SELECT 1 FROM read_checkpoints WHERE account = ? AND folder = ?"), (account, folder))
            if rows:
                return False
            _, moved = ex(sql("UPDATE read_checkpoints SET account = ?, folder = ? WHERE account = ? AND folder = ?"),
                          (account, folder, old_account, old_folder))
            ex(sql("UPDATE read_delivered SET account = ?, folder = ? WHERE account = ? AND folder = ?"),
               (account, folder, old_account, old_folder))
        return bool(moved)

    def read_states(self, account: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT c.account, c.folder, c.uidvalidity, c.last_uid, c.updated_at, "
               "(SELECT COUNT(*) FROM read_delivered d WHERE d.account = c.account AND d.folder = c.folder), "
               "(SELECT COUNT(*) FROM read_delivered d WHERE d.account = c.account AND d.folder = c.folder "
               "AND d.done = 0) FROM read_checkpoints c")
        args: tuple[Any, ...] = ()
        if account is not None:
            sql += " WHERE c.account = ?"
            args = (account,)
        rows = self._q(sql + " ORDER BY c.account, c.folder", args)
        return [{"account": r[0], "folder": r[1], "uidvalidity": int(r[2]), "last_uid": int(r[3]),
                 "updated_at": float(r[4]), "delivered": int(r[5]), "actions_pending": int(r[6])} for r in rows]

    def reset_read_state(self, account: str, folder: str) -> int:
        sql = self.dialect.sql
        with self._transaction() as ex:
            _, removed = ex(sql("DELETE FROM read_delivered WHERE account = ? AND folder = ?"), (account, folder))
            ex(sql("DELETE FROM read_checkpoints WHERE account = ? AND folder = ?"), (account, folder))
        return removed

    # --------------------------------------------------------------- leases
    def acquire_lease(self, name: str, *, ttl: float, holder: str) -> Fence | None:
        rows = self._q(
            "INSERT INTO leases (name, holder, token, expires_at, renewed_at) VALUES (?, ?, 1, {now} + ?, {now}) "
            "ON CONFLICT (name) DO UPDATE SET "
            "token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END, "
            "polled_at = CASE WHEN leases.holder = excluded.holder THEN leases.polled_at END, "
            "poll_due = CASE WHEN leases.holder = excluded.holder THEN leases.poll_due END, "
            "holder = excluded.holder, expires_at = excluded.expires_at, renewed_at = excluded.renewed_at, "
            "released_at = NULL "
            "WHERE leases.holder = excluded.holder OR leases.expires_at <= {now} RETURNING token",
            (name, holder, ttl))
        return Fence(name, holder, int(rows[0][0])) if rows else None

    def renew_lease(self, fence: Fence, *, ttl: float) -> bool:
        # Renewed even past its expiry as long as nobody took it meanwhile (the token would have grown).
        return bool(self._w("UPDATE leases SET expires_at = {now} + ?, renewed_at = {now} "
                            "WHERE name = ? AND holder = ? AND token = ?",
                            (ttl, fence.name, fence.holder, fence.token)))

    def release_lease(self, fence: Fence) -> None:
        # The row stays (expired) so that the next holder's token is still greater than this one's.
        self._w("UPDATE leases SET expires_at = {now} - 1, released_at = {now} "
                "WHERE name = ? AND holder = ? AND token = ?", (fence.name, fence.holder, fence.token))

    def drop_lease(self, fence: Fence) -> None:
        self._w("DELETE FROM leases WHERE name = ? AND holder = ? AND token = ?",
                (fence.name, fence.holder, fence.token))

    def mark_polled(self, fence: Fence, *, next_within: float) -> None:
        self._w("UPDATE leases SET polled_at = {now}, poll_due = {now} + ? WHERE name = ? AND holder = ? AND token = ?",
                (next_within, fence.name, fence.holder, fence.token))

    def check_fence(self, fence: Fence) -> bool:
        return bool(self._q("SELECT 1 FROM leases WHERE name = ? AND holder = ? AND token = ?",
                            (fence.name, fence.holder, fence.token)))

    def lease_info(self, name: str) -> LeaseInfo | None:
        rows = self._q(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE name = ? AND expires_at > {{now}}", (name,))
        return _lease(rows[0]) if rows else None

    def leases(self, *, ended_within: float = 0) -> list[LeaseInfo]:
        rows = self._q(f"SELECT {_LEASE_COLUMNS} FROM leases WHERE expires_at > {{now}} - ? ORDER BY name",
                       (max(0.0, ended_within),))
        return [_lease(r) for r in rows]

    # --------------------------------------------------------------- tokens
    def get_token(self, key: str) -> tuple[str, float] | None:
        rows = self._q("SELECT value, expires_at FROM tokens WHERE key = ?", (key,))
        return (str(rows[0][0]), float(rows[0][1])) if rows else None

    def put_token(self, key: str, value: str, expires_at: float) -> None:
        self._w("INSERT INTO tokens (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at", (key, value, expires_at))

    def delete_token(self, key: str) -> None:
        self._w("DELETE FROM tokens WHERE key = ?", (key,))

    # ------------------------------------------------------------- run log
    def start_run(self, operation: str, settings: dict[str, Any]) -> str:
        # A readable id (the second it started, then 24 random bits): unique enough for people, not for many
        # runs started in one second (watchers, workers), so a taken one is drawn again.
        for _ in range(10):
            run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            if self._w("INSERT INTO runs (run_id, operation, started_at, status, settings, holder) "
                       "VALUES (?, ?, {now}, 'running', ?, ?) ON CONFLICT (run_id) DO NOTHING",
                       (run_id, operation, json.dumps(settings, default=str), new_holder())):
                return run_id
        raise StateError("could not find a free run id in the operation log", hint="run again")

    def record_run_error(self, run_id: str, record: str | None, error: dict[str, Any]) -> None:
        self._w("INSERT INTO run_errors (run_id, record, error) VALUES (?, ?, ?)", (run_id, record, json.dumps(error)))

    def finish_run(self, run_id: str, *, status: str, read: int, written: int, failed: int,
                   skipped: int = 0, uncertain: int = 0, error: str | None = None) -> None:
        self._w("UPDATE runs SET ended_at = {now}, status = ?, records_read = ?, records_written = ?, "
                "records_failed = ?, records_skipped = ?, records_uncertain = ?, error = ? WHERE run_id = ?",
                (status, read, written, failed, skipped, uncertain, error, run_id))

    # ---------------------------------------------------------- send pace
    def reserve_send(self, name: str, interval: float) -> float:
        rows = self._q("INSERT INTO send_pace (name, next_at) VALUES (?, {now} + ?) ON CONFLICT (name) DO UPDATE "
                       "SET next_at = {greatest}(send_pace.next_at, {now}) + ? RETURNING next_at - {now}",
                       (name, interval, interval))
        return max(0.0, float(rows[0][0]) - interval)

    def slow_down(self, name: str, seconds: float) -> None:
        self._w("INSERT INTO send_pace (name, next_at) VALUES (?, {now} + ?) ON CONFLICT (name) DO UPDATE "
                "SET next_at = {greatest}(send_pace.next_at, excluded.next_at)", (name, seconds))

    def count_recipients(self, name: str, count: int, *, per_day: int) -> bool:
        if count > per_day:
            return False
        day = time.strftime("%Y-%m-%d", time.gmtime())
        return bool(self._w(
            "INSERT INTO send_pace (name, day, day_count) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET day_count = CASE WHEN send_pace.day = excluded.day THEN send_pace.day_count ELSE 0 END "
            "+ excluded.day_count, day = excluded.day "
            "WHERE send_pace.day <> excluded.day OR send_pace.day_count + excluded.day_count <= ?",
            (name, day, count, per_day), durable=True))

    # -------------------------------------------------- distributed runs
    def set_run_chunks(self, run_id: str, chunks: int, records: int) -> None:
        """The run is wholly queued: ``chunks`` chunks holding ``records`` records. From now on no single
        process holds it (the workers do); it ends when its last chunk is recorded (at once if none)."""
        sql = self.dialect.sql
        with self._transaction() as ex:
            ex(sql("UPDATE runs SET chunks = ?, records_submitted = ?, holder = NULL WHERE run_id = ?"),
               (chunks, records, run_id))
            self._end_if_complete(ex, run_id)

    def abort_run(self, run_id: str, error: str, *, chunks: int) -> None:
        """Submitting stopped half-way: the run is ``error`` (the chunks already queued still add their counts)."""
        self._w("UPDATE runs SET status = 'error', error = ?, ended_at = {now}, chunks = ?, holder = NULL "
                "WHERE run_id = ? AND status = 'running'", (error, chunks, run_id))

    def chunk_done(self, run_id: str, chunk: int) -> bool:
        return bool(self._q("SELECT 1 FROM run_chunks WHERE run_id = ? AND chunk = ?", (run_id, chunk)))

    def finish_chunk(self, run_id: str, chunk: int, *, status: str, read: int = 0, written: int = 0,
                     failed: int = 0, skipped: int = 0, uncertain: int = 0,
                     errors: Sequence[tuple[str | None, dict[str, Any]]] = (), error: str | None = None,
                     worker: str | None = None) -> bool:
        """Record one chunk's outcome, once: False when it was recorded already (a copy delivered twice)."""
        sql = self.dialect.sql
        with self._transaction() as ex:
            _, inserted = ex(sql(
                "INSERT INTO run_chunks (run_id, chunk, status, worker, records_read, records_written, "
                "records_failed, error, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {now}) "
                "ON CONFLICT (run_id, chunk) DO NOTHING"),
                (run_id, chunk, status, worker, read, written, failed, error))
            if not inserted:
                return False
            for label, data in errors:
                ex(sql("INSERT INTO run_errors (run_id, record, error) VALUES (?, ?, ?)"),
                   (run_id, label, json.dumps(data)))
            # The run's row is locked by this update until commit: two last chunks recorded at once on
            # PostgreSQL are serialised here, so the one that counts second sees the other's row.
            ex(sql("UPDATE runs SET records_read = records_read + ?, records_written = records_written + ?, "
                   "records_failed = records_failed + ?, records_skipped = records_skipped + ?, "
                   "records_uncertain = records_uncertain + ?, error = COALESCE(error, ?) WHERE run_id = ?"),
               (read, written, failed, skipped, uncertain, f"chunk {chunk}: {error}" if error else None, run_id))
            self._end_if_complete(ex, run_id)
        return True

    def _end_if_complete(self, ex: Exec, run_id: str) -> None:
        sql = self.dialect.sql
        rows = ex(sql("SELECT chunks, status, records_written, records_skipped, records_failed, records_uncertain "
                      "FROM runs WHERE run_id = ?"), (run_id,))[0]
        if not rows or rows[0][0] is None or rows[0][1] != "running":
            return
        chunks, _, written, skipped, failed, uncertain = rows[0]
        done, errored = ex(sql("SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0) "
                               "FROM run_chunks WHERE run_id = ?"), (run_id,))[0][0]
        if int(done) < int(chunks):
            return
        if errored:
            status = "error"
        elif failed or uncertain:
            status = "partial" if written or skipped else "failed"
        else:
            status = "success"
        ex(sql("UPDATE runs SET status = ?, ended_at = {now} WHERE run_id = ?"), (status, run_id))

    def list_runs(self, *, limit: int = 50, operation: str | None = None, status: str | None = None,
                  since: float | None = None) -> list[dict[str, Any]]:
        conditions: list[str] = []
        args: list[Any] = []
        if operation:
            conditions.append("operation = ?")
            args.append(operation)
        if status in ("running", "interrupted"):  # a running row whose process died reads as interrupted
            conditions.append("status IN ('running', 'interrupted')")
        elif status:
            conditions.append("status = ?")
            args.append(status)
        if since is not None:
            conditions.append("started_at >= ?")
            args.append(since)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        if status not in ("running", "interrupted"):
            rows = self._q(f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY started_at DESC LIMIT ?", (*args, limit))
            return [_run_row(r) for r in rows]
        rows = self._q(f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY started_at DESC", args)
        return [run for run in map(_run_row, rows) if run["status"] == status][:limit]

    def run_totals(self) -> list[dict[str, Any]]:
        finished = self._q("SELECT operation, status, COUNT(*), SUM(records_read), SUM(records_written), "
                           "SUM(records_skipped), SUM(records_uncertain), SUM(records_failed) FROM runs "
                           "WHERE status <> 'running' GROUP BY operation, status ORDER BY operation, status")
        totals: dict[tuple[str, str], list[int]] = {
            (str(r[0]), str(r[1])): [int(v or 0) for v in r[2:]] for r in finished}
        for row in self._q(f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'running'"):
            run = _run_row(row)  # running, or interrupted when its process has died
            totals.setdefault((run["operation"], run["status"]), [0] * 6)[0] += 1
        return [{"operation": op, "status": st, "runs": v[0], "records_read": v[1], "records_written": v[2],
                 "records_skipped": v[3], "records_uncertain": v[4], "records_failed": v[5]}
                for (op, st), v in sorted(totals.items())]

    def get_run(self, run_id: str, *, errors: bool = True) -> dict[str, Any] | None:
        rows = self._q(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        run = _run_row(rows[0])
        if run["chunks"] is not None or run["records_submitted"] is not None:
            run["chunks_done"] = int(self._q("SELECT COUNT(*) FROM run_chunks WHERE run_id = ?", (run_id,))[0][0])
        if not errors:
            return run
        errs = self._q("SELECT record, error FROM run_errors WHERE run_id = ? ORDER BY id", (run_id,))
        run["errors"] = [{"record": r, "error": json.loads(e)} for r, e in errs]
        return run

    def delete_run(self, run_id: str) -> None:
        sql = self.dialect.sql
        with self._transaction() as ex:
            ex(sql("DELETE FROM run_errors WHERE run_id = ?"), (run_id,))
            ex(sql("DELETE FROM run_chunks WHERE run_id = ?"), (run_id,))
            ex(sql("DELETE FROM runs WHERE run_id = ?"), (run_id,))

    def prune_runs(self, *, max_age_days: float | None = None, max_count: int | None = None) -> int:
        conditions: list[str] = []
        args: list[Any] = []
        if max_age_days is not None:
            conditions.append("started_at < {now} - ?")
            args.append(max_age_days * 86400)
        if max_count is not None:
            conditions.append("run_id NOT IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT ?)")
            args.append(max_count)
        if not conditions:
            return 0
        where = " OR ".join(conditions)
        sql = self.dialect.sql
        with self._transaction() as ex:
            ex(sql(f"DELETE FROM run_errors WHERE run_id IN (SELECT run_id FROM runs WHERE {where})"), args)
            ex(sql(f"DELETE FROM run_chunks WHERE run_id IN (SELECT run_id FROM runs WHERE {where})"), args)
            _, removed = ex(sql(f"DELETE FROM runs WHERE {where}"), args)
        return removed


_LEDGER_COLUMNS = "message_id, connection, status, holder, claimed_at, settled_at, recipients, accepted, note"
_RUN_COLUMNS = ("run_id, operation, started_at, ended_at, status, records_read, records_written, records_skipped, "
                "records_uncertain, records_failed, settings, error, holder, chunks, records_submitted")


def _ledger_entry(row: tuple[Any, ...]) -> LedgerEntry:
    return LedgerEntry(message_id=row[0], connection=row[1], status=row[2], holder=row[3],
                       claimed_at=float(row[4]), settled_at=None if row[5] is None else float(row[5]),
                       recipients=json.loads(row[6] or "[]"), accepted=json.loads(row[7] or "[]"), note=row[8])


_LEASE_COLUMNS = "name, holder, token, expires_at - {now}, renewed_at, polled_at, poll_due, released_at"


def _lease(row: tuple[Any, ...]) -> LeaseInfo:
    def opt(v: Any) -> float | None:
        return None if v is None else float(v)

    return LeaseInfo(name=row[0], holder=row[1], token=int(row[2]), expires_in=float(row[3]),
                     renewed_at=float(row[4]), polled_at=opt(row[5]), poll_due=opt(row[6]), released_at=opt(row[7]))


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    run = dict(zip(_RUN_COLUMNS.split(", "), row, strict=True))
    holder = run.pop("holder")
    if run["status"] == "running" and holder and gone_from_this_host(holder):
        # Its process ended (killed) before it could say how the run went: the run will never finish.
        run["status"] = "interrupted"
        run["error"] = run["error"] or "the process running it ended before the run finished (killed?)"
    run["settings"] = json.loads(run.get("settings") or "{}")
    for key in ("started_at", "ended_at"):
        if run.get(key) is not None:
            run[key] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(float(run[key])))
    for key in ("records_read", "records_written", "records_skipped", "records_uncertain", "records_failed"):
        run[key] = int(run[key])
    for key in ("chunks", "records_submitted"):  # None: a run in one process
        run[key] = None if run[key] is None else int(run[key])
    return run
