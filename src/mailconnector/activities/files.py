"""File endpoints: records from and to JSON, JSON Lines and CSV files, standard input and output.

A line or row that cannot be read becomes a ``MessageError`` *in the stream* (not raised), so the
consumer fails that record alone and goes on with the next: nothing else is lost.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

from ..errors import ConfigError, MessageError

__all__ = ["RecordFormat", "detect_format", "iter_records", "read_input", "write_jsonl"]

RecordFormat = Literal["json", "jsonl", "csv"]
_MAX_CSV_FIELD = 64 * 1024 * 1024


def detect_format(name: str | None, head: str) -> RecordFormat:
    suffix = Path(name).suffix.lower() if name else ""
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    stripped = head.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        # One object per line, or one (possibly multi-line) object.
        first = stripped.split("\n", 1)[0].strip()
        try:
            json.loads(first)
            return "jsonl"
        except ValueError:
            return "json"
    return "csv"


def read_input(source: str | Path) -> tuple[bytes, str]:
    """The whole input (``-`` = stdin) as bytes, and a name for messages."""
    if str(source) == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise ConfigError(f"input file {path} does not exist", field="--input") from None
    except OSError as exc:
        raise ConfigError(f"cannot read input file {path}: {exc.strerror}", field="--input") from None


def iter_records(data: bytes, *, name: str | None = None,
                 fmt: RecordFormat | None = None) -> Iterator[Mapping[str, Any] | MessageError]:
    """Records from JSON (an array or one object), JSON Lines or CSV (header row = field names)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name or 'input'} is not UTF-8 (byte {exc.start})", field="--input") from None
    fmt = fmt or detect_format(name, text[:4096])
    if fmt == "json":
        try:
            doc = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name or 'input'}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}", field="--input") from None
        items = doc if isinstance(doc, list) else [doc]
        for i, item in enumerate(items):
            yield item if isinstance(item, Mapping) else MessageError(
                f"record {i}: must be a JSON object, not {type(item).__name__}")
    elif fmt == "jsonl":
        index = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield MessageError(f"record {index} (line {lineno}): invalid JSON: {exc.msg}")
            else:
                yield item if isinstance(item, Mapping) else MessageError(
                    f"record {index} (line {lineno}): must be a JSON object, not {type(item).__name__}")
            index += 1
    else:
        csv.field_size_limit(_MAX_CSV_FIELD)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for i, row in enumerate(reader):
            if None in row:
                yield MessageError(f"record {i} (line {reader.line_num}): more cells than header columns")
                continue
            yield {k: v for k, v in row.items() if k is not None and v not in (None, "")}


def write_jsonl(sink: TextIO, item: Mapping[str, Any]) -> None:
    sink.write(json.dumps(item, ensure_ascii=False, default=str))
    sink.write("\n")
    sink.flush()
