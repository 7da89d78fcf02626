"""``ledger``: the send ledger's entries, and settling the ``uncertain`` ones (by hand or from the server)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated

import typer

from ..errors import ConfigError, StateError
from ._common import Session, emit_json, out_console, with_session

__all__ = ["ledger_app"]

ledger_app = typer.Typer(
    name="ledger", no_args_is_help=True, rich_markup_mode="rich",
    help="The send ledger: every Message-ID sent, being sent, or uncertain (it may have been delivered: a "
    "connection lost after the final dot, or a sender killed while sending). An uncertain message is never "
    "sent again until it is resolved here.")

STATUSES = ("claimed", "sent", "partial", "uncertain")


@ledger_app.command("list")
@with_session(json=True, verbose=False, log_format=False)
def list_cmd(
    s: Session,
    status: Annotated[str | None, typer.Option(help="Only entries in this status: claimed, sent, partial or "
                                                    "uncertain.")] = None,
    search: Annotated[str | None, typer.Option(help="Only Message-IDs or recipients containing this text.")] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.", min=1)] = 100,
) -> None:
    """List the send ledger's entries, newest first.

    A claim whose sender has died is shown as uncertain (and recorded so).

    Examples:
      mailconnector ledger list --status uncertain
      mailconnector ledger list --search bob@example.test --json
    """
    from ..state import holder_alive

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}", param_hint="--status")
    store = s.project.store()
    for entry in store.ledger_entries(status="claimed", limit=10000):
        if entry.holder and not holder_alive(store, entry.holder):
            store.abandon(entry.message_id, holder=entry.holder)
    entries = store.ledger_entries(status=status, search=search, limit=limit)
    if s.json:
        emit_json([asdict(e) for e in entries])
        return
    from rich.table import Table

    table = Table(title="Send ledger", title_justify="left")
    for col in ("message id", "status", "connection", "claimed", "recipients", "note"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.message_id, e.status, e.connection, _when(e.claimed_at), ", ".join(e.recipients),
                      e.note or "")
    out_console.print(table)
    if not entries:
        out_console.print("no entries" + (f" with status {status}" if status else ""))


@ledger_app.command("resolve")
@with_session(json=True, verbose=False, log_format=False)
def resolve_cmd(
    s: Session,
    message_id: Annotated[str, typer.Argument(help="The uncertain message's Message-ID (angle brackets optional).")],
    sent: Annotated[bool, typer.Option("--sent", help="It was delivered: never send it again.")] = False,
    not_sent: Annotated[bool, typer.Option("--not-sent", help="It was not delivered: the next run sends it.")] = False,
) -> None:
    """Say what happened to an uncertain send, after checking the recipient's mailbox.

    Examples:
      mailconnector ledger resolve '<3f2a...@example.test>' --sent
      mailconnector ledger resolve 3f2a...@example.test --not-sent
    """
    if sent == not_sent:
        raise typer.BadParameter("give exactly one of --sent or --not-sent", param_hint="--sent/--not-sent")
    store = s.project.store()
    mid = message_id.strip()
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    from ..state import holder_alive

    before = store.ledger_entry(mid)
    if before is not None and before.status == "claimed" and before.holder \
            and not holder_alive(store, before.holder):
        store.abandon(mid, holder=before.holder)  # its sender died holding it: uncertain, so resolvable
        before = store.ledger_entry(mid)
    if before is None:
        raise StateError(f"{mid} is not in the send ledger", hint="list it with: mailconnector ledger list --search "
                         "TEXT")
    if before.status != "uncertain":
        raise StateError(f"{mid} is {before.status}, not uncertain: only an uncertain send can be resolved",
                         hint="a claimed message is being sent right now by a live sender; a sent one needs no "
                         "resolving")
    after = store.resolve(mid, sent=sent, note="resolved by hand: " + ("sent" if sent else "not sent"))
    result = {"message_id": mid, "status": after.status if after else "not_sent"}
    if s.json:
        emit_json(result)
    else:
        out_console.print(f"{mid}: " + ("recorded as sent; it is never sent again" if sent
                                          else "forgotten; the next run sends it"))


@ledger_app.command("reconcile")
@with_session(json=True)
def reconcile_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="The connection whose uncertain sends to look up.")],
) -> None:
    """Look up each uncertain send in the Sent folder where the server files submitted mail itself
    (Microsoft 365, Gmail; `server_files_sent: true` on the connection for others), and resolve the ones
    found as sent. Those not found stay uncertain: nothing is guessed.

    Example: mailconnector ledger reconcile office
    """
    from ..activities.reconcile import reconcile

    conn = s.project.connection(connection)
    if conn.imap is None:
        raise ConfigError(f"connection {connection!r} has no imap settings: its Sent folder cannot be searched",
                          field=f"connections.{connection}.imap")
    results = reconcile(conn, s.project.store())
    found = [r for r in results if r.found]
    if s.json:
        emit_json({"checked": len(results), "resolved_sent": [r.entry.message_id for r in found],
                   "still_uncertain": [r.entry.message_id for r in results if not r.found]})
        return
    if not results:
        out_console.print(f"no uncertain sends for connection {connection}")
        return
    for r in results:
        out_console.print(f"{r.entry.message_id}: " + (f"found in {r.folder}: resolved as sent" if r.found
                                                        else f"not in {r.folder}: still uncertain"))
    out_console.print(f"{len(found)} of {len(results)} resolved")


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
