"""The store's tables, as numbered migrations: a store records which it has, and a release refuses a store
written by a newer one instead of misreading it.

Version 1 is the layout of the first release (SQLite only, keyed by connection name); version 2 the
shared store's; version 3 keeps a run's skipped and uncertain records apart from the written ones and names
the process that runs it (so that a run its process left behind shows as interrupted); version 4 notes a
watcher's polls and releases; version 5 records the chunks of distributed runs and the sending pace.
SQL here is written once for both dialects: ``{serial}`` and ``{real}`` are filled per dialect.
"""

from __future__ import annotations

__all__ = ["LATEST", "MIGRATIONS", "V1_UPGRADE"]

_V2 = """
CREATE TABLE IF NOT EXISTS ledger (
    message_id TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    status TEXT NOT NULL,
    holder TEXT,
    claimed_at {real} NOT NULL,
    settled_at {real},
    recipients TEXT NOT NULL DEFAULT '[]',
    accepted TEXT NOT NULL DEFAULT '[]',
    note TEXT
);
CREATE INDEX IF NOT EXISTS ledger_status ON ledger (status, claimed_at);
CREATE TABLE IF NOT EXISTS read_checkpoints (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL,
    updated_at {real} NOT NULL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE IF NOT EXISTS read_delivered (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    message_id TEXT,
    action TEXT NOT NULL,
    done INTEGER NOT NULL,
    delivered_at {real} NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS read_delivered_mid ON read_delivered (account, folder, message_id);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at {real} NOT NULL,
    renewed_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    started_at {real} NOT NULL,
    ended_at {real},
    status TEXT NOT NULL,
    records_read BIGINT NOT NULL DEFAULT 0,
    records_written BIGINT NOT NULL DEFAULT 0,
    records_failed BIGINT NOT NULL DEFAULT 0,
    settings TEXT NOT NULL DEFAULT '{{}}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS run_errors (
    id {serial},
    run_id TEXT NOT NULL,
    record TEXT,
    error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_errors_run ON run_errors (run_id, id)
"""

_V3 = """
ALTER TABLE runs ADD COLUMN records_skipped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN records_uncertain BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN holder TEXT
"""

# What the console's health page needs: a watcher's polls beside its heartbeats, and a clean stop told apart
# from a holder that went silent.
_V4 = """
ALTER TABLE leases ADD COLUMN polled_at {real};
ALTER TABLE leases ADD COLUMN poll_due {real};
ALTER TABLE leases ADD COLUMN released_at {real}
"""

# Distributed runs: a run cut into chunks that workers finish in any order, each recorded once (a chunk
# delivered twice by the broker is counted once), the run ended by whichever records the last one; and the
# sending pace of each account, shared by every process that sends as it (rate limits, a day's recipients).
_V5 = """
ALTER TABLE runs ADD COLUMN chunks BIGINT;
ALTER TABLE runs ADD COLUMN records_submitted BIGINT;
CREATE TABLE IF NOT EXISTS run_chunks (
    run_id TEXT NOT NULL,
    chunk BIGINT NOT NULL,
    status TEXT NOT NULL,
    worker TEXT,
    records_read BIGINT NOT NULL DEFAULT 0,
    records_written BIGINT NOT NULL DEFAULT 0,
    records_failed BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    finished_at {real} NOT NULL,
    PRIMARY KEY (run_id, chunk)
);
CREATE TABLE IF NOT EXISTS send_pace (
    name TEXT PRIMARY KEY,
    next_at {real} NOT NULL DEFAULT 0,
    day TEXT NOT NULL DEFAULT '',
    day_count BIGINT NOT NULL DEFAULT 0
)
"""

# Read Email records every delivered message, one write per message: in SQLite the table is now its primary key
# (WITHOUT ROWID), and the index by Message-ID goes (the one query by Message-ID reads a whole folder, which the
# key's prefix serves): a delivery writes one B-tree page instead of three.
_V6 = """
CREATE TABLE read_delivered_v6 (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    message_id TEXT,
    action TEXT NOT NULL,
    done INTEGER NOT NULL,
    delivered_at {real} NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
){clustered};
INSERT INTO read_delivered_v6 (account, folder, uidvalidity, uid, message_id, action, done, delivered_at)
    SELECT account, folder, uidvalidity, uid, message_id, action, done, delivered_at FROM read_delivered;
DROP TABLE read_delivered;
ALTER TABLE read_delivered_v6 RENAME TO read_delivered
"""

MIGRATIONS: dict[int, str] = {2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}
LATEST = max(MIGRATIONS)

# A first-release SQLite file (tables but no schema_migrations): its tables are renamed out of the way, the
# current layout is created, and what it knew is copied over. Its read state was keyed by connection name:
# it is kept under the account "connection:NAME", and a reader adopts it on first use.
V1_UPGRADE = """
ALTER TABLE send_ledger RENAME TO v1_send_ledger;
ALTER TABLE checkpoints RENAME TO v1_checkpoints;
ALTER TABLE delivered RENAME TO v1_delivered;
ALTER TABLE leases RENAME TO v1_leases;
ALTER TABLE tokens RENAME TO v1_tokens;
ALTER TABLE runs RENAME TO v1_runs;
ALTER TABLE run_errors RENAME TO v1_run_errors;
{v2};
INSERT INTO ledger (message_id, connection, status, holder, claimed_at, settled_at, accepted)
    SELECT message_id, connection, status, NULL, sent_at, sent_at, accepted FROM v1_send_ledger;
INSERT INTO read_checkpoints SELECT 'connection:' || connection, folder, uidvalidity, last_uid, updated_at
    FROM v1_checkpoints;
INSERT INTO read_delivered SELECT 'connection:' || connection, folder, uidvalidity, uid, message_id, 'legacy', 1,
    delivered_at FROM v1_delivered;
INSERT INTO tokens SELECT key, value, expires_at FROM v1_tokens;
INSERT INTO runs SELECT * FROM v1_runs;
INSERT INTO run_errors (run_id, record, error) SELECT run_id, record, error FROM v1_run_errors ORDER BY run_id, seq;
DROP TABLE v1_send_ledger;
DROP TABLE v1_checkpoints;
DROP TABLE v1_delivered;
DROP TABLE v1_leases;
DROP TABLE v1_tokens;
DROP TABLE v1_runs;
DROP TABLE v1_run_errors
"""
