"""``mailconnector test`` and ``mailconnector folders``: look at a connection without moving any mail."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ._common import DebugOpt, JsonOpt, LogFormatOpt, ProjectOpt, VerboseOpt, emit_json, out_console, start

_STATUS = {"passed": "[green]passed[/]", "failed": "[bold red]FAILED[/]", "skipped": "[dim]skipped[/]"}


def register(app: typer.Typer) -> None:
    app.command("test")(test_cmd)
    app.command("folders")(folders_cmd)


def test_cmd(
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    folder: Annotated[str, typer.Option(help="IMAP folder the Test selects.")] = "INBOX",
    project: ProjectOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
    verbose_protocol: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Test a connection step by step: DNS, TCP, TLS, STARTTLS, capabilities, login, folder / sender.

    Nothing is sent: the SMTP check is MAIL FROM followed by RSET. Exit 0 only when every step passed;
    otherwise the exit code of the first failure (3 configuration, 4 authentication, 5 connection/TLS,
    6 server refused).

    Example: mailconnector test sandbox --json
    """
    from ..diagnostics import run_test  # imported on use: keeps the CLI quick to start

    s = start(project, debug=debug, verbose_protocol=verbose_protocol, log_format=log_format,
              json_output=json_output)
    conn = s.project.connection(connection)
    report = run_test(conn, folder=folder)
    if json_output:
        emit_json(report.to_dict())
        raise typer.Exit(report.exit_code)
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
    raise typer.Exit(report.exit_code)


def folders_cmd(
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    counts: Annotated[bool, typer.Option(help="Also count messages and unread messages (STATUS).")] = True,
    project: ProjectOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
    verbose_protocol: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """List the IMAP folders with their special-use flags (\\Sent, \\Trash, ...) and counts.

    Example: mailconnector folders sandbox
    """
    s = start(project, debug=debug, verbose_protocol=verbose_protocol, log_format=log_format,
              json_output=json_output)
    conn = s.project.connection(connection)
    from ..imap import ImapSession

    with ImapSession(conn) as imap:
        folders = imap.list_folders(with_counts=counts)
    if json_output:
        emit_json([f.__dict__ for f in folders])
        return
    table = Table(title=f"Folders of {connection}", title_justify="left")
    for col in ("folder", "special use", "messages", "unread", "flags"):
        table.add_column(col, justify="right" if col in ("messages", "unread") else "left")
    for f in folders:
        table.add_row(_esc(f.name), f.special_use or "", _n(f.messages), _n(f.unseen), _esc(" ".join(f.flags)))
    out_console.print(table)


def _n(v: int | None) -> str:
    return "" if v is None else str(v)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
