"""A record as the operation log keeps it beside its error: enough for a person to recognise it and see what
was wrong, never its bulk (an attachment's base64, a long body) and never more than a few kilobytes."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_CHARS", "excerpt"]

MAX_CHARS = 4000  # the whole excerpt, as JSON
_STRING = 300  # one string value
_ITEMS = 20  # items of one list or object
_DEPTH = 4


def excerpt(record: Any) -> Any:
    """``record`` with long strings cut (saying how long they were), long lists and deep nesting elided;
    when still too long as JSON, its top-level keys with their values cut to one line each."""
    small = _cut(record, 0)
    if len(json.dumps(small, ensure_ascii=False, default=str)) <= MAX_CHARS:
        return small
    if isinstance(small, dict):
        out: dict[str, Any] = {}
        used = 2
        for key, value in small.items():
            line = json.dumps(value, ensure_ascii=False, default=str)
            line = line if len(line) <= 80 else line[:79] + "…"
            used += len(key) + len(line) + 6
            if used > MAX_CHARS:
                out["…"] = f"{len(small) - len(out)} more field(s)"
                break
            out[str(key)] = line
        return out
    return _cut_string(json.dumps(small, ensure_ascii=False, default=str), MAX_CHARS)


def _cut(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _cut_string(value, _STRING)
    if isinstance(value, bytes | bytearray):
        return f"({len(value)} bytes)"
    if isinstance(value, dict):
        if depth >= _DEPTH:
            return f"({len(value)} field(s))"
        items = list(value.items())
        out = {str(k): _cut(v, depth + 1) for k, v in items[:_ITEMS]}
        if len(items) > _ITEMS:
            out["…"] = f"{len(items) - _ITEMS} more field(s)"
        return out
    if isinstance(value, list | tuple):
        if depth >= _DEPTH:
            return f"({len(value)} item(s))"
        cut = [_cut(v, depth + 1) for v in value[:_ITEMS]]
        if len(value) > _ITEMS:
            cut.append(f"… {len(value) - _ITEMS} more item(s)")
        return cut
    if value is None or isinstance(value, bool | int | float):
        return value
    return _cut_string(str(value), _STRING)


def _cut_string(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"
