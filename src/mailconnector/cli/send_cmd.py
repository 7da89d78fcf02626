"""``mailconnector send``: records in (JSON, JSON Lines, CSV, or flags for one message), email out."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from ._advice import advised
from ._common import Session, emit_json, err_console, progress, with_session
from ._exit_codes import exit_code_of_kind
from ._signals import stop_on_signals
from ._usage import delimiter_option, encoding_option, format_option, rate_limit_option, usage_error

if TYPE_CHECKING:
    from ..activities.send import SendEmail, SendSettings
    from ..records.send import SendResponse

# What this command adds to a library hint (see _advice): its own option for allowing a directory.
_ADVICE = {"path-not-allowed": "or --attachment-dir DIR on the command line"}


@with_session(json=True, advice=_ADVICE)
def send_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    input: Annotated[str | None, typer.Option("--input", "-i", help="Records: a .json, .jsonl or .csv file, "
                                              "or - for stdin.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", callback=format_option,
                                            help="json, jsonl or csv (default: from the file name: .json, "
                                            ".jsonl/.ndjson, .csv; else from the content).")] = None,
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
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", callback=rate_limit_option,
                                                     help="At most this many messages per second, across all "
                                                     "connections (above 0; 0.5 = one every 2 seconds).")] = None,
    retries: Annotated[int, typer.Option(help="Retries after a temporary failure.", min=0, max=20)] = 3,
    encoding: Annotated[str, typer.Option(
        "--encoding", callback=encoding_option,
        help="The input file's text encoding: cp1252 for a CSV saved by Excel on Windows, latin-1, utf-16, ... "
        "An input that does not decode is refused with a guess at its encoding.")] = "utf-8",
    delimiter: Annotated[str | None, typer.Option(
        "--delimiter", callback=delimiter_option,
        help="CSV: what separates the columns: one character, or comma, semicolon, tab or pipe (default: "
        "detected from the header row among comma, semicolon and tab).", show_default=False)] = None,
    attachment_dir: Annotated[list[Path] | None, typer.Option(
        "--attachment-dir", exists=True, file_okay=False, dir_okay=True,
        help="A directory that records' attachment paths and template files may be read from, besides the "
        "project's directory (repeatable). A record naming a file anywhere else fails; the project file's "
        "equivalent is attachment_dirs on the send-email activity.")] = None,
    dry_run: Annotated[Path | None, typer.Option("--dry-run", help="Write each message as an .eml file in "
                                                 "this directory; send nothing.")] = None,
    save_to_sent: Annotated[bool, typer.Option("--save-to-sent", help="Put a copy of each accepted message "
                                               "(flagged read) into the Sent folder over IMAP, for servers that "
                                               "do not file sent mail themselves (Microsoft 365 and Gmail do). "
                                               "A copy that fails is logged and never fails the send.")] = False,
    key: Annotated[str | None, typer.Option("--key", help="A batch key: records without their own "
                                            "message_id get Message-IDs from it and their content, so the same "
                                            "records under a new key are sent again (a daily job passes the "
                                            "date), and a rerun under the same key sends nothing twice.")] = None,
    resend: Annotated[bool, typer.Option("--resend", help="Send records again that were sent before: a new "
                                         "batch key, printed so that an interrupted resend can be finished "
                                         "with --key.")] = False,
) -> None:
    """Send email: each input record becomes one message.

    Record fields: from, to, cc, bcc, reply_to, subject, text, html, attachments, headers, in_reply_to,
    references, priority, message_id, template, data (see `mailconnector schema send-request`).

    A bad record fails alone (its error names the record and the field); the others are sent. A rerun
    sends nothing twice (the send ledger): each record's Message-ID comes from its `id`, or from its
    content, so after fixing a failed line a rerun sends just that one. To send the same records again
    on purpose: --resend, or a new --key. Ctrl-C (or SIGTERM) stops within moments: the messages under
    way finish, the rest is not sent (rerun to continue); a second Ctrl-C ends at once.
    An input that cannot be read as JSON, JSON Lines or CSV (not text in --encoding, a CSV header with
    columns that are no record field, a header and no rows) sends nothing and exits 3; an empty input
    sends nothing with a warning and exits 0.
    Exit 1 when some records failed or were only partly delivered; when every record failed for the same
    kind of reason (e.g. the login was refused), the exit code of that kind (see --help of mailconnector);
    130 when interrupted.

    Examples:
      mailconnector send sandbox --to bob@example.test --subject Hi --text "Hello Bob"
      mailconnector send sandbox --input outbox.jsonl --output responses.jsonl --concurrency 8
      cat records.csv | mailconnector send sandbox --input - --format csv --dry-run out/
      mailconnector send sandbox --input statements.csv --key "$(date +%F)"
      mailconnector send sandbox --input excel-export.csv --encoding cp1252 --delimiter semicolon
      mailconnector send sandbox --input invoices.jsonl --attachment-dir /srv/invoices/pdf
      mailconnector send sandbox --to bob@example.test --subject Hi --text "Hello" --save-to-sent
    """
    from ..activities.send import SendEmail  # imported on use: keeps `mailconnector --help` quick to start

    one = {"to": to, "cc": cc, "bcc": bcc, "subject": subject, "text": text, "html": html, "attach": attach}
    _check_sources(input, one, output, json_output=s.json)
    conn = s.project.connection(connection)
    settings = _settings(sender if input is not None else None, concurrency=concurrency, rate_limit=rate_limit,
                         retries=retries, dry_run=dry_run, save_to_sent=save_to_sent, attachment_dir=attachment_dir)
    records: list[Any] = (_read_records(input, fmt=fmt, encoding=encoding, delimiter=delimiter) if input is not None
                          else [_record_from_flags(one, sender)])
    # --attach files were named by the person running the command: allowed wherever they are.
    activity = SendEmail(conn, settings, store=s.project.store(), base_dir=s.project.directory,
                         allow_files=[p.resolve() for p in attach or ()])
    batch = _batch_key(key, resend=resend, from_input=input is not None)
    tally = _Tally(len(records), s.json)
    stopped = _send_all(activity, records, batch, output, tally)
    code = tally.finish(interrupted=stopped and tally.done < len(records))
    if code:
        raise typer.Exit(code)


def _check_sources(input: str | None, one: dict[str, Any], output: Path | None, *, json_output: bool) -> None:
    """Refuse, before anything is read, the ways of asking that contradict themselves: records from
    nowhere or from two places, and two writers of stdout."""
    if input is None and not (one["to"] or one["cc"] or one["bcc"]):
        raise typer.BadParameter("give --input FILE (or -), or --to/--cc/--bcc for one message",
                                 param_hint="--input")
    if input is not None and any(one.values()):
        given = ", ".join(f"--{k}" for k, v in one.items() if v)
        raise typer.BadParameter(f"--input cannot be combined with the one-message flags ({given})",
                                 param_hint="--input")
    if json_output and output is not None and str(output) == "-":
        raise typer.BadParameter("--output - and --json would both write to stdout", param_hint="--output")


def _settings(default_sender: str | None, *, concurrency: int, rate_limit: float | None, retries: int,
              dry_run: Path | None, save_to_sent: bool, attachment_dir: list[Path] | None) -> SendSettings:
    """The activity's settings from the options; a value they refuse was typed here, so it is a usage error
    (exit 2) naming the option, not a configuration error."""
    from pydantic import ValidationError

    from ..activities.send import SendSettings
    from ..records.send import SendDefaults

    try:
        defaults = SendDefaults.model_validate({"from": default_sender}) if default_sender else None
        return SendSettings(concurrency=concurrency, rate_limit=rate_limit, retries=retries, dry_run=dry_run,
                            defaults=defaults, save_to_sent=save_to_sent,
                            attachment_dirs=[d.resolve() for d in attachment_dir or ()])
    except ValidationError as exc:
        raise usage_error(exc, {"attachment_dirs": "--attachment-dir"}) from None


def _read_records(input: str, *, fmt: str | None, encoding: str, delimiter: str | None) -> list[Any]:
    """Every record of the input, read before the first message goes out (so that the count and the
    progress bar are known, and an unreadable input sends nothing)."""
    from ..activities.files import iter_records, read_input

    data, name = read_input(input)
    return list(iter_records(data, name=name, fmt=fmt, encoding=encoding,  # type: ignore[arg-type]
                             delimiter=delimiter, fields=_record_fields()))


def _record_from_flags(one: dict[str, Any], sender: str | None) -> dict[str, Any]:
    """The one record that --to/--cc/--bcc, --subject, --text, --html and --attach describe."""
    record: dict[str, Any] = {k: v for k, v in one.items() if v and k != "attach"}
    if sender:
        record["from"] = sender
    attach: list[Path] | None = one["attach"]
    if attach:
        for p in attach:
            if not p.is_file():  # a path typed on the command line: a usage error
                raise typer.BadParameter(f"{p} is not a file", param_hint="'--attach'")
        record["attachments"] = [{"path": str(p.resolve())} for p in attach]
    return record


def _batch_key(key: str | None, *, resend: bool, from_input: bool) -> str | None:
    """The batch key the Message-IDs derive from: --key, a new one for --resend (said, so that an
    interrupted resend can be finished), "" for an input without either, None (new each time) for one
    message from flags."""
    if resend and key is not None:
        raise typer.BadParameter("give --key or --resend, not both (--resend makes a new key)", param_hint="--resend")
    if resend:
        key = "resend-" + time.strftime("%Y%m%dT%H%M%S-") + secrets.token_hex(3)
        err_console.print(f"resending under the new key {key} (to finish it after an interruption: --key {key})")
    return key if key is not None else ("" if from_input else None)


def _send_all(activity: SendEmail, records: list[Any], batch: str | None, output: Path | None,
              tally: _Tally) -> bool:
    """Send the records, writing each response to --output before counting it, so that nothing counted
    is missing from the file; True when a signal stopped the sending."""
    from ..activities.files import write_jsonl

    sink: TextIO | None = None
    if output is not None:
        sink = sys.stdout if str(output) == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        with stop_on_signals("finishing the messages under way, sending no more",
                             on_second=tally.abort) as stop, progress("sending", total=len(records)) as bar:
            for response in activity.send(records, batch_key=batch, stop=stop):
                item = response.model_dump(mode="json", by_alias=True, exclude_none=True)
                if sink is not None:
                    write_jsonl(sink, item)  # flushed: on disk before it is counted
                tally.add(response, item)
                bar.advance()
    finally:
        if sink is not None and sink is not sys.stdout:
            sink.close()
    return stop.is_set()


class _Tally:
    """The responses so far, and the summary they make (also when a second Ctrl-C ends the process)."""

    def __init__(self, total: int, json_output: bool) -> None:
        self.total = total
        self.json_output = json_output
        self.counts: Counter[str] = Counter()
        self.failure_kinds: Counter[str] = Counter()
        self.results: list[dict[str, Any]] = []
        self.hints: set[str] = set()

    def add(self, response: SendResponse, item: dict[str, Any]) -> None:
        self.counts[response.status] += 1
        if response.status == "failed" and response.error is not None:
            self.failure_kinds[response.error.type] += 1
        if self.json_output:
            self.results.append(item)
        elif response.status in ("failed", "uncertain", "partial"):
            self._report(response)

    def _report(self, response: SendResponse) -> None:
        """A record that did not simply go out: why, which addresses were refused, and each hint once."""
        error = response.error
        colour = "yellow" if response.status == "partial" else "red"
        why = f": {_esc(error.message)}" if error is not None else ""
        mid = f" {_esc(response.message_id)}" if response.message_id else ""  # empty: never composed
        err_console.print(f"[{colour}]{response.status}[/] record {response.index}{mid}{why}")
        if response.refused:
            refused = "; ".join(f"{r.address} ({r.code} {r.text})" for r in response.refused)
            err_console.print(f"  refused: {_esc(refused)}")
        hint = advised(error.hint, error.topic, _ADVICE) if error is not None else None
        if hint and hint not in self.hints:
            self.hints.add(hint)
            err_console.print(f"[yellow]hint[/]: {_esc(hint)}")

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def _counts(self) -> str:
        return ", ".join(f"{n} {st}" for st, n in sorted(self.counts.items())) or "nothing sent"

    def _not_sent(self) -> str:
        return f"{self.total - self.done} not sent: rerun to continue"

    def summary(self, *, interrupted: bool) -> str:
        if interrupted:
            return f"interrupted — {self._counts()}; {self._not_sent()}"
        return f"{self.done} record(s): {self._counts()}"

    def document(self, *, interrupted: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"counts": dict(self.counts), "responses": sorted(self.results, key=lambda r: r["index"])}
        if interrupted:
            doc["interrupted"] = True
            doc["not_sent"] = self.total - self.done
        return doc

    def finish(self, *, interrupted: bool) -> int:
        if self.json_output:
            emit_json(self.document(interrupted=interrupted))
        else:
            err_console.print(self.summary(interrupted=interrupted))
            skipped = self.counts["skipped_duplicate"]
            if skipped:
                err_console.print(f"[yellow]hint[/]: {skipped} skipped: already sent (or being sent) according to "
                                  "the send ledger; to send them again on purpose: --resend, or a new --key")
            if self.counts["uncertain"]:
                err_console.print(f"[yellow]hint[/]: {self.counts['uncertain']} may have been delivered and will "
                                  "not be sent again until resolved: mailconnector ledger list --status uncertain "
                                  "lists them, mailconnector ledger resolve MESSAGE_ID --sent (or --not-sent) "
                                  "settles one")
        if interrupted:
            return 130
        return _exit_code(self.counts, self.failure_kinds)

    def abort(self) -> None:
        """A second Ctrl-C: say where things stand, and end now (the ledger knows what was claimed)."""
        with contextlib.suppress(OSError):
            if self.json_output:
                os.write(1, (json.dumps(self.document(interrupted=True), ensure_ascii=False, default=str) + "\n")
                         .encode())
            os.write(2, f"aborted: {self._counts()}; {self._not_sent()}\n".encode())
        os._exit(130)


def _exit_code(counts: Counter[str], failure_kinds: Counter[str]) -> int:
    """0; 1 when some records failed; the family's own code when all failed for one kind of reason."""
    if not counts["failed"] and not counts["partial"] and not counts["uncertain"]:
        return 0
    if counts["failed"] == sum(counts.values()):
        # The root type means "unexpected": it names no family, so it does not pick the exit code.
        codes = {None if kind == "MailConnectorError" else exit_code_of_kind(kind) for kind in failure_kinds}
        if len(codes) == 1:
            only = codes.pop()
            if only is not None:
                return only
    return 1


def _record_fields() -> set[str]:
    """The names a CSV header may give its columns: the send request's fields, as records spell them."""
    from ..records.send import SendRequest

    return {info.alias or name for name, info in SendRequest.model_fields.items()}


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
