"""The state store: send ledger, read state, leases, OAuth2 token cache and operation logs.

``Store(target)`` opens a SQLite file (the default, embedded) or a PostgreSQL database
(``postgresql://user:pass@host:port/db``, shared by processes on many machines); both keep the same
promises and pass the same conformance suite. The roles are Protocols (``SendLedger``, ``ReadState``,
``Leases``, ``TokenCache``, ``RunLog``) so the activities take only what they use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import StateError
from ._leases import LeaseKeeper, SenderIdentity, holder_alive, lease_busy_error, lease_lost_error
from ._model import (
    Checkpoint,
    Claim,
    Delivered,
    Fence,
    LeaseInfo,
    Leases,
    LedgerEntry,
    LedgerStatus,
    ReadState,
    RunLog,
    SendLedger,
    SendPace,
    StateStore,
    TokenCache,
    account_key,
    normalize_folder,
)

__all__ = [
    "STATE_ENV",
    "Checkpoint",
    "Claim",
    "Delivered",
    "Fence",
    "LeaseInfo",
    "LeaseKeeper",
    "Leases",
    "LedgerEntry",
    "LedgerStatus",
    "ReadState",
    "RunLog",
    "SendLedger",
    "SendPace",
    "SenderIdentity",
    "StateStore",
    "Store",
    "TokenCache",
    "account_key",
    "holder_alive",
    "lease_busy_error",
    "lease_lost_error",
    "normalize_folder",
]

STATE_ENV = "MAILCONNECTOR_STATE"


def Store(target: str | os.PathLike[str]) -> StateStore:
    """Open (creating or upgrading as needed) the store at ``target``: a SQLite path, or a
    ``postgresql://`` / ``postgres://`` URL."""
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return PostgresStore(text)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() != "sqlite":
        raise StateError(f"state store {text.split('@')[-1]!r}: unknown scheme {scheme.group(1)!r}",
                         hint="give a SQLite file path, or a postgresql://user:password@host:port/database URL")
    if text.startswith("sqlite://"):
        text = text[len("sqlite://"):]
    from ._sqlite import SqliteStore

    return SqliteStore(Path(text).expanduser())
