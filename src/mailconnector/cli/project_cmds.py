"""``run``, ``logs``, ``schema`` and ``init``: the project file's operations, their logs, the published schemas."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError, StateError
from ._common import (
    DebugOpt,
    JsonOpt,
    LogFormatOpt,
    ProjectOpt,
    VerboseOpt,
    emit_json,
    err_console,
    out_console,
    progress,
    start,
)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("logs")(logs_cmd)
    app.command("schema")(schema_cmd)
    app.command("init")(init_cmd)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM / Ctrl-C finish the record in hand, then stop cleanly (a second one aborts). The previous
    handlers come back afterwards, so that a program calling the CLI in-process keeps its own."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        # Plain os.write: the handler may interrupt anything, even an import or a print of the console's.
        with contextlib.suppress(OSError):
            os.write(2, f"{signal.Signals(signum).name}: stopping after the record in hand (again to abort)\n"
                     .encode())

    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield stop
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_cmd(
    operation: Annotated[str, typer.Argument(help="Operation name from the project file.")],
    watch: Annotated[bool, typer.Option("--watch", help="Keep running: IMAP IDLE where offered, else poll.")] = False,
    interval: Annotated[float | None, typer.Option(help="Watch: seconds between polls (default: the "
                                                   "operation's interval, 60).", min=0.1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Watch: wait while another process holds the folder, "
                                       "instead of exiting.")] = False,
    project: ProjectOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
    verbose_protocol: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Run an operation (source → transformation → target) once, or keep it running with --watch.

    Emails are marked read only when the target took every record made from them. Each run writes an
    operation log (see `mailconnector logs`). Exit 1 when some records failed; 130 when stopped by
    SIGTERM / Ctrl-C (the record in hand is finished first; the rest stays unread for the next run);
    8 when another process holds the folder (with --watch: add --wait to wait for it instead).

    Examples:
      mailconnector run send-outbox
      mailconnector run inbox-to-jsonl --watch --interval 30
    """
    from ..operations import RunResult, run_operation, watch_operation

    s = start(project, debug=debug, verbose_protocol=verbose_protocol, log_format=log_format,
              json_output=json_output)
    proj = s.project
    proj.operation(operation)  # validate before anything starts

    def show(result: RunResult) -> None:
        if watch and result.status == "success" and not result.read and not result.chained:
            return  # a watch's run that found nothing: not worth a line (nor a log entry)
        if json_output:
            if watch:  # one run per line: a stream a script can read as it comes
                sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                emit_json(result.to_dict())
            return
        for r in _flatten(result):
            colour = {"success": "green", "partial": "yellow"}.get(r.status, "red")
            err_console.print(f"[{colour}]{r.operation}[/]: {r.status} — read {r.read}, written {r.written}, "
                              f"failed {r.failed} (run {r.run_id})" + (f": {r.error}" if r.error else ""))

    with _stop_on_signals() as stop:
        if watch:
            watch_operation(proj, operation, stop=stop, interval=interval, wait_for_lease=wait, on_run=show)
            return
        with progress(f"running {operation}") as bar:
            result = run_operation(proj, operation, stop=stop, on_record=lambda _name: bar.advance())
    show(result)
    if result.interrupted:
        raise typer.Exit(130)
    if not result.ok:
        raise typer.Exit(1)


def _flatten(result: Any) -> list[Any]:
    out = [result]
    for c in result.chained:
        out += _flatten(c)
    return out


def logs_cmd(
    run_id: Annotated[str | None, typer.Argument(help="Show this run in full (its failed records too).")] = None,
    operation: Annotated[str | None, typer.Option(help="Only runs of this operation.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs to list.", min=1)] = 20,
    project: ProjectOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List operation runs (newest first), or show one run with each failed record's error.

    Example: mailconnector logs --operation send-outbox --json
    """
    s = start(project, debug=debug, json_output=json_output)
    store = s.project.store()
    if run_id:
        run = store.get_run(run_id)
        if run is None:
            raise StateError(f"no run {run_id!r} in the operation logs", hint="list them with: mailconnector logs")
        if json_output:
            emit_json(run)
            return
        for key in ("run_id", "operation", "status", "started_at", "ended_at", "records_read",
                    "records_written", "records_failed", "error"):
            if run.get(key) is not None:
                out_console.print(f"[bold]{key}[/]: {run[key]}")
        out_console.print_json(data=run["settings"])
        for e in run["errors"]:
            out_console.print(f"[red]{e['record']}[/]: {e['error'].get('message')}")
        return
    runs = store.list_runs(limit=limit, operation=operation)
    if json_output:
        emit_json(runs)
        return
    table = Table(title="Operation runs", title_justify="left")
    for col in ("run id", "operation", "status", "started", "read", "written", "failed"):
        table.add_column(col, justify="right" if col in ("read", "written", "failed") else "left")
    for r in runs:
        table.add_row(r["run_id"], r["operation"], r["status"], r["started_at"], str(r["records_read"]),
                      str(r["records_written"]), str(r["records_failed"]))
    out_console.print(table)


SCHEMAS = ("send-request", "send-response", "read-record", "project")


def schema_cmd(
    name: Annotated[str | None, typer.Argument(help=f"One of: {', '.join(SCHEMAS)}. Without: list them.")] = None,
) -> None:
    """Print a JSON Schema: of the send records, the response records, the read records or the project file.

    Example: mailconnector schema send-request > send-request.schema.json
    """
    from ..project import project_schema
    from ..records.read import read_record_schema
    from ..records.send import send_request_schema, send_response_schema

    if name is None:
        for n in SCHEMAS:
            out_console.print(n)
        return
    makers = {"send-request": send_request_schema, "send-response": send_response_schema,
              "read-record": read_record_schema, "project": project_schema}
    if name not in makers:
        raise ConfigError(f"no schema named {name!r}; choose one of {', '.join(SCHEMAS)}")
    emit_json(makers[name]())


STARTER = """\
# mailconnector project: connections, activities and operations.
# Every field: `mailconnector schema project`. Secrets: ${env:NAME} or ${file:PATH}, never in clear.
#
# Try it against the local sandbox:
#   mailconnector sandbox --background --write-project sandbox.yaml
# then copy its `sandbox` connection below (or run with --project sandbox.yaml).

connections:
  mailbox:
    auth:
      type: basic
      username: alice@example.test
      password: "${env:MAILBOX_PASSWORD}"
    smtp: {host: 127.0.0.1, port: 587, security: starttls}   # STARTTLS is required, never skipped
    imap: {host: 127.0.0.1, port: 993, security: ssl}
    # tls: {ca_file: path/to/ca.pem}                      # a private CA, e.g. the sandbox's
    from_address: alice@example.test

activities:
  outbox:                      # records to send: JSON, JSON Lines or CSV
    type: file
    path: outbox.jsonl
  send-mail:
    type: send-email
    connection: mailbox
    concurrency: 4
    # subject: "Default subject"   # any record field can have a default here
  inbox:
    type: read-email
    connection: mailbox
    folder: INBOX
    attachments: directory
    directory: attachments
    after_read: mark_read        # or keep_unread, move:Archive, delete
  inbox-file:
    type: file
    path: inbox.jsonl

operations:
  send-outbox:
    source: outbox
    target: send-mail
  inbox-to-file:
    source: inbox
    transformation:
      mapping:                  # Jinja expressions over `record`
        from: "record['from']['address'] if record['from'] else None"
        subject: "record.subject"
        attachments: "record.attachments | map(attribute='path') | list"
    target: inbox-file
    on_error: continue           # or stop at the first failed record

settings:
  log_retention_days: 90
"""


def init_cmd(
    directory: Annotated[Path, typer.Argument(help="Where to write mailconnector.yaml.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing project file.")] = False,
) -> None:
    """Write a starter project (mailconnector.yaml with comments, and an example outbox).

    Example: mailconnector init my-project && cd my-project && mailconnector schema project
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "mailconnector.yaml"
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists", hint="use --force to overwrite it")
    target.write_text(STARTER)
    outbox = directory / "outbox.jsonl"
    if not outbox.exists():
        outbox.write_text('{"id": "welcome-1", "to": "bob@example.test", "subject": "Hello from mailconnector", '
                          '"text": "It works."}\n')
    with contextlib.suppress(OSError):
        (directory / "attachments").mkdir(exist_ok=True)
    err_console.print(f"wrote {target} and {outbox}")
