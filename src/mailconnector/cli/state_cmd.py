"""``state``: what the state store remembers of each folder read, and forgetting it on purpose."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError, LeaseBusyError
from ._common import Session, emit_json, err_console, out_console, with_session

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["state_app"]

state_app = typer.Typer(
    name="state", no_args_is_help=True, rich_markup_mode="rich",
    help="The read state: for each mailbox folder read, the emails already delivered (never delivered "
    "again, even when kept unread), the checkpoint, and the after-read actions still to apply.")


def _account(conn: Connection) -> str:
    from ..state import account_key

    if conn.imap is None:
        raise ConfigError(f"connection {conn.name!r} has no imap settings: it reads no folder",
                          hint="the read state belongs to connections with imap settings")
    return account_key(conn.imap.host, conn.imap.port, conn.auth.username)


@state_app.command("show")
@with_session(json=True, verbose=False, log_format=False)
def show_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    folder: Annotated[str | None, typer.Option(help="Only this folder.")] = None,
) -> None:
    """Show what the store remembers of the folders this connection's mailbox was read from.

    Examples:
      mailconnector state show sandbox
      mailconnector state show sandbox --folder INBOX --json
    """
    from ..state import normalize_folder

    account = _account(s.project.connection(connection))
    store = s.project.store()
    wanted = normalize_folder(folder) if folder is not None else None
    states: list[dict[str, Any]] = [r for r in store.read_states(account) if wanted is None or r["folder"] == wanted]
    for row in states:
        lease = store.lease_info(f"read:{account}/{row['folder']}")
        row["updated_at"] = _when(row["updated_at"])
        row["held_by"] = lease.holder if lease is not None else None
    if s.json:
        emit_json(states)
        return
    if not states:
        where = f"folder {folder}" if folder is not None else "any folder"
        err_console.print(f"nothing remembered for {where} of {account}: no run has read it with this store")
        return
    from rich.table import Table

    table = Table(title=f"Read state of {account}", title_justify="left")
    for col in ("folder", "uidvalidity", "last uid", "delivered", "actions pending", "updated", "being read by"):
        table.add_column(col, no_wrap=col in ("folder", "being read by"))
    for r in states:
        table.add_row(r["folder"], str(r["uidvalidity"]), str(r["last_uid"]), str(r["delivered"]),
                      str(r["actions_pending"]), r["updated_at"], r["held_by"] or "")
    out_console.print(table)


@state_app.command("reset")
@with_session(json=True, verbose=False, log_format=False)
def reset_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    folder: Annotated[str, typer.Option(help="The folder whose read state to forget.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")] = False,
) -> None:
    """Forget which emails of a folder were delivered: the next read delivers every email that matches
    its search again (unread ones, by default), and pending after-read actions are dropped.

    Refused while a run is reading the folder.

    Examples:
      mailconnector state reset sandbox --folder INBOX
      mailconnector state reset sandbox --folder Orders --yes
    """
    from ..state import lease_busy_error, normalize_folder

    account = _account(s.project.connection(connection))
    name = normalize_folder(folder)
    store = s.project.store()
    known = [r for r in store.read_states(account) if r["folder"] == name]
    if not known:  # nothing to forget: done (a script may reset before every run)
        if s.json:
            emit_json({"account": account, "folder": name, "forgotten": 0})
        else:
            err_console.print(f"nothing remembered for {name} of {account}: nothing to forget")
        return
    if not yes:
        if not _interactive():
            raise typer.BadParameter("confirm with --yes when not run from a terminal", param_hint="--yes")
        typer.confirm(f"Forget the {known[0]['delivered']} delivered email(s) of {name} ({account})? The next "
                      "read delivers them again if they still match", abort=True, err=True)
    from ..state import LeaseKeeper

    keeper = LeaseKeeper(store, f"read:{account}/{name}", s.project.settings.lease_seconds)
    if not keeper.take():  # a consumer is at work: resetting under it would make it deliver twice
        error = lease_busy_error(store, keeper.name)
        raise LeaseBusyError(error.message, hint="stop the run reading it first, then reset")
    try:
        removed = store.reset_read_state(account, name)
    finally:
        keeper.stop()
    if s.json:
        emit_json({"account": account, "folder": name, "forgotten": removed})
    else:
        err_console.print(f"forgot {removed} delivered email(s) of {name} ({account})")


def _interactive() -> bool:
    import sys

    return sys.stdin.isatty()


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
