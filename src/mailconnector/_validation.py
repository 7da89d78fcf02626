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


def _problems(exc: ValidationError, prefix: str | None, locate: Locate | None) -> list[tuple[int | None, str, str]]:
    """(line, path, what is wrong) for each problem pydantic found."""
    found: list[tuple[int | None, str, str]] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc: list[str | int] = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        full: list[str | int] = [*(prefix.split(".") if prefix else []), *loc]
        named = _LEADING_PATH.match(_message(err)) if not loc else None
        line = locate([*full, *named.group(1).split(".")] if named else full) if locate else None
        found.append((line, loc_to_path(full), _message(err)))
    return found


def describe_validation_error(exc: ValidationError, *, prefix: str | None = None,
                              locate: Locate | None = None) -> list[str]:
    """One line per problem: ``[line N: ]path: what is wrong``."""
    return [": ".join(p for p in (f"line {line}" if line else "", path, message) if p)
            for line, path, message in _problems(exc, prefix, locate)]


def config_error_from_validation(exc: ValidationError, *, source: str | None = None,
                                 prefix: str | None = None, locate: Locate | None = None) -> ConfigError:
    """One problem keeps its line and field apart (a console can point at them); several are listed."""
    hint = "fix the field(s) named above; `mailconnector schema project` shows every field"
    problems = _problems(exc, prefix, locate)
    if len(problems) == 1:
        line, path, message = problems[0]
        return ConfigError(message, source=source, line=line, field=path or None, hint=hint)
    lines = describe_validation_error(exc, prefix=prefix, locate=locate)
    return ConfigError(f"{len(lines)} problems:\n  " + "\n  ".join(lines), source=source, hint=hint)
