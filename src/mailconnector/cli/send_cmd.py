"""``mailconnector send``: records in (JSON, JSON Lines, CSV, or flags for one message), email out."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import ValidationError

from .._validation import config_error_from_validation
from ..activities.files import iter_records, read_input, write_jsonl
from ..activities.send import SendEmail, SendSettings, input_key_for
from ..errors import ConfigError
from ._common import DebugOpt, JsonOpt, LogFormatOpt, ProjectOpt, VerboseOpt, emit_json, err_console, progress, start


def register(app: typer.Typer) -> None:
    app.command("send")(send_cmd)


def send_cmd(
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    input: Annotated[str | None, typer.Option("--input", "-i", help="Records: a .json, .jsonl or .csv file, "
                                              "or - for stdin.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="json, jsonl or csv (default: from the file name "
                                            "or content).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the response records here "
                                                "(JSON Lines; - for stdout).")] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="One message: a recipient (repeatable).")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc", help="One message: a Cc recipient (repeatable).")] = None,
    bcc: Annotated[list[str] | None, typer.Option("--bcc", help="One message: a Bcc recipient.")] = None,
    sender: Annotated[str | None, typer.Option("--from", help="Sender (default: the connection's "
                                               "from_address).")] = None,
    subject: Annotated[str | None, typer.Option(help="One message: the subject.")] = None,
    text: Annotated[str | None, typer.Option(help="One message: the plain-text body.")] = None,
    html: Annotated[str | None, typer.Option(help="One message: the HTML body.")] = None,
    attach: Annotated[list[Path] | None, typer.Option("--attach", help="One message: a file to attach "
                                                      "(repeatable).")] = None,
    concurrency: Annotated[int, typer.Option(help="SMTP connections in parallel.", min=1, max=64)] = 4,
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="At most this many messages per "
                                                     "second.")] = None,
    retries: Annotated[int, typer.Option(help="Retries after a temporary failure.", min=0, max=20)] = 3,
    dry_run: Annotated[Path | None, typer.Option("--dry-run", help="Write each message as an .eml file in "
                                                 "this directory; send nothing.")] = None,
    project: ProjectOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
    verbose_protocol: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Send email: each input record becomes one message.

    Record fields: from, to, cc, bcc, reply_to, subject, text, html, attachments, headers, in_reply_to,
    references, priority, message_id, template, data (see `mailconnector schema send-request`).

    A bad record fails alone (its error names the record and the field); the others are sent. A rerun of
    the same input sends nothing twice (the send ledger). Exit 1 when some records failed.

    Examples:
      mailconnector send sandbox --to bob@example.test --subject Hi --text "Hello Bob"
      mailconnector send sandbox --input outbox.jsonl --output responses.jsonl --concurrency 8
      cat records.csv | mailconnector send sandbox --input - --format csv --dry-run out/
    """
    s = start(project, debug=debug, verbose_protocol=verbose_protocol, log_format=log_format,
              json_output=json_output)
    one = {"to": to, "cc": cc, "bcc": bcc, "subject": subject, "text": text, "html": html, "attach": attach}
    if input is None and not to:
        raise typer.BadParameter("give --input FILE (or -), or --to for one message", param_hint="--input")
    if input is not None and any(v for k, v in one.items() if k != "attach"):
        raise typer.BadParameter("--input and the one-message flags cannot be combined", param_hint="--input")
    if fmt is not None and fmt not in ("json", "jsonl", "csv"):
        raise typer.BadParameter("must be json, jsonl or csv", param_hint="--format")
    conn = s.project.connection(connection)
    try:
        settings = SendSettings(concurrency=concurrency, rate_limit=rate_limit, retries=retries, dry_run=dry_run)
    except ValidationError as exc:
        raise config_error_from_validation(exc, source="command line") from None
    records: list[Any]
    if input is not None:
        data, name = read_input(input)
        records = list(iter_records(data, name=name, fmt=fmt))  # type: ignore[arg-type]
        key = input_key_for(data)
    else:
        record: dict[str, Any] = {k: v for k, v in one.items() if v and k != "attach"}
        if sender:
            record["from"] = sender
        if attach:
            for p in attach:
                if not p.is_file():
                    raise ConfigError(f"attachment {p} does not exist", field="--attach")
            record["attachments"] = [{"path": str(p.resolve())} for p in attach]
        records, key = [record], None
    activity = SendEmail(conn, settings, store=s.project.store(), base_dir=s.project.directory)
    counts: Counter[str] = Counter()
    sink: TextIO | None = None
    if output is not None:
        sink = sys.stdout if str(output) == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    results: list[dict[str, Any]] = []
    try:
        with progress("sending", total=len(records)) as bar:
            for response in activity.send(records, input_key=key):
                counts[response.status] += 1
                item = response.model_dump(mode="json", by_alias=True, exclude_none=True)
                if sink is not None:
                    write_jsonl(sink, item)
                if json_output:
                    results.append(item)
                elif response.status == "failed" and response.error is not None:
                    err_console.print(f"[red]failed[/] record {response.index}: {_esc(response.error.message)}")
                bar.advance()
    finally:
        if sink is not None and sink is not sys.stdout:
            sink.close()
    if json_output:
        emit_json({"counts": dict(counts), "responses": sorted(results, key=lambda r: r["index"])})
    else:
        summary = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
        err_console.print(f"{sum(counts.values())} record(s): {summary}")
    if counts["failed"] or counts["partial"]:
        raise typer.Exit(1)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
