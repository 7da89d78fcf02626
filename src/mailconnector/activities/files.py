"""File endpoints: records from and to JSON, JSON Lines and CSV files, standard input and output.

A line or row that cannot be read becomes a ``MessageError`` *in the stream* (not raised), so the
consumer fails that record alone and goes on with the next: nothing else is lost. An input that cannot
be read as its format at all (not text, not JSON, a CSV without records or with unknown columns) is a
``ConfigError``: passing it as "0 records" would hide the mistake. An empty input is a warning only.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import io
import itertools
import json
import logging
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from ..errors import ConfigError, MessageError

__all__ = [
    "DELIMITERS",
    "InputContext",
    "RecordFormat",
    "check_encoding",
    "detect_format",
    "drop_unfinished_line",
    "format_by_suffix",
    "iter_records",
    "open_for_append",
    "parse_delimiter",
    "read_input",
    "write_jsonl",
]

log = logging.getLogger("mailconnector.files")

RecordFormat = Literal["json", "jsonl", "csv"]
_MAX_CSV_FIELD = 64 * 1024 * 1024
# The csv module has no limit per reader, only this process-wide one (128 KiB by default, too small for a
# message body in a cell). Set once, here: a larger limit only lets a reader accept a longer cell, and a
# CSV input is read whole into memory before it is parsed, so no cell can be longer than what is held.
csv.field_size_limit(_MAX_CSV_FIELD)
_SUFFIXES: dict[str, RecordFormat] = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
# What a CSV delimiter may be given as, besides a single character (a tab is awkward to type).
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
_SNIFFED = ",;\t"


@dataclass(frozen=True)
class InputContext:
    """Who gave an input, so that its errors name the right things: the command line's ``--input`` and
    flags, or a project file's file activity, its settings and where its path was written."""

    field: str | None = "--input"
    activity: str | None = None
    where: str | None = None  # e.g. "path: in mailconnector.yaml line 12"

    def option(self, key: str, value: str) -> str:
        """How to set an input option: ``--encoding cp1252``, or ``encoding: cp1252`` on the activity."""
        if self.activity is None:
            return f"--{key} {value}"
        return f"`{key}: {value}` on activity {self.activity!r}"


def check_encoding(name: str) -> str:
    """``name`` if Python can decode text with it; ValueError (naming a few good ones) otherwise."""
    try:
        codecs.lookup(name)
        b"a".decode(name)  # a bytes-to-bytes codec (base64, zlib) is found but decodes no text
    except UnicodeDecodeError:  # a text encoding in which one byte is not enough (utf-16)
        pass
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (e.g. utf-8, cp1252, latin-1, utf-16)") from None
    return name


def parse_delimiter(value: str) -> str:
    """The CSV delimiter character for ``value``: one character, or comma / semicolon / tab / pipe."""
    char = DELIMITERS.get(value.strip().lower(), value) if len(value) != 1 else value
    if len(char) != 1 or char in "\"\r\n\0" or char.isalnum():
        raise ValueError(f"{value!r} cannot separate CSV columns: give one character such as , or ; "
                         f"or one of {', '.join(DELIMITERS)}")
    return char


def detect_format(name: str | None, head: str) -> RecordFormat:
    """The format from the file name's suffix, else from the content: JSON, JSON Lines, or else CSV."""
    by_name = format_by_suffix(name)
    if by_name is not None:
        return by_name
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
    try:  # a lone JSON scalar ("42", "null", a string): JSON, so that it is refused as such
        json.loads(stripped)
        return "json"
    except (ValueError, RecursionError):
        return "csv"


def format_by_suffix(name: str | None) -> RecordFormat | None:
    """The format a file name says by its suffix (``.json``, ``.jsonl``/``.ndjson``, ``.csv``), if any."""
    return _SUFFIXES.get(Path(name).suffix.lower()) if name else None


def read_input(source: str | Path, *, context: InputContext | None = None,
               shown: str | None = None) -> tuple[bytes, str]:
    """The whole input (``-`` = stdin) as bytes, and a name for messages (``shown``, else the path)."""
    ctx = context or InputContext()
    if str(source) == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    path = Path(source)
    name = shown or str(path)
    what = f"activity {ctx.activity!r}: file {name}" if ctx.activity else f"input file {name}"
    where = f" ({ctx.where})" if ctx.where else ""
    try:
        return path.read_bytes(), name
    except FileNotFoundError:
        hint = (f"create {path}, or correct the activity's path (a relative one is read from the project "
                "directory)" if ctx.activity else "check the path; - reads standard input")
        raise ConfigError(f"{what} does not exist{where}", field=ctx.field, hint=hint) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a file of records{where}", field=ctx.field) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}{where}", field=ctx.field) from None


def iter_records(data: bytes, *, name: str | None = None, fmt: RecordFormat | None = None,
                 encoding: str = "utf-8", delimiter: str | None = None, fields: Collection[str] | None = None,
                 context: InputContext | None = None) -> Iterator[Mapping[str, Any] | MessageError]:
    """Records from JSON (an array or one object), JSON Lines or CSV (header row = field names).

    ``delimiter`` None: detected among , ; and tab from the header row. ``fields``: the record fields a CSV
    header may name (others are an error naming them); None accepts any column.
    """
    ctx = context or InputContext()
    label = f"activity {ctx.activity!r}: {name or 'input'}" if ctx.activity else (name or "input")
    text = _decode(data, label, encoding, ctx)
    if not text.strip():
        log.warning("no records in %s: it is empty", label)
        return
    guessed = fmt is None and format_by_suffix(name) is None
    fmt = fmt or detect_format(name, text[:4096])
    if fmt == "json":
        yield from _json_records(text, label, ctx)
    elif fmt == "jsonl":
        yield from _jsonl_records(text, label, ctx)
    else:
        yield from _csv_records(text, label, delimiter, fields, ctx, guessed=guessed)


def _decode(data: bytes, label: str, encoding: str, ctx: InputContext) -> str:
    """The input as text; bytes that are not text in ``encoding`` (or NUL characters) are a ConfigError."""
    try:
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        text = data.decode(codec)
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r}", field=ctx.field,
                          hint="e.g. utf-8, cp1252, latin-1, utf-16") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{label} is not {encoding} text (byte 0x{data[exc.start]:02x} at offset {exc.start}, "
                          f"line {line})", field=ctx.field, hint=_encoding_hint(data, ctx)) from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        hint = (f"it looks like UTF-16: try {ctx.option('encoding', 'utf-16')}" if _looks_utf16(data)
                else "it looks like a binary file; records are JSON, JSON Lines or CSV text")
        raise ConfigError(f"{label} contains a NUL character (line {line}): it is not text in {encoding}",
                          field=ctx.field, hint=hint)
    return text


def _looks_utf16(data: bytes) -> bool:
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return True
    half = len(data) // 2
    return half > 0 and max(data[0::2].count(0), data[1::2].count(0)) > half * 0.4


def _encoding_hint(data: bytes, ctx: InputContext) -> str:
    """A guess at the real encoding of bytes that did not decode, and how to give it."""
    if _looks_utf16(data):
        return f"it looks like UTF-16: try {ctx.option('encoding', 'utf-16')}"
    if b"\0" in data:
        return "it contains NUL bytes: it looks like a binary file, not JSON, JSON Lines or CSV text"
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return f"give its encoding with {ctx.option('encoding', 'NAME')} (e.g. cp1252, latin-1, utf-16)"
    return f"it looks like Latin-1/cp1252 (Windows Western European): try {ctx.option('encoding', 'cp1252')}"


_JSON_KINDS = {bool: "true/false", int: "number", float: "number", str: "string", type(None): "null"}


def _json_records(text: str, label: str, ctx: InputContext) -> Iterator[Mapping[str, Any] | MessageError]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = (f"one object per line is JSON Lines: name the file .jsonl or give {ctx.option('format', 'jsonl')}"
                if exc.msg == "Extra data" else None)
        raise ConfigError(f"{label}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                          field=ctx.field, hint=hint) from None
    except RecursionError:
        raise ConfigError(f"{label}: JSON nested too deeply to be records", field=ctx.field) from None
    if not isinstance(doc, list | Mapping):
        kind = _JSON_KINDS.get(type(doc), type(doc).__name__)
        raise ConfigError(f"{label}: a JSON {kind}, not records", field=ctx.field,
                          hint="give an array of objects, or one object (one record)")
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        log.warning("no records in %s: an empty JSON array", label)
    for i, item in enumerate(items):
        yield item if isinstance(item, Mapping) else MessageError(
            f"record {i}: must be a JSON object, not {_JSON_KINDS.get(type(item), type(item).__name__)}")


def _jsonl_records(text: str, label: str, ctx: InputContext) -> Iterator[Mapping[str, Any] | MessageError]:
    index = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            if index == 0:  # not even the first line: the file is not JSON Lines at all
                hint = (f"a JSON array belongs in a .json file (or {ctx.option('format', 'json')})"
                        if line.strip().startswith("[") else "JSON Lines has one JSON object per line")
                raise ConfigError(f"{label}: line {lineno} is not JSON ({why}): not JSON Lines",
                                  field=ctx.field, hint=hint) from None
            yield MessageError(f"record {index} (line {lineno}): invalid JSON: {why}")
        else:
            yield item if isinstance(item, Mapping) else MessageError(
                f"record {index} (line {lineno}): must be a JSON object, not "
                f"{_JSON_KINDS.get(type(item), type(item).__name__)}")
        index += 1


def _sniff_delimiter(header: str) -> str:
    try:
        return csv.Sniffer().sniff(header, delimiters=_SNIFFED).delimiter
    except csv.Error:  # one column, or nothing that repeats: the default
        return ","


def _csv_records(text: str, label: str, delimiter: str | None, fields: Collection[str] | None,
                 ctx: InputContext, *, guessed: bool) -> Iterator[Mapping[str, Any] | MessageError]:
    header = text.lstrip("\r\n").split("\n", 1)[0].rstrip("\r")
    delim = delimiter or _sniff_delimiter(header)
    as_csv = f"{label} (not JSON, so read as CSV)" if guessed else label
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        columns = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise ConfigError(f"{as_csv}: line {reader.line_num}: {exc}", field=ctx.field) from None
    if not columns:
        raise ConfigError(f"{as_csv}: the first line is empty; a CSV input starts with its header row",
                          field=ctx.field)
    _check_columns(columns, fields, as_csv, header, delim, explicit=delimiter is not None, ctx=ctx)
    rows = _rows(reader, label, ctx)
    first = next(rows, None)
    if first is None:
        raise ConfigError(f"{as_csv}: a header row ({_short(header)}) and no records", field=ctx.field,
                          hint="a CSV input needs a header row and at least one record row; "
                               "an input with nothing to send is an empty file")
    for i, row in enumerate(itertools.chain([first], rows)):
        if None in row:
            yield MessageError(f"record {i} (line {reader.line_num}): more cells than header columns")
        else:
            yield {k: v for k, v in row.items() if k is not None and v not in (None, "")}


def _rows(reader: csv.DictReader[str], label: str, ctx: InputContext) -> Iterator[dict[str, Any]]:
    """The reader's rows; a row the csv module cannot read (an oversized field) stops the input."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConfigError(f"{label}: line {reader.line_num}: {exc}", field=ctx.field) from None
        yield row


def _check_columns(columns: list[str], fields: Collection[str] | None, label: str, header: str, delim: str, *,
                   explicit: bool, ctx: InputContext) -> None:
    """Duplicate columns, and (with ``fields``) columns that name no record field, are ConfigErrors."""
    seen: set[str] = set()
    twice: list[str] = []
    for column in columns:
        (twice if column in seen else []).append(column)
        seen.add(column)
    if twice:
        raise ConfigError(f"{label}: column(s) named twice in the header row: "
                          f"{', '.join(repr(c) for c in dict.fromkeys(twice))}", field=ctx.field)
    if fields is None:
        return
    unknown = [c for c in columns if c not in fields]
    if not unknown:
        return
    named = []
    for column in unknown:
        close = difflib.get_close_matches(column.strip().lower(), list(fields), n=1)
        named.append(repr(column) + (f" (did you mean {close[0]!r}?)" if close else ""))
    what = "names no record field" if len(unknown) == len(columns) else "names unknown column(s)"
    others = [d for d in _SNIFFED if d != delim and d in header]
    if others and not explicit:
        hint = (f"if {others[0]!r} separates the columns, give "
                f"{ctx.option('delimiter', 'tab' if others[0] == chr(9) else repr(others[0]))}")
    else:
        hint = (f"the header row names record fields: {', '.join(sorted(fields))} "
                "(see `mailconnector schema send-request`)")
    raise ConfigError(f"{label}: the header row {what}: {', '.join(named)}", field=ctx.field, hint=hint)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def write_jsonl(sink: TextIO, item: Mapping[str, Any]) -> None:
    sink.write(json.dumps(item, ensure_ascii=False, default=str))
    sink.write("\n")
    sink.flush()


def open_for_append(path: Path) -> TextIO:
    """Open a records file for appending, after dropping a last line that a killed run left unfinished."""
    drop_unfinished_line(path)
    return cast(TextIO, open(path, "a", encoding="utf-8", newline=""))


def drop_unfinished_line(path: Path) -> None:
    """Cut a file back to its last complete line.

    A record counts as written once its whole line is flushed, so the record of an unfinished line was
    never reported written, its source item never acknowledged: it comes again, and dropping the fragment
    loses nothing while keeping the file one record per line.
    """
    with contextlib.suppress(FileNotFoundError), open(path, "rb+") as existing:
        end = existing.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - 65536)
            existing.seek(start)
            chunk = existing.read(pos - start)
            if pos == end and chunk.endswith(b"\n"):
                return  # complete
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                existing.truncate(start + cut + 1)
                return
            pos = start
        existing.truncate(0)
