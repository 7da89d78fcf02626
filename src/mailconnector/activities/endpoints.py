"""Sources and targets as an operation sees them, built from the project file's activities.

A source yields ``SourceItem``s (a record as a JSON-ready dict, plus an ``ack``); a target takes
``(ticket, record)`` pairs and yields ``(ticket, error or None)`` as each record is taken or fails — in
any order, so a parallel target (Send Email) can report as it goes.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar, cast

from pydantic import BaseModel, ValidationError

from .._validation import config_error_from_validation
from ..errors import ConfigError, MailConnectorError
from ..project import FileActivity, Project, ReadActivity, SendActivity
from ..records.send import ErrorInfo, SendDefaults
from .files import RecordFormat, iter_records, read_input, write_jsonl

__all__ = ["Source", "SourceItem", "Target", "build_source", "build_target"]


@dataclass
class SourceItem:
    record: dict[str, Any] | None
    ack: Callable[[], None] = field(default=lambda: None)
    error: MailConnectorError | None = None  # the source could not make a record of this item
    label: str = ""


class Source(Protocol):
    def items(self) -> Iterator[SourceItem]: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class Target(Protocol):
    def deliver(self, records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, ErrorInfo | None]]: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------------------ sources
class ReadEmailSource:
    def __init__(self, project: Project, name: str, config: ReadActivity) -> None:
        from .read import ReadEmail, ReadSettings

        settings = {k: v for k, v in (config.model_extra or {}).items()}
        directory = settings.get("directory")
        if directory is not None and not Path(directory).is_absolute():
            settings["directory"] = str(project.directory / directory)
        self.settings = _validated(ReadSettings, settings, project, name)
        if self.settings.directory is not None:
            self.settings.directory.mkdir(parents=True, exist_ok=True)
        self.connection = project.connection(config.connection)
        self.reader = ReadEmail(self.connection, self.settings, store=project.store())
        self.name = name

    @property
    def lease_name(self) -> str:
        return f"read:{self.connection.name}/{self.settings.folder}"

    def items(self) -> Iterator[SourceItem]:
        for item in self.reader.items():
            record = item.record.model_dump(mode="json", by_alias=True)
            yield SourceItem(record, item.ack, label=f"uid {item.uid}")

    def flush(self) -> None:
        self.reader.flush()

    def close(self) -> None:
        self.reader.close()

    def describe(self) -> dict[str, Any]:
        return {"type": "read-email", "connection": self.connection.name,
                **self.settings.model_dump(mode="json", exclude_none=True)}


class FileSource:
    def __init__(self, project: Project, name: str, config: FileActivity) -> None:
        self.config = config
        self.path = config.path if config.path == "-" else str(_resolve(project, config.path))
        self.name = name

    def items(self) -> Iterator[SourceItem]:
        fmt = self.config.format
        path = Path(self.path)
        if fmt == "eml" or (self.path != "-" and path.is_dir()):
            yield from self._eml_items(path)
            return
        data, label = read_input(self.path)
        for i, rec in enumerate(iter_records(data, name=label, fmt=_record_format(fmt))):
            if isinstance(rec, MailConnectorError):
                yield SourceItem(None, error=rec, label=f"record {i}")
            else:
                yield SourceItem(dict(rec), label=f"record {i}")

    def _eml_items(self, directory: Path) -> Iterator[SourceItem]:
        from ..mime.parse import parse_message

        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a directory of .eml files", field="path")
        for path in sorted(directory.glob("*.eml")):
            record = parse_message(path.read_bytes()).model_dump(mode="json", by_alias=True)
            yield SourceItem(record, label=path.name)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"type": "file", "path": self.path, "format": self.config.format}


# ------------------------------------------------------------------------------------------------ targets
class SendEmailTarget:
    def __init__(self, project: Project, name: str, config: SendActivity) -> None:
        from .send import SendEmail, SendSettings

        extra = dict(config.model_extra or {})
        settings_keys = set(SendSettings.model_fields) - {"defaults"}
        settings = {k: extra.pop(k) for k in list(extra) if k in settings_keys}
        defaults = extra.pop("defaults", None) or {}
        defaults.update(extra)  # to, cc, subject, ... given directly on the activity
        if defaults:
            settings["defaults"] = _validated(SendDefaults, defaults, project, name)
        send_settings = _validated(SendSettings, settings, project, name)
        self.connection = project.connection(config.connection)
        self.activity = SendEmail(self.connection, send_settings, store=project.store(), base_dir=project.directory)
        self.name = name

    def deliver(self, records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, ErrorInfo | None]]:
        tickets: list[int] = []

        def feed() -> Iterator[Mapping[str, Any]]:
            for ticket, record in records:
                tickets.append(ticket)
                yield record

        for response in self.activity.send(feed()):
            ok = response.status in ("sent", "partial", "skipped_duplicate", "dry_run")
            yield tickets[response.index], None if ok else response.error

    def close(self) -> None:
        self.activity.close()

    def describe(self) -> dict[str, Any]:
        return {"type": "send-email", "connection": self.connection.name,
                **self.activity.settings.model_dump(mode="json", exclude_none=True)}


class FileTarget:
    def __init__(self, project: Project, name: str, config: FileActivity) -> None:
        self.config = config
        self.path = config.path if config.path == "-" else str(_resolve(project, config.path))
        self.name = name
        self._sink: TextIO | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._json_items: list[dict[str, Any]] = []
        self._fmt = config.format or _format_of(self.path)

    def deliver(self, records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, ErrorInfo | None]]:
        for ticket, record in records:
            try:
                self._write(record)
            except (OSError, ValueError, TypeError) as exc:
                yield ticket, ErrorInfo(type="TargetError", message=f"cannot write to {self.path}: {exc}",
                                        retryable=False)
                continue
            yield ticket, None

    def _open(self) -> TextIO:
        if self._sink is None:
            if self.path == "-":
                self._sink = sys.stdout
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                mode = "a" if self.config.append else "w"
                self._sink = cast(TextIO, open(self.path, mode, encoding="utf-8", newline=""))  # noqa: SIM115
        return self._sink

    def _write(self, record: dict[str, Any]) -> None:
        if self._fmt == "eml":
            self._write_eml(record)
        elif self._fmt == "csv":
            sink = self._open()
            flat = {k: v if isinstance(v, str | int | float) or v is None else json.dumps(v, ensure_ascii=False)
                    for k, v in record.items()}
            if self._csv is None:
                self._csv = csv.DictWriter(sink, fieldnames=list(flat), extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerow(flat)
            sink.flush()
        elif self._fmt == "json":
            self._json_items.append(record)  # a JSON array is written whole, at close
        else:
            write_jsonl(self._open(), record)

    def _write_eml(self, record: dict[str, Any]) -> None:
        import base64

        raw = record.get("raw_base64")
        if not raw and record.get("raw_path"):
            data = Path(str(record["raw_path"])).read_bytes()
        elif raw:
            data = base64.b64decode(str(raw))
        else:
            raise ValueError("an .eml target needs records with raw_base64 or raw_path (include_raw: true)")
        directory = Path(self.path)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{record.get('uidvalidity') or 0}-{record.get('uid') or len(list(directory.iterdir()))}"
        (directory / f"{stem}.eml").write_bytes(data)

    def close(self) -> None:
        if self._fmt == "json" and (self._json_items or self._sink is None):
            sink = self._open()
            json.dump(self._json_items, sink, ensure_ascii=False, indent=2, default=str)
            sink.write("\n")
        if self._sink is not None and self._sink is not sys.stdout:
            self._sink.close()
        self._sink = None

    def describe(self) -> dict[str, Any]:
        return {"type": "file", "path": self.path, "format": self._fmt}


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: Mapping[str, Any], project: Project, name: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc, source=project.source, prefix=f"activities.{name}",
                                           locate=project.doc.line_of) from None


def _record_format(fmt: str | None) -> RecordFormat | None:
    if fmt in ("json", "jsonl", "csv"):
        return cast(RecordFormat, fmt)
    return None


def _format_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".json": "json", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
        suffix, "eml" if path != "-" and (Path(path).is_dir() or not suffix) else "jsonl")


def _resolve(project: Project, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else project.directory / p


def build_source(project: Project, name: str) -> ReadEmailSource | FileSource:
    config = project.activity(name)
    if isinstance(config, ReadActivity):
        return ReadEmailSource(project, name, config)
    if isinstance(config, FileActivity):
        return FileSource(project, name, config)
    raise ConfigError(f"activity {name!r} ({config.type}) cannot be a source", source=project.source)


def build_target(project: Project, name: str) -> SendEmailTarget | FileTarget:
    config = project.activity(name)
    if isinstance(config, SendActivity):
        return SendEmailTarget(project, name, config)
    if isinstance(config, FileActivity):
        return FileTarget(project, name, config)
    raise ConfigError(f"activity {name!r} ({config.type}) cannot be a target", source=project.source)
