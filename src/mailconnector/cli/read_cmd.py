"""``mailconnector read``: unread email out as JSON Lines, each acknowledged once its line is written."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO, TextIO, cast

import typer

from ..errors import StateError
from ._advice import FOLDER_MISSING
from ._common import Session, err_console, progress, with_session
from ._usage import after_read_option, attachments_option, criteria_option, usage_error

if TYPE_CHECKING:
    from ..activities.read import ReadEmail, ReadSettings


@with_session(advice={"folder-missing": f"{FOLDER_MISSING}, or run again with --create-missing",
                      "search-criteria": "`mailconnector read --help` lists the search keys"})
def read_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSON Lines file (default: stdout). "
                                                "Lines are appended.")] = None,
    folder: Annotated[str, typer.Option(help="IMAP folder.")] = "INBOX",
    limit: Annotated[int | None, typer.Option(help="At most this many emails.", min=1)] = None,
    attachments: Annotated[str, typer.Option(
        callback=attachments_option,
        help="inline (base64 in the record), none (metadata only), or a DIRECTORY to write them to: an existing "
        "one, or a new one written as a path (./files, ~/mail/files, out/files; a bare word that is not an "
        "existing directory is refused, so that a typo does not become a directory).")] = "inline",
    after_read: Annotated[str, typer.Option(
        "--after-read", callback=after_read_option,
        help="What happens to an email once its record is written: mark_read, keep_unread, move:FOLDER "
        "(e.g. move:Archive) or delete.")] = "mark_read",
    create_missing: Annotated[bool, typer.Option(
        "--create-missing", help="With --after-read move:FOLDER: create FOLDER (and its missing parents) when it "
        "does not exist, instead of stopping before reading.")] = False,
    criteria: Annotated[str | None, typer.Option(
        callback=criteria_option,
        help='IMAP search added to "unread", e.g. \'FROM "alice@example.test" SINCE 1-Jan-2026\' or '
        '\'OR SUBJECT invoice SUBJECT receipt\'; keys: FROM TO CC BCC SUBJECT BODY TEXT HEADER SINCE BEFORE ON '
        'LARGER SMALLER SEEN FLAGGED NOT OR (...) and the other IMAP SEARCH keys; checked before connecting.')] = None,
    include_read: Annotated[bool, typer.Option("--include-read", help="Read emails too, not only unread.")] = False,
    include_delivered: Annotated[bool, typer.Option(
        "--include-delivered", help="Read again the emails an earlier run already delivered that still match "
        "(e.g. kept unread with --after-read keep_unread); they are skipped otherwise.")] = False,
    peek: Annotated[bool, typer.Option(
        "--peek", help="Only look: open the folder read-only, mark, move or record nothing (the next real read "
        "is not affected), and include what earlier runs delivered.")] = False,
    include_raw: Annotated[bool, typer.Option("--include-raw", help="Add the raw .eml (base64, or a file with "
                                              "an attachment directory).")] = False,
    max_attachment_bytes: Annotated[int | None, typer.Option(
        help="Larger attachments are listed as skipped, not delivered.")] = 25 * 1024 * 1024,
    batch_size: Annotated[int, typer.Option(help="Emails fetched per IMAP round trip.", min=1)] = 50,
) -> None:
    """Read unread email from a folder and write one JSON record per email (JSON Lines).

    An email is marked read (or moved, or deleted, per --after-read) only after its line has been
    written and flushed: stop the command at any point and the next run delivers exactly the rest.
    An email an earlier run delivered is not delivered again (the state store remembers it, also with
    keep_unread): --include-delivered reads it again, --peek looks at the folder without any effect, and
    `mailconnector state show CONNECTION` shows what is remembered.

    Examples:
      mailconnector read sandbox --limit 10
      mailconnector read sandbox -o inbox.jsonl --attachments ./files --after-read move:Archive
      mailconnector read sandbox --after-read move:Processed/2026 --create-missing
      mailconnector read sandbox --peek --limit 5
    """
    from ..activities.read import ReadEmail  # imported on use: keeps the CLI quick to start

    conn = s.project.connection(connection)
    directory, mode = _attachment_target(attachments)
    settings = _settings(
        folder=folder, limit=limit, attachments=mode, directory=directory, after_read=after_read,
        create_missing=create_missing, criteria=criteria, include_read=include_read,
        include_delivered=include_delivered, peek=peek, include_raw=include_raw,
        max_attachment_bytes=max_attachment_bytes, batch_size=batch_size)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    target = str(output) if output else "standard output"
    try:
        sink: BinaryIO = _open_output(output) if output else _stdout_bytes()
    except OSError as exc:
        raise _output_error(target, exc) from exc
    try:
        # Takes the folder's lease, as an operation does: one consumer of a mailbox folder at a time.
        reader = ReadEmail(conn, settings, store=s.project.store(), lease_seconds=s.project.settings.lease_seconds)
        count, closed = _deliver(reader, sink, target)
    finally:
        if output:
            with contextlib.suppress(OSError):  # every acked line was flushed: a failing close loses nothing
                sink.close()
    _report(reader, count, closed=closed, folder=folder, output=output, peek=peek)


def _attachment_target(attachments: str) -> tuple[Path | None, str]:
    """--attachments names a mode (inline, none) or a directory: the directory, and the settings' mode."""
    if attachments in ("inline", "none"):
        return None, attachments
    return Path(attachments), "directory"


def _settings(*, folder: str, limit: int | None, attachments: str, directory: Path | None, after_read: str,
              create_missing: bool, criteria: str | None, include_read: bool, include_delivered: bool, peek: bool,
              include_raw: bool, max_attachment_bytes: int | None, batch_size: int) -> ReadSettings:
    """The activity's settings from the options; a value they refuse was typed on the command line, so it
    is a usage error naming the option."""
    from pydantic import ValidationError

    from ..activities.read import ReadSettings

    if peek and (after_read != "mark_read" or create_missing):
        raise typer.BadParameter("--peek takes no after-read action: leave out --after-read and --create-missing",
                                 param_hint="--peek")
    try:
        return ReadSettings.model_validate({
            "folder": folder, "limit": limit, "attachments": attachments, "directory": directory,
            "criteria": criteria or {}, "include_read": include_read, "include_delivered": include_delivered,
            "include_raw": include_raw, "max_attachment_bytes": max_attachment_bytes, "batch_size": batch_size,
            "create_missing": create_missing, "peek": peek, **({} if peek else {"after_read": after_read}),
        })
    except ValidationError as exc:
        raise usage_error(exc, {"directory": "--attachments", "criteria": "--criteria"}) from None


def _deliver(reader: ReadEmail, sink: BinaryIO, target: str) -> tuple[int, bool]:
    """Write each email's line and acknowledge the email only once the line is flushed, so that a stop at
    any point loses nothing and delivers nothing twice. The count delivered, and whether the reader of
    the output went away (the rest then stays unread)."""
    from ..activities.read import record_json

    count = 0
    with reader, progress("reading") as bar:
        for item in reader:
            bar.set_total(reader.total)
            try:
                sink.write(record_json(item.record) + b"\n")
                sink.flush()  # on its way before the email counts as delivered
            except BrokenPipeError:
                return count, True  # the reader of our output stopped (`| head`): the rest stays unread
            except OSError as exc:
                raise _output_error(target, exc) from exc
            item.ack()
            count += 1
            bar.advance()
    return count, False


def _report(reader: ReadEmail, count: int, *, closed: bool, folder: str, output: Path | None, peek: bool) -> None:
    """What the run did, on stderr; and the emails an earlier run delivered that matched but were left out,
    which would otherwise look like an empty folder."""
    if closed:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (nothing more can go to the closed pipe)
        err_console.print(f"{count} email(s) read from {folder}; the output was closed, the rest stays unread")
        return
    err_console.print(f"{count} email(s) read from {folder}" + (f" into {output}" if output else "")
                      + (" (peek: nothing marked, moved or recorded)" if peek else ""))
    if not reader.skipped_delivered:
        return
    when = ""
    if reader.last_delivered_at:
        when = " (the latest on " + time.strftime("%Y-%m-%d %H:%M", time.localtime(reader.last_delivered_at)) + ")"
    err_console.print(f"[yellow]note[/]: {reader.skipped_delivered} email(s) matching the search were already "
                      f"delivered by an earlier run{when} and were skipped; --include-delivered reads them "
                      "again, --peek shows them without any effect")


def _output_error(target: str, exc: OSError) -> StateError:
    return StateError(f"cannot write to {target}: {exc.strerror or exc}; the email being written stays unread",
                      hint="free some space or choose another --output")


def _stdout_bytes() -> BinaryIO:
    """Standard output's byte stream (the records are UTF-8 JSON already)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # replaced by a text-only stream (an embedding program, a test harness)
        return cast(BinaryIO, _TextAsBytes(sys.stdout))
    return cast(BinaryIO, buffer)


class _TextAsBytes:
    """The little of a byte stream that the command uses, over a text stream."""

    def __init__(self, text: TextIO) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        self._text.write(data.decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


def _open_output(path: Path) -> BinaryIO:
    """Open the JSON Lines file for appending, after dropping a line that a killed run left unfinished (its
    email was not acknowledged: it is read again)."""
    from ..activities.files import drop_unfinished_line

    drop_unfinished_line(path)
    return open(path, "ab")
