"""``mailconnector test`` and ``mailconnector folders``: look at a connection (and create folders) without
moving any mail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._common import Session, emit_json, out_console, with_session
from ._exit_codes import exit_code_of_test

if TYPE_CHECKING:
    from ..imap import ImapSession

_STATUS = {"passed": "[green]passed[/]", "failed": "[bold red]FAILED[/]", "skipped": "[dim]skipped[/]"}


@with_session(json=True)
def test_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    folder: Annotated[str, typer.Option(help="IMAP folder the Test selects.")] = "INBOX",
) -> None:
    """Test a connection step by step: DNS, TCP, TLS, STARTTLS, capabilities, login, folder / sender.

    Nothing is sent: the SMTP check is MAIL FROM followed by RSET. Exit 0 only when every step passed;
    otherwise the exit code of the first failure (3 configuration, 4 authentication, 5 connection/TLS,
    6 server refused).

    Example: mailconnector test sandbox --json
    """
    from ..diagnostics import diagnose  # imported on use: keeps the CLI quick to start

    conn = s.project.connection(connection)
    report = diagnose(conn, folder=folder)
    if s.json:
        emit_json(report.to_dict())
        raise typer.Exit(exit_code_of_test(report))
    from rich.table import Table

    table = Table(title=f"Connection Test: {connection}", title_justify="left")
    for col in ("server", "step", "result", "ms", "detail"):
        table.add_column(col, justify="right" if col == "ms" else "left", overflow="fold")
    for st in report.steps:
        detail = st.error if st.status == "failed" and st.error else st.detail
        table.add_row(st.server.upper(), st.name, _STATUS[st.status], f"{st.ms:.0f}" if st.ms else "",
                      _esc(detail or ""))
    out_console.print(table)
    failure = report.first_failure()
    if failure is not None:
        out_console.print(f"[bold red]{failure.server.upper()} {failure.name} failed[/]: {_esc(failure.error or '')}")
        if failure.hint:
            out_console.print(f"[yellow]hint[/]: {_esc(failure.hint)}")
    else:
        out_console.print("[green]every step passed[/]")
    raise typer.Exit(exit_code_of_test(report))


@with_session(json=True)
def folders_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    counts: Annotated[bool, typer.Option(help="Also count messages and unread messages (STATUS).")] = True,
    create: Annotated[list[str] | None, typer.Option(
        "--create", metavar="NAME",
        help="Create this folder instead of listing (repeatable). Nested folders use the server's hierarchy "
             "delimiter (the 'delimiter' of --json; '/' on most servers): Processed/2026 creates Processed "
             "first if it is missing. Each folder created is subscribed. A folder that exists already is "
             "left as it is and the command still exits 0, so scripts can run it every time.",
        show_default=False)] = None,
) -> None:
    """List the IMAP folders with their special-use flags (\\Sent, \\Trash, ...) and counts, INBOX first;
    or create folders with --create.

    Examples:
      mailconnector folders sandbox
      mailconnector folders sandbox --create Processed --create Processed/2026
    """
    conn = s.project.connection(connection)
    from ..imap import ImapSession, check_folder_name

    if create:
        from ..errors import ConfigError

        for name in create:
            try:
                check_folder_name(name)  # every name checked before any is created
            except ConfigError as exc:
                raise ConfigError(exc.message.split(": ", 1)[-1], field="--create", hint=exc.hint) from None
        _create_folders(ImapSession(conn), create, json_output=s.json)
        return
    with ImapSession(conn) as imap:
        folders = imap.list_folders(with_counts=counts)
    if s.json:
        # "unread" is the word of the table and of the rest of the program; "unseen" (the same number) is
        # kept for scripts written before.
        emit_json([{**f.__dict__, "unread": f.unseen} for f in folders])
        return
    from rich.table import Table

    table = Table(title=f"Folders of {connection}", title_justify="left")
    for col in ("folder", "special use", "messages", "unread", "flags"):
        table.add_column(col, justify="right" if col in ("messages", "unread") else "left")
    for f in folders:
        table.add_row(_esc(f.name), f.special_use or "", _n(f.messages), _n(f.unseen), _esc(" ".join(f.flags)))
    out_console.print(table)


def _create_folders(session: ImapSession, names: list[str], *, json_output: bool) -> None:
    """Create each folder unless it exists, and say which; stops at the first the server refuses."""
    results: list[dict[str, object]] = []
    with session as imap:
        for name in names:
            created = imap.ensure_folder(name)
            parents = created[:-1]
            results.append({"folder": name, "created": bool(created), "created_parents": parents})
            if json_output:
                continue
            if not created:
                out_console.print(f"{_esc(name)} already exists", soft_wrap=True)
            elif parents:
                out_console.print(f"created {_esc(name)} (and {', '.join(_esc(p) for p in parents)})", soft_wrap=True)
            else:
                out_console.print(f"created {_esc(name)}", soft_wrap=True)
    if json_output:
        emit_json(results)


def _n(v: int | None) -> str:
    return "" if v is None else str(v)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
