"""Writing records to files, as a file target does: a JSON array and each email's ``.eml`` are replaced whole
and atomically (a reader never sees half a file, a crash leaves the old one), and the header of a CSV file
already there is read so that appended rows keep its columns."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["csv_header", "write_eml", "write_json_array"]


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_array(path: Path, items: list[dict[str, Any]], *, append: bool) -> None:
    """The records as one JSON array; with ``append``, after the records of the array already there."""
    if append and path.exists() and path.stat().st_size:
        existing = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(existing, list):
            raise ValueError("append: the existing file is not a JSON array")
        items = existing + items
    text = json.dumps(items, ensure_ascii=False, indent=2, default=str) + "\n"
    _replace_atomically(path, text.encode("utf-8"))


def write_eml(directory: Path, record: dict[str, Any]) -> None:
    """The email a read record came from, as ``.eml`` in ``directory``. The same email gets the same name, so
    writing it again (after a run died before its ack) replaces it."""
    raw = record.get("raw_base64")
    if not raw and record.get("raw_path"):
        data = Path(str(record["raw_path"])).read_bytes()
    elif raw:
        data = base64.b64decode(str(raw))
    else:
        raise ValueError("an .eml target needs records with raw_base64 or raw_path (include_raw: true)")
    if record.get("uid"):
        name = f"{record.get('uidvalidity') or 0}-{record['uid']}.eml"
    else:
        name = f"{hashlib.sha256(data).hexdigest()[:20]}.eml"
    _replace_atomically(directory / name, data)


def csv_header(path: Path) -> list[str] | None:
    """The columns of a CSV file already there (None: no file, or an empty one)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    if not first.strip():
        return None
    return next(csv.reader(io.StringIO(first)))
