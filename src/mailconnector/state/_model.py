"""What the store keeps, as small Protocols (one per role) and the values they exchange.

The activities, operations and OAuth2 receive these roles instead of a concrete database, so a SQLite file
on one machine and a PostgreSQL server shared by many pass the same conformance suite and are swapped by a
setting (``settings.state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# No __all__: a private module; the package (state/__init__.py) lists what it offers, once.

# claimed: a sender holds the Message-ID and may be writing its final dot right now.
LedgerStatus = Literal["claimed", "sent", "partial", "uncertain"]


def normalize_folder(folder: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); every other name is kept as the server spells it."""
    return "INBOX" if folder.upper() == "INBOX" else folder


def account_key(host: str, port: int, username: str) -> str:
    """The mailbox a connection reaches: read state and leases are keyed by it, not by the connection's
    name, so renaming a connection neither re-reads a folder nor lets two consumers share it."""
    return f"{host.strip().lower().rstrip('.')}:{port}/{username}"


@dataclass(frozen=True)
class Checkpoint:
    account: str
    folder: str
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class Delivered:
    """A message handed downstream: the after-read action asked for then, and whether it reached the server."""

    uid: int
    message_id: str | None
    action: str
    done: bool
    delivered_at: float | None = None  # seconds since the epoch


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: granted, or who holds the Message-ID and in which state."""

    granted: bool
    status: LedgerStatus | None = None
    holder: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    message_id: str
    connection: str
    status: LedgerStatus
    holder: str | None
    claimed_at: float
    settled_at: float | None
    recipients: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True)
class Fence:
    """A lease as its holder proves it: a write checked against it is refused once another holder took the
    lease (the token only grows), so a paused or partitioned consumer cannot acknowledge anything."""

    name: str
    holder: str
    token: int


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    holder: str
    token: int
    expires_in: float  # seconds, by the store's clock; negative once it ended
    renewed_at: float  # the holder's last heartbeat
    polled_at: float | None = None  # a watcher's last look for new mail
    poll_due: float | None = None  # when it said it would look again
    released_at: float | None = None  # given back on purpose (not expired: its holder stopped cleanly)


class SendLedger(Protocol):
    def claim(self, message_id: str, *, connection: str, holder: str, recipients: list[str]) -> Claim:
        """Atomically take ``message_id`` for ``holder`` (durable before it returns)."""

    def settle(self, message_id: str, *, holder: str, status: LedgerStatus, accepted: list[str],
               note: str | None = None) -> None:
        """Record the outcome of a claim: ``sent``, ``partial`` or ``uncertain``."""

    def release(self, message_id: str, *, holder: str) -> None:
        """Nothing was accepted: forget the claim, so that a rerun sends the message."""

    def abandon(self, message_id: str, *, holder: str) -> bool:
        """A claim whose holder died: mark it ``uncertain`` (True when this call changed it)."""

    def ledger_entry(self, message_id: str) -> LedgerEntry | None: ...

    def ledger_entries(self, *, status: str | None = None, search: str | None = None,
                       limit: int = 100) -> list[LedgerEntry]: ...

    def resolve(self, message_id: str, *, sent: bool, note: str) -> LedgerEntry | None:
        """A person (or a reconciliation) says what happened to an ``uncertain`` message: ``sent=False``
        removes the entry so the next run sends it."""


class ReadState(Protocol):
    def checkpoint(self, account: str, folder: str) -> Checkpoint | None: ...

    def record_delivered(self, account: str, folder: str, uidvalidity: int, uid: int, message_id: str | None,
                         action: str, fence: Fence | None) -> None: ...

    def actions_done(self, account: str, folder: str, uidvalidity: int, uids: list[int],
                     fence: Fence | None) -> None: ...

    def move_checkpoint(self, account: str, folder: str, uidvalidity: int, last_uid: int,
                        fence: Fence | None) -> None: ...

    def adopt_delivered(self, account: str, folder: str, uidvalidity: int, matches: list[tuple[int, str | None]],
                        fence: Fence | None) -> None: ...

    def delivered(self, account: str, folder: str, uidvalidity: int) -> dict[int, Delivered]: ...

    def delivered_message_ids(self, account: str, folder: str) -> set[str]: ...

    def adopt_account(self, old_account: str, old_folder: str, account: str, folder: str) -> bool: ...

    def read_states(self, account: str | None = None) -> list[dict[str, Any]]: ...

    def reset_read_state(self, account: str, folder: str) -> int: ...


class Leases(Protocol):
    def acquire_lease(self, name: str, *, ttl: float, holder: str) -> Fence | None:
        """Take the lease, or renew it when ``holder`` has it; None while another live holder does."""

    def renew_lease(self, fence: Fence, *, ttl: float) -> bool: ...

    def release_lease(self, fence: Fence) -> None: ...

    def drop_lease(self, fence: Fence) -> None:
        """Remove a lease for good (its next holder's token starts again)."""

    def check_fence(self, fence: Fence) -> bool: ...

    def lease_info(self, name: str) -> LeaseInfo | None: ...

    def leases(self, *, ended_within: float = 0) -> list[LeaseInfo]:
        """The live leases, and those that ended (released or expired) less than ``ended_within`` seconds ago."""

    def mark_polled(self, fence: Fence, *, next_within: float) -> None:
        """The holder looked for work now and will again within ``next_within`` seconds."""


class TokenCache(Protocol):
    def get_token(self, key: str) -> tuple[str, float] | None: ...

    def put_token(self, key: str, value: str, expires_at: float) -> None: ...

    def delete_token(self, key: str) -> None: ...


class RunLog(Protocol):
    def start_run(self, operation: str, settings: dict[str, Any]) -> str: ...

    def record_run_error(self, run_id: str, record: str | None, error: dict[str, Any]) -> None: ...

    def finish_run(self, run_id: str, *, status: str, read: int, written: int, failed: int,
                   skipped: int = 0, uncertain: int = 0,
                   error: str | None = None) -> None: ...

    def list_runs(self, *, limit: int = 50, operation: str | None = None, status: str | None = None,
                  since: float | None = None) -> list[dict[str, Any]]:
        """Newest first; ``since``: started at or after these seconds since the epoch."""

    def run_totals(self) -> list[dict[str, Any]]:
        """Per operation and status: the runs in the log and their records, summed (for metrics)."""

    def get_run(self, run_id: str, *, errors: bool = True) -> dict[str, Any] | None:
        """The run with its record errors (``errors=False``: without them, for a progress display)."""

    def set_run_chunks(self, run_id: str, chunks: int, records: int) -> None:
        """A distributed run is wholly queued: it ends when its ``chunks`` chunks are recorded."""

    def abort_run(self, run_id: str, error: str, *, chunks: int) -> None: ...

    def chunk_done(self, run_id: str, chunk: int) -> bool: ...

    def finish_chunk(self, run_id: str, chunk: int, *, status: str, read: int = 0, written: int = 0,
                     failed: int = 0, skipped: int = 0, uncertain: int = 0,
                     errors: Sequence[tuple[str | None, dict[str, Any]]] = (), error: str | None = None,
                     worker: str | None = None) -> bool:
        """Record a chunk's outcome once (False: it was already); the last one ends the run."""

    def delete_run(self, run_id: str) -> None: ...

    def prune_runs(self, *, max_age_days: float | None = None, max_count: int | None = None) -> int: ...


class SendPace(Protocol):
    """How fast an account may send, shared by every process that sends as it (one row per name)."""

    def reserve_send(self, name: str, interval: float) -> float:
        """Take the next slot, ``interval`` seconds after the one before it: the seconds to wait for it."""

    def slow_down(self, name: str, seconds: float) -> None:
        """No slot before ``seconds`` from now (the server asked to slow down)."""

    def count_recipients(self, name: str, count: int, *, per_day: int) -> bool:
        """Count ``count`` more recipients for today (UTC); False, counting nothing, past ``per_day``."""


class StateStore(SendLedger, ReadState, Leases, TokenCache, RunLog, SendPace, Protocol):
    """Every role in one object: what ``Store(...)`` opens."""

    @property
    def location(self) -> str:
        """Where the store is, with any password hidden (for messages)."""

    def close(self) -> None: ...
