"""``run``, ``logs``, ``schema`` and ``init``: the project file's operations, their logs, the published schemas."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError, LeaseBusyError, StateError
from ._advice import FOLDER_MISSING
from ._common import Session, emit_json, err_console, out_console, print_table, progress, with_session
from ._signals import stop_on_signals

if TYPE_CHECKING:
    from ..operations import RunResult
    from ..project import Project


@with_session(json=True, advice={"folder-missing": FOLDER_MISSING, "lease-busy": "or run again with --wait"})
def run_cmd(
    s: Session,
    operation: Annotated[str, typer.Argument(help="Operation name from the project file.")],
    watch: Annotated[bool, typer.Option("--watch", help="Keep running: IMAP IDLE where offered, else poll.")] = False,
    interval: Annotated[float | None, typer.Option(help="Watch: seconds between polls (default: the "
                                                   "operation's interval, 60).", min=0.1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait while another process holds the folder, "
                                       "instead of exiting with 8. With --distributed: follow the run until "
                                       "it ends, and exit as a run here does.")] = False,
    key: Annotated[str | None, typer.Option("--key", help="A send-email target's batch key for this run "
                                            "(instead of the operation's `key`): records already sent under "
                                            "it are skipped, a new one sends them again.")] = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Run it on the workers (`mailconnector "
                                              "worker`): the source is cut into chunks that travel through the "
                                              "broker; prints the run id and returns, unless --wait.")] = False,
    chunk_size: Annotated[int | None, typer.Option(help="--distributed: records per chunk (default: "
                                                   "settings.chunk_size, 100).", min=1, max=10000)] = None,
    queue: Annotated[str, typer.Option(help="--distributed: the queue to send the chunks to (workers take "
                                       "from theirs, `worker --queues`).")] = "mailconnector",
) -> None:
    """Run an operation (source → transformation → target) once, or keep it running with --watch.

    Emails are marked read only when the target took every record made from them. Each run writes an
    operation log (see `mailconnector logs`). Exit 1 when some records failed; 130 when stopped by
    SIGTERM / Ctrl-C (the record in hand is finished first; the rest stays unread for the next run);
    8 when another process holds the folder (add --wait to wait for it instead). The summary counts
    records written (sent), skipped (already sent by an earlier run), uncertain and failed apart.

    With --distributed the run goes to the workers (see docs/scaling.md): its counts and each failed
    record's error are in the shared operation log (`mailconnector logs RUN_ID`) whichever worker did the
    work; exit 0 once it is queued, or with --wait as a run here (Ctrl-C stops following, not the run).

    Examples:
      mailconnector run send-outbox
      mailconnector run send-statements --key 2026-12-02
      mailconnector run inbox-to-jsonl --watch --interval 30
      mailconnector run send-statements --distributed --chunk-size 200 --wait
    """
    from ..operations import watch_operation

    if distributed and watch:
        raise typer.BadParameter("a watch runs in this process; a distributed watch is a triggered operation "
                                 "(`trigger: watch` in the project file)", param_hint="--distributed")
    if (chunk_size is not None or queue != "mailconnector") and not distributed:
        raise typer.BadParameter("only with --distributed", param_hint="--chunk-size / --queue")
    proj = s.project
    proj.operation(operation)  # validate before anything starts
    if distributed:
        _run_distributed(proj, operation, key=key, chunk_size=chunk_size, queue=queue, wait=wait,
                         json_output=s.json)
        return

    def show(result: RunResult) -> None:
        _show_result(result, json_output=s.json, watch=watch)

    with stop_on_signals("stopping after the record in hand") as stop:
        if watch:
            watch_operation(proj, operation, stop=stop, interval=interval, wait_for_lease=wait, on_run=show)
            return
        result = _run_once(proj, operation, stop, wait=wait, key=key)
    show(result)
    if result.interrupted:
        raise typer.Exit(130)
    if not result.ok:
        raise typer.Exit(1)


def _show_result(result: RunResult, *, json_output: bool, watch: bool = False) -> None:
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
        counts = f"read {r.read}, written {r.written}"
        counts += "".join(f", {word} {n}" for word, n in (("skipped", r.skipped), ("uncertain", r.uncertain)) if n)
        err_console.print(f"[{colour}]{r.operation}[/]: {r.status} — {counts}, failed {r.failed} "
                          f"(run {r.run_id})" + (f": {r.error}" if r.error else ""))
        if r.skipped:
            err_console.print(f"[yellow]hint[/]: {r.skipped} record(s) were already sent by an earlier run "
                              "(send ledger); to send them again on purpose, run with a new --key")


def _run_distributed(proj: Project, operation: str, *, key: str | None, chunk_size: int | None, queue: str,
                     wait: bool, json_output: bool) -> None:
    from ..distributed import follow_run, submit_run

    submitted = submit_run(proj, operation, chunk_size=chunk_size, batch_key=key, queue=queue)
    if not wait:
        if json_output:
            emit_json(submitted.to_dict())
        else:
            sys.stdout.write(submitted.run_id + "\n")
            err_console.print(f"{operation}: {submitted.records} record(s) in {submitted.chunks} chunk(s) queued "
                              f"(run {submitted.run_id}); follow it with: mailconnector logs {submitted.run_id}")
        return
    with stop_on_signals("no longer following the run (it goes on on the workers)") as stop, \
            progress(f"running {operation} on the workers", total=submitted.records) as bar:
        done = 0

        def advance(settled: int, _total: int) -> None:
            nonlocal done
            bar.advance(settled - done)
            done = settled

        result = follow_run(proj, submitted.run_id, stop=stop, on_progress=advance)
    if result.status == "running":
        err_console.print(f"run {result.run_id} goes on on the workers; follow it with: "
                          f"mailconnector logs {result.run_id}")
        raise typer.Exit(130)
    _show_result(result, json_output=json_output)
    if not result.ok:
        raise typer.Exit(1)


def _run_once(proj: Project, operation: str, stop: threading.Event, *, wait: bool, key: str | None) -> RunResult:
    """One run; with ``wait``, after the run that holds the folder has finished (a dead one's lease is taken
    over at once, a live one's when it ends or its lease runs out)."""
    from ..operations import run_operation

    announced = False
    while True:
        try:
            with progress(f"running {operation}") as bar:
                return run_operation(proj, operation, stop=stop, batch_key=key,
                                     on_record=lambda _name: bar.advance())
        except LeaseBusyError as exc:
            if not wait:
                raise
            if not announced:
                err_console.print(f"waiting: {exc.message}")
                announced = True
            if stop.wait(1.0):
                raise KeyboardInterrupt from None


def _flatten(result: Any) -> list[Any]:
    out = [result]
    for c in result.chained:
        out += _flatten(c)
    return out


@with_session(json=True, verbose=False, log_format=False)
def logs_cmd(
    s: Session,
    run_id: Annotated[str | None, typer.Argument(help="Show this run in full (its failed records too).")] = None,
    operation: Annotated[str | None, typer.Option(help="Only runs of this operation (one of the project file, "
                                                  "or a removed one that still has runs in the logs).")] = None,
    limit: Annotated[int, typer.Option(help="How many runs to list.", min=1)] = 20,
) -> None:
    """List operation runs (newest first), or show one run with each failed record's error.

    Example: mailconnector logs --operation send-outbox --json
    """
    store = s.project.store()
    if run_id:
        run = store.get_run(run_id)
        if run is None:
            raise StateError(f"no run {run_id!r} in the operation logs", hint="list them with: mailconnector logs")
        if s.json:
            emit_json(run)
            return
        for key in ("run_id", "operation", "status", "started_at", "ended_at", "records_read",
                    "records_written", "records_skipped", "records_uncertain", "records_failed", "error"):
            if run.get(key) is not None:
                out_console.print(f"[bold]{key}[/]: {run[key]}")
        out_console.print_json(data=run["settings"])
        for e in run["errors"]:
            outcome = e["error"].get("outcome", "failed")
            out_console.print(f"[red]{e['record']}[/] ({outcome}): {e['error'].get('message')}")
        return
    runs = store.list_runs(limit=limit, operation=operation)
    if operation is not None and not runs:  # a typo would otherwise look like "no runs yet"
        known = list(s.project.doc.data.get("operations") or {})
        if operation not in known:
            raise ConfigError(f"no operation named {operation!r} (defined: {', '.join(known) or 'none'}), and no "
                              "run of one in the operation logs", source=s.project.source,
                              hint="list the runs of every operation with: mailconnector logs")
    if s.json:
        emit_json(runs)
        return
    from rich.table import Table

    table = Table(title="Operation runs", title_justify="left")
    counts = ("read", "written", "skipped", "uncertain", "failed")
    id_width = max((len(r["run_id"]) for r in runs), default=6)
    for col in ("run id", "operation", "status", "started", *counts):
        is_id = col == "run id"  # what `logs RUN_ID` takes: never cut or wrapped, however narrow the console
        table.add_column(col, justify="right" if col in counts else "left", no_wrap=is_id,
                         min_width=id_width if is_id else None)
    for r in runs:
        table.add_row(r["run_id"], r["operation"], r["status"], r["started_at"],
                      *(str(r[f"records_{c}"]) for c in counts))
    print_table(table)


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
