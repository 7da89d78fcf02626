"""Resolving uncertain sends from the server's own record: where the server files every submitted message
into a Sent folder (Microsoft 365, Gmail), a message found there by its Message-ID was sent. Nothing is
guessed: a message not found stays ``uncertain`` (it may have been refused later, or be filed late), and a
server that files nothing is not asked at all."""

from __future__ import annotations

from dataclasses import dataclass

from ..connection import Connection
from ..errors import ConfigError
from ..imap import ImapSession
from ..state import LedgerEntry, StateStore

__all__ = ["Reconciled", "find_sent_folder", "reconcile"]


@dataclass(frozen=True)
class Reconciled:
    entry: LedgerEntry
    found: bool
    folder: str


def reconcile(connection: Connection, store: StateStore, *, limit: int = 10000) -> list[Reconciled]:
    """Look up each ``uncertain`` send of ``connection`` in its Sent folder; resolve the ones found."""
    if not connection.files_sent_mail:
        raise ConfigError(
            f"connection {connection.name!r}: its server is not known to file sent mail into a folder by itself, "
            "so a message missing there proves nothing", field="server_files_sent",
            hint="check the recipients' mailboxes and resolve each send by hand; set server_files_sent: true on "
            "the connection if its server does file sent mail")
    uncertain = [e for e in store.ledger_entries(status="uncertain", limit=limit) if e.connection == connection.name]
    if not uncertain:
        return []
    results: list[Reconciled] = []
    with ImapSession(connection) as session:
        folder = connection.sent_folder or find_sent_folder(session)
        session.select(folder, readonly=True)
        for entry in uncertain:
            found = bool(session.search(["HEADER", "Message-ID", entry.message_id]))
            if found:
                store.resolve(entry.message_id, sent=True, note=f"found in {folder} by ledger reconcile")
            results.append(Reconciled(entry, found, folder))
    return results


def find_sent_folder(session: ImapSession) -> str:
    for info in session.list_folders():
        if info.special_use == "\\Sent":
            return info.name
    raise ConfigError("the server marks no folder as \\Sent", field="sent_folder",
                      hint="name it with sent_folder: on the connection")
