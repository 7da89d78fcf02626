"""Pydantic's errors for a send record, turned into messages that name the record and its bad fields.

Records are written by people (CSV cells, JSON lines), so a message says where the problem is in their
terms (``to[1]``, ``attachments[0].path``), suggests a field name close to a misspelt one, and never
repeats a value whose field name looks like it holds a secret.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from mailconnector.mime._addresses import looks_secret, short
from mailconnector.records._send_checks import FieldProblem

__all__ = ["Loc", "describe", "record_label"]

Loc = tuple[int | str, ...]


def _loc_text(loc: Loc) -> str:
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item == "[key]":
            continue
        else:
            out += f".{item}" if out else item
    return out


def record_label(data: Mapping[str, Any], index: int) -> str:
    """The record's ``id`` when it has one, since that is what the caller can look up; else its index."""
    rid = data.get("id")
    if isinstance(rid, str | int) and not isinstance(rid, bool) and str(rid).strip():
        return f"record {short(str(rid), 40)}"
    return f"record {index}"


def describe(error: Mapping[str, Any], allowed_fields: Callable[[Loc], list[str]]) -> tuple[str, str]:
    """(field path, message) for one pydantic error; ``allowed_fields`` names the fields beside a location."""
    loc: Loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldProblem) and cause.field:
        loc = (*loc, cause.field)
    field = _loc_text(loc)
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, allowed_fields(loc[:-1]), n=1)
        return field, "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return field, "is required"
    secret = looks_secret(field)
    if isinstance(cause, ValueError):
        message = str(cause)
        if secret and isinstance(error.get("input"), str):
            message = message.replace(short(error["input"]), "the value")
        return field, message
    message = str(error.get("msg", "is not valid"))
    if "input" in error and not secret:
        message += f" (got {short(error['input'])})"
    return field, message
