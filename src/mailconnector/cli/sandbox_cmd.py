"""``mailconnector sandbox``: a local mail server (Dovecot + Postfix on loopback) and a project file for it."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import StateError
from ._common import DebugOpt, JsonOpt, LogFormatOpt, emit_json, err_console, out_console, start

if TYPE_CHECKING:
    from ..sandbox import Sandbox

POINTER = Path(".mailconnector") / "sandbox-rundir"
GENERATED_MARK = "# Written by `mailconnector sandbox`"

sandbox_app = typer.Typer(help=(
    "A local mail server for trying things out and for the tests.\n\n"
    "Without a command: start Dovecot (IMAP) and Postfix (SMTP) on loopback and write a project file for them "
    "(see the options below).\n\n"
    "Examples:\n"
    "  mailconnector sandbox --background && mailconnector test sandbox\n"
    "  mailconnector sandbox --background --write-project sandbox.yaml --json\n"
    "  mailconnector sandbox --background --with-cluster   (PostgreSQL and Redis too)\n"
    "  mailconnector sandbox stop"))


def _project_target(requested: Path | None) -> Path:
    if requested is not None:
        return requested
    default = Path("mailconnector.yaml")
    if default.exists() and not default.read_text(errors="replace").startswith(GENERATED_MARK):
        # Never overwrite a user's project file.
        return Path("mailconnector.sandbox.yaml")
    return default


@sandbox_app.callback(invoke_without_command=True)
def sandbox_start(
    ctx: typer.Context,
    write_project: Annotated[Path | None, typer.Option(
        "--write-project", help="Where to write the project file (default ./mailconnector.yaml, "
        "or ./mailconnector.sandbox.yaml when a project file of yours is already there).")] = None,
    background: Annotated[bool, typer.Option("--background", help="Start, print, and return; stop it later "
                                             "with `mailconnector sandbox stop`.")] = False,
    with_cluster: Annotated[bool, typer.Option("--with-cluster", help="Also start a PostgreSQL (the shared "
                                               "state) and a Redis (the broker) on loopback, and write them into "
                                               "the project file with an example operation, for trying "
                                               "`mailconnector worker` and `run --distributed`.")] = False,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Start Dovecot (IMAP) and Postfix (SMTP) on free loopback ports, with test users and a certificate.

    Writes a project file whose connections (sandbox, sandbox-bob, sandbox-carol) point at it, so that
    `mailconnector test sandbox` works at once. Runs until Ctrl-C, or returns at once with --background.
    (`mailconnector sandbox --help` shows the group's help, with the examples, not this text.)
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..sandbox import Sandbox  # imported on use: the other commands start without it

    start(None, debug=debug, log_format=log_format)
    if POINTER.exists():
        old = Path(POINTER.read_text().strip())
        previous: Sandbox | None = None
        with contextlib.suppress(StateError):  # a stale pointer: its state is gone
            previous = Sandbox.attach(old)
        if previous is not None and previous.running():
            raise StateError(f"a sandbox is already running here ({old})",
                             hint="stop it first: mailconnector sandbox stop")
    sbx = Sandbox.start(cluster=with_cluster)
    target = _project_target(write_project)
    sbx.write_project(target)
    POINTER.parent.mkdir(exist_ok=True)
    POINTER.write_text(sbx.info.rundir)
    _describe(sbx, target, json_output)
    if background:
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err_console.print("sandbox running; Ctrl-C stops it")
    try:
        while not stop.wait(1.0):
            if not sbx.running():
                err_console.print("[red]a mail server stopped unexpectedly[/]; see the logs in " + sbx.info.rundir)
                break
    finally:
        sbx.remove()
        with contextlib.suppress(OSError):
            POINTER.unlink()
        err_console.print("sandbox stopped")


def _describe(sbx: Sandbox, project_file: Path, json_output: bool) -> None:
    info = sbx.info
    if json_output:
        emit_json({"rundir": info.rundir, "host": info.host, "ports": info.ports, "ca_file": info.ca_file,
                   "project_file": str(project_file), "users": [u["address"] for u in info.users],
                   "cluster": info.cluster})
        return
    from rich.table import Table

    table = Table(title="mailconnector sandbox", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    p = info.ports
    table.add_row("SMTP", f"127.0.0.1:{p['submission']} starttls · {p['smtps']} ssl · {p['smtp']} plain/starttls")
    table.add_row("IMAP", f"127.0.0.1:{p['imaps']} ssl · {p['imap']} starttls")
    table.add_row("users", ", ".join(u["address"] for u in info.users) + " (passwords in the run directory)")
    if info.cluster:
        table.add_row("PostgreSQL", f"127.0.0.1:{p['postgres']} (settings.state)")
        table.add_row("Redis", f"127.0.0.1:{p['redis']} (settings.broker)")
    table.add_row("CA certificate", info.ca_file)
    table.add_row("project file", str(project_file))
    table.add_row("run directory", info.rundir)
    out_console.print(table)
    out_console.print(f"try: mailconnector test sandbox --project {project_file}")
    if info.cluster:
        out_console.print("then: mailconnector worker & mailconnector worker &  (with an outbox.jsonl here) "
                          "mailconnector run send-outbox --distributed --wait")


@sandbox_app.command("stop")
def sandbox_stop() -> None:
    """Stop a sandbox started with --background from this directory, and delete its run directory.

    Example: mailconnector sandbox stop
    """
    if not POINTER.exists():
        raise StateError("no sandbox was started from this directory", hint="start one: mailconnector sandbox")
    from ..sandbox import Sandbox

    sbx = Sandbox.attach(Path(POINTER.read_text().strip()))
    sbx.remove()
    POINTER.unlink()
    err_console.print("sandbox stopped")


@sandbox_app.command("status")
def sandbox_status(json_output: JsonOpt = False) -> None:
    """Is the sandbox of this directory running? Exit 0 if yes, 8 if not.

    Example: mailconnector sandbox status --json
    """
    if not POINTER.exists():
        raise StateError("no sandbox was started from this directory", hint="start one: mailconnector sandbox")
    from ..sandbox import Sandbox

    sbx = Sandbox.attach(Path(POINTER.read_text().strip()))
    running = sbx.running()
    if json_output:
        emit_json({"running": running, "rundir": sbx.info.rundir, "pids": sbx.info.pids})
    else:
        out_console.print(f"sandbox {'running' if running else 'not running'} ({sbx.info.rundir})")
    raise typer.Exit(0 if running else 8)

