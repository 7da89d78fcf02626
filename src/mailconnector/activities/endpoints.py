"""Sources and targets as an operation sees them.

Each is built from what it works with (a connection, its settings, the store; or a file's path), so an
operation can be wired by any program; ``build_source`` and ``build_target`` are the one place that wires
them from a project file's activities, for the command line, the workers and the console alike.

A source yields ``SourceItem``s (a record as a JSON-ready dict, plus an ``ack`` and a stable ``key``); a
target takes ``(ticket, record, key)`` triples and yields one ``Outcome`` per ticket once its record is
really taken (written to disk, accepted by the SMTP server), found already taken (``skipped``: sent by an
earlier run), left ``uncertain`` or failed — in any order, so a parallel target (Send Email) can report as
it goes. An operation acknowledges a source item only once each of its records is written or skipped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO, cast

from ..errors import ConfigError, MailConnectorError
from ..project import FileActivity, Project, ReadActivity, SendActivity
from ..records.send import ErrorInfo
from ._record_files import csv_header, write_eml, write_json_array
from ._record_keys import RecordKeys
from .files import InputContext, RecordFormat, format_by_suffix, iter_records, open_for_append, read_input, write_jsonl

if TYPE_CHECKING:
    from ..connection import Connection
    from ..state import LeaseKeeper, StateStore
    from .read import ReadSettings
    from .send import SendSettings

__all__ = [
    "Delivery",
    "Outcome",
    "Source",
    "SourceItem",
    "Target",
    "build_source",
    "build_target",
]

# What a target is handed: (ticket, record, key). The key names the source item and the output's place
# among the records made of it; a Send Email target derives the Message-ID (the send ledger's key) from it.
Delivery = tuple[int, dict[str, Any], str | None]
OutcomeStatus = Literal["written", "skipped", "uncertain", "failed"]


@dataclass(frozen=True)
class Outcome:
    ticket: int
    status: OutcomeStatus
    error: ErrorInfo | None = None

    @property
    def taken(self) -> bool:
        """The record is where it should be (now or from an earlier run): its source item may be acked."""
        return self.status in ("written", "skipped")


@dataclass
class SourceItem:
    record: dict[str, Any] | None
    ack: Callable[[], None] = field(default=lambda: None)
    error: MailConnectorError | None = None  # the source could not make a record of this item
    label: str = ""
    key: str | None = None  # stable across runs for the same input item


class Source(Protocol):
    @property
    def lease_name(self) -> str | None:
        """The lease a run must hold while it reads (a mail folder), or None (a file: nothing to share)."""
        ...

    def use_lease(self, keeper: LeaseKeeper) -> None:
        """Fence what the source does (acks, checkpoints, after-read actions) by the run's lease."""
        ...

    def items(self) -> Iterator[SourceItem]: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class Target(Protocol):
    def deliver(self, records: Iterable[Delivery]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------------------ sources
class ReadEmailSource:
    def __init__(self, name: str, connection: Connection, settings: ReadSettings, store: StateStore) -> None:
        from .read import ReadEmail

        self.settings = settings
        if settings.directory is not None:
            settings.directory.mkdir(parents=True, exist_ok=True)
        self.connection = connection
        self.reader = ReadEmail(connection, settings, store=store)
        self.name = name

    @property
    def lease_name(self) -> str:
        return self.reader.lease_name

    def use_lease(self, keeper: LeaseKeeper) -> None:
        self.reader.lease = keeper

    def items(self) -> Iterator[SourceItem]:
        where = f"imap:{self.reader.account}/{self.reader.folder}"
        for item in self.reader.items():
            record = item.record.model_dump(mode="json", by_alias=True)
            key = f"{where}/{record.get('uidvalidity')}/{item.uid}"
            yield SourceItem(record, item.ack, label=f"uid {item.uid}", key=key)

    def flush(self) -> None:
        self.reader.flush()

    def close(self) -> None:
        self.reader.close()

    def describe(self) -> dict[str, Any]:
        return {"type": "read-email", "connection": self.connection.name,
                **self.settings.model_dump(mode="json", by_alias=True, exclude_none=True)}


class FileSource:
    """Records of a file (or stdin). A file has no "read" flag: each run reads it whole, so an operation
    with a file source is run once per input (a watch refuses it)."""

    lease_name = None  # each run reads the file whole: nothing to share

    def __init__(self, name: str, config: FileActivity, path: str, *, where: str = "") -> None:
        """``path``: resolved (or ``-``); ``where``: where the path is written, for errors about the file."""
        self.config = config
        self.path = path
        self.name = name
        self.context = InputContext(field=None, activity=name, where=where)

    def use_lease(self, keeper: LeaseKeeper) -> None:
        pass

    def items(self) -> Iterator[SourceItem]:
        fmt = self.config.format
        path = Path(self.path)
        if fmt == "eml" or (self.path != "-" and path.is_dir()):
            yield from self._eml_items(path)
            return
        data, label = read_input(self.path, context=self.context, shown=self.config.path)
        keys = RecordKeys()  # by content, not position: fixing one line and rerunning sends only that line
        records = iter_records(data, name=label, fmt=_record_format(fmt), encoding=self.config.encoding,
                               delimiter=self.config.delimiter, context=self.context)
        for i, rec in enumerate(records):
            key = f"file:{keys.key(rec)}"
            if isinstance(rec, MailConnectorError):
                yield SourceItem(None, error=rec, label=f"record {i}", key=key)
            else:
                yield SourceItem(dict(rec), label=f"record {i}", key=key)

    def _eml_items(self, directory: Path) -> Iterator[SourceItem]:
        from ..mime.parse import parse_message

        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a directory of .eml files", field="path")
        for path in sorted(directory.glob("*.eml")):
            raw = path.read_bytes()
            record = parse_message(raw).model_dump(mode="json", by_alias=True)
            yield SourceItem(record, label=path.name, key=f"eml:{hashlib.sha256(raw).hexdigest()[:24]}")

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"type": "file", "path": self.path, "format": self.config.format}


# ------------------------------------------------------------------------------------------------ targets
class SendEmailTarget:
    """Send Email as a target. A record without ``message_id`` or ``id`` gets a Message-ID derived from the
    operation and its source item, so that a rerun over the same input (the same file, or an email that was
    delivered but not yet acknowledged when a run died) is found in the send ledger and not sent again."""

    def __init__(self, name: str, connection: Connection, settings: SendSettings, store: StateStore, *,
                 base_dir: Path | None = None, operation: str = "", batch_key: str | None = None,
                 stop: threading.Event | None = None) -> None:
        """``base_dir``: where relative attachment and template paths start (the project's directory)."""
        from .send import SendEmail

        self.connection = connection
        self.activity = SendEmail(connection, settings, store=store, base_dir=base_dir)
        self.name = name
        self.operation = operation
        self.batch_key = batch_key
        self.stop = stop
        self._sender = self.connection.from_address or self.connection.auth.username or ""

    def _message_id(self, key: str) -> str:
        from .send import derive_message_id

        # The sending account, not the connection's name: renaming a connection must not send again.
        seed = f"op:{self.operation}\0{self.connection.account}\0{key}"
        if self.batch_key:
            seed += f"\0{self.batch_key}"
        return derive_message_id(seed, self._sender)

    def deliver(self, records: Iterable[Delivery]) -> Iterator[Outcome]:
        tickets: list[int] = []

        def feed() -> Iterator[Mapping[str, Any]]:
            for ticket, record, key in records:
                tickets.append(ticket)
                if key is not None and not record.get("message_id") and record.get("id") in (None, ""):
                    record = {**record, "message_id": self._message_id(key)}
                yield record

        # A batch key re-keys records with an ``id`` as well (the others got their Message-ID above).
        for response in self.activity.send(feed(), batch_key=self.batch_key or None, stop=self.stop):
            yield Outcome(tickets[response.index], _SEND_OUTCOMES[response.status], response.error)

    def close(self) -> None:
        self.activity.close()

    def describe(self) -> dict[str, Any]:
        return {"type": "send-email", "connection": self.connection.name,
                **self.activity.settings.model_dump(mode="json", by_alias=True, exclude_none=True)}


_SEND_OUTCOMES: dict[str, OutcomeStatus] = {"sent": "written", "partial": "written", "dry_run": "written",
                                            "skipped_duplicate": "skipped", "uncertain": "uncertain",
                                            "failed": "failed"}


class FileTarget:
    """JSON Lines, CSV, JSON or a directory of .eml files. A record counts as taken once it is written and
    flushed to the file; a JSON array is written whole (atomically) at the end of the run, so its records
    are reported taken only then."""

    def __init__(self, name: str, config: FileActivity, path: str) -> None:
        """``path``: resolved (or ``-``, stdout)."""
        self.config = config
        self.path = path
        self.name = name
        self.append = config.append
        self._sink: TextIO | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._columns: list[str] | None = None
        self._fmt = config.format or _format_of(self.path)

    def deliver(self, records: Iterable[Delivery]) -> Iterator[Outcome]:
        if self._fmt == "json":
            yield from self._deliver_json(records)
            return
        for ticket, record, _key in records:
            try:
                self._write(record)
            except (OSError, ValueError, TypeError) as exc:
                yield Outcome(ticket, "failed", _write_error(self.path, exc))
                continue
            yield Outcome(ticket, "written")
        if self._fmt in ("jsonl", "csv") and self.path != "-" and not Path(self.path).exists():
            # A run that took nothing still leaves the (empty) file: an operation chained after it reads
            # "no records" instead of failing on a file that does not exist.
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).touch()

    def _deliver_json(self, records: Iterable[Delivery]) -> Iterator[Outcome]:
        tickets: list[int] = []
        items: list[dict[str, Any]] = []
        for ticket, record, _key in records:
            tickets.append(ticket)
            items.append(record)
        try:
            self._write_json(items)
        except (OSError, ValueError, TypeError) as exc:
            error = _write_error(self.path, exc)
            for ticket in tickets:
                yield Outcome(ticket, "failed", error)
            return
        for ticket in tickets:
            yield Outcome(ticket, "written")

    def _write_json(self, items: list[dict[str, Any]]) -> None:
        if self.path == "-":
            json.dump(items, sys.stdout, ensure_ascii=False, indent=2, default=str)
            sys.stdout.write("\n")
            sys.stdout.flush()
            return
        write_json_array(Path(self.path), items, append=self.append)

    def _open(self) -> TextIO:
        if self._sink is None:
            if self.path == "-":
                self._sink = sys.stdout
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                if self.append:
                    self._sink = open_for_append(Path(self.path))
                else:
                    self._sink = cast(TextIO, open(self.path, "w", encoding="utf-8", newline=""))  # noqa: SIM115
        return self._sink

    def _write(self, record: dict[str, Any]) -> None:
        if self._fmt == "eml":
            write_eml(Path(self.path), record)
        elif self._fmt == "csv":
            self._write_csv(record)
        else:
            write_jsonl(self._open(), record)

    def _write_csv(self, record: dict[str, Any]) -> None:
        flat = {k: v if isinstance(v, str | int | float) or v is None else json.dumps(v, ensure_ascii=False)
                for k, v in record.items()}
        if self._csv is None:
            header = csv_header(Path(self.path)) if self.append and self.path != "-" else None
            sink = self._open()
            self._columns = header or list(flat)
            self._csv = csv.DictWriter(sink, fieldnames=self._columns)
            if not header:
                self._csv.writeheader()
        assert self._columns is not None and self._sink is not None
        missing = [k for k in flat if k not in self._columns]
        if missing:
            # Never drop a field silently: the record fails, and says which columns it lacks.
            raise ValueError(f"the CSV columns ({', '.join(self._columns)}) have no place for: "
                             f"{', '.join(missing)}; a transformation mapping can fix the columns")
        self._csv.writerow(flat)
        self._sink.flush()

    def close(self) -> None:
        if self._sink is not None and self._sink is not sys.stdout:
            self._sink.close()
        self._sink = None
        self._csv = None

    def describe(self) -> dict[str, Any]:
        return {"type": "file", "path": self.path, "format": self._fmt, "append": self.append}


def _write_error(path: str, exc: Exception) -> ErrorInfo:
    return ErrorInfo(type="TargetError", message=f"cannot write to {path}: {exc}", retryable=isinstance(exc, OSError))


def _record_format(fmt: str | None) -> RecordFormat | None:
    if fmt in ("json", "jsonl", "csv"):
        return cast(RecordFormat, fmt)
    return None


def _format_of(path: str) -> str:
    """The format a target's path says: its suffix; a directory, or a name without one, is a folder of .eml."""
    by_suffix = format_by_suffix(path)
    if by_suffix is not None:
        return by_suffix
    return "eml" if path != "-" and (Path(path).is_dir() or not Path(path).suffix) else "jsonl"


def _file_path(project: Project, config: FileActivity) -> str:
    """A file activity's path, relative ones from the project's directory (``-`` as it is)."""
    if config.path == "-":
        return config.path
    p = Path(config.path).expanduser()
    return str(p if p.is_absolute() else project.directory / p)


def build_source(project: Project, name: str) -> ReadEmailSource | FileSource:
    """The source of a project's activity: its connection, settings and the project's store, wired."""
    config = project.activity(name)
    if isinstance(config, ReadActivity):
        return ReadEmailSource(name, project.connection(config.connection), project.read_settings(name, config),
                               project.store())
    if isinstance(config, FileActivity):
        line = project.line_of("activities", name, "path")
        # Errors about the file name the activity and where its path is written, not a command-line flag.
        return FileSource(name, config, _file_path(project, config),
                          where=f"path: in {project.source}" + (f" line {line}" if line else ""))
    raise ConfigError(f"activity {name!r} ({config.type}) cannot be a source", source=project.source)


def build_target(project: Project, name: str, *, operation: str = "", batch_key: str | None = None,
                 stop: threading.Event | None = None) -> SendEmailTarget | FileTarget:
    """The target of a project's activity; ``batch_key`` and ``stop`` are a Send Email target's
    (``SendEmail.send``)."""
    config = project.activity(name)
    if isinstance(config, SendActivity):
        return SendEmailTarget(name, project.connection(config.connection), project.send_settings(name, config),
                               project.store(), base_dir=project.directory, operation=operation,
                               batch_key=batch_key, stop=stop)
    if isinstance(config, FileActivity):
        return FileTarget(name, config, _file_path(project, config))
    raise ConfigError(f"activity {name!r} ({config.type}) cannot be a target", source=project.source)
