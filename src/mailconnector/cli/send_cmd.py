"""``mailconnector send``: records in (JSON, JSON Lines, CSV, or flags for one message), email out."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from ..errors import ConfigError, MailConnectorError
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
                                               "from_address); with --input, the default for records "
                                               "without 'from'.")] = None,
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
    the same input sends nothing twice (the send ledger). Exit 1 when some records failed or were only
    partly delivered; when every record failed for the same kind of reason (e.g. the login was refused),
    the exit code of that kind (see --help of mailconnector).

    Examples:
      mailconnector send sandbox --to bob@example.test --subject Hi --text "Hello Bob"
      mailconnector send sandbox --input outbox.jsonl --output responses.jsonl --concurrency 8
      cat records.csv | mailconnector send sandbox --input - --format csv --dry-run out/
    """
    # Imported on use: keeps `mailconnector --help` and the other commands quick to start.
    from pydantic import ValidationError

    from .._validation import config_error_from_validation
    from ..activities.files import iter_records, read_input, write_jsonl
    from ..activities.send import SendEmail, SendSettings, input_key_for
    from ..records.send import SendDefaults

    s = start(project, debug=debug, verbose_protocol=verbose_protocol, log_format=log_format,
              json_output=json_output)
    one = {"to": to, "cc": cc, "bcc": bcc, "subject": subject, "text": text, "html": html, "attach": attach}
    if input is None and not (to or cc or bcc):
        raise typer.BadParameter("give --input FILE (or -), or --to/--cc/--bcc for one message",
                                 param_hint="--input")
    if input is not None and any(one.values()):
        given = ", ".join(f"--{k}" for k, v in one.items() if v)
        raise typer.BadParameter(f"--input cannot be combined with the one-message flags ({given})",
                                 param_hint="--input")
    if fmt is not None and fmt not in ("json", "jsonl", "csv"):
        raise typer.BadParameter("must be json, jsonl or csv", param_hint="--format")
    if json_output and output is not None and str(output) == "-":
        raise typer.BadParameter("--output - and --json would both write to stdout", param_hint="--output")
    conn = s.project.connection(connection)
    try:
        defaults = SendDefaults.model_validate({"from": sender}) if sender and input is not None else None
        settings = SendSettings(concurrency=concurrency, rate_limit=rate_limit, retries=retries, dry_run=dry_run,
                                defaults=defaults)
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
    # --attach files were named by the person running the command: allowed wherever they are.
    activity = SendEmail(conn, settings, store=s.project.store(), base_dir=s.project.directory,
                         allow_files=[p.resolve() for p in attach or ()])
    counts: Counter[str] = Counter()
    failure_kinds: Counter[str] = Counter()
    sink: TextIO | None = None
    if output is not None:
        sink = sys.stdout if str(output) == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    results: list[dict[str, Any]] = []
    try:
        with progress("sending", total=len(records)) as bar:
            for response in activity.send(records, input_key=key):
                counts[response.status] += 1
                if response.status == "failed" and response.error is not None:
                    failure_kinds[response.error.type] += 1
                item = response.model_dump(mode="json", by_alias=True, exclude_none=True)
                if sink is not None:
                    write_jsonl(sink, item)
                if json_output:
                    results.append(item)
                elif response.status in ("failed", "uncertain") and response.error is not None:
                    err_console.print(f"[red]{response.status}[/] record {response.index} "
                                      f"{_esc(response.message_id)}: {_esc(response.error.message)}")
                bar.advance()
    finally:
        if sink is not None and sink is not sys.stdout:
            sink.close()
    if json_output:
        emit_json({"counts": dict(counts), "responses": sorted(results, key=lambda r: r["index"])})
    else:
        summary = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
        err_console.print(f"{sum(counts.values())} record(s): {summary}")
        if counts["uncertain"]:
            err_console.print(f"[yellow]hint[/]: {counts['uncertain']} may have been delivered and will not be sent "
                              "again until resolved: mailconnector ledger list --status uncertain")
    code = _exit_code(counts, failure_kinds)
    if code:
        raise typer.Exit(code)


def _exit_code(counts: Counter[str], failure_kinds: Counter[str]) -> int:
    """0; 1 when some records failed; the family's own code when all failed for one kind of reason."""
    if not counts["failed"] and not counts["partial"] and not counts["uncertain"]:
        return 0
    if counts["failed"] == sum(counts.values()):
        codes = {_EXIT_BY_KIND.get(kind) for kind in failure_kinds}
        if len(codes) == 1:
            only = codes.pop()
            if only is not None:
                return only
    return 1


def _error_kinds(cls: type[MailConnectorError]) -> dict[str, int]:
    found = {cls.__name__: cls.exit_code}
    for sub in cls.__subclasses__():
        found.update(_error_kinds(sub))
    return found


# Error type names (as in response records) -> exit code; MailConnectorError itself means "unexpected".
_EXIT_BY_KIND = {k: v for k, v in _error_kinds(MailConnectorError).items() if k != "MailConnectorError"}


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
