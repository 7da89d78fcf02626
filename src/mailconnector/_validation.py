"""Turn pydantic's validation errors into one ``ConfigError`` that names file, line and field in words."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from .errors import ConfigError

__all__ = ["config_error_from_validation", "describe_validation_error", "loc_to_path"]

Locate = Callable[[Sequence[str | int]], int | None]

# A model-level check names the field it is about at the start of its message ("smtp.port: ...").
_LEADING_PATH = re.compile(r"^([A-Za-z_]+(?:\.[A-Za-z_]+)+): ")

_REWRITES = {
    "extra_forbidden": "unknown field",
    "missing": "is required",
}


def loc_to_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: Any) -> str:
    kind = err.get("type", "")
    if kind in _REWRITES:
        return _REWRITES[kind]
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def describe_validation_error(exc: ValidationError, *, prefix: str | None = None,
                              locate: Locate | None = None) -> list[str]:
    """One line per problem: ``[line N: ]path: what is wrong``."""
    lines: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc: list[str | int] = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        full: list[str | int] = [*(prefix.split(".") if prefix else []), *loc]
        path = loc_to_path(full)
        named = _LEADING_PATH.match(_message(err)) if not loc else None
        line = locate([*full, *named.group(1).split(".")] if named else full) if locate else None
        where = f"line {line}: " if line else ""
        lines.append(f"{where}{path}: {_message(err)}" if path else f"{where}{_message(err)}")
    return lines


def config_error_from_validation(exc: ValidationError, *, source: str | None = None,
                                 prefix: str | None = None, locate: Locate | None = None) -> ConfigError:
    lines = describe_validation_error(exc, prefix=prefix, locate=locate)
    head = lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines)
    return ConfigError(head, source=source, hint="fix the field(s) named above; `mailconnector schema project` "
                       "shows every field")
