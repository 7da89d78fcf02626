"""Option values checked as the command line is read: a bad value is a usage error (exit 2), said in one
line that names the valid values, before any project file is opened or any server contacted.

Configuration errors (exit 3) are for the project file; what a person typed on the command line is usage.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "after_read_option",
    "attachments_option",
    "criteria_option",
    "delimiter_option",
    "encoding_option",
    "format_option",
    "rate_limit_option",
    "usage_error",
]

_AFTER_READ = ("mark_read", "keep_unread", "delete", "move:FOLDER")


def usage_error(exc: ValidationError, flags: Mapping[str, str] | None = None) -> typer.BadParameter:
    """A settings model's validation error about command-line values, as one usage error naming the flags.

    ``flags`` maps a settings field to its option where the names differ (``directory`` -> ``--attachments``).
    """
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        flag = (flags or {}).get(loc[0], "--" + loc[0].replace("_", "-")) if loc else ""
        msg = str(err.get("msg", "invalid"))
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        problems.append(f"{flag}: {msg}" if flag else msg)
    return typer.BadParameter("; ".join(problems))


def encoding_option(value: str) -> str:
    from ..activities.files import check_encoding

    try:
        return check_encoding(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def delimiter_option(value: str | None) -> str | None:
    from ..activities.files import parse_delimiter

    if value is None:
        return None
    try:
        return parse_delimiter(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def format_option(value: str | None) -> str | None:
    if value is None or value in ("json", "jsonl", "csv"):
        return value
    close = difflib.get_close_matches(value.lower().lstrip("."), ["json", "jsonl", "csv"], n=1)
    guess = f"; did you mean {close[0]}?" if close and close[0] != value else ""
    raise typer.BadParameter(f"{value!r} is not one of json, jsonl, csv{guess}")


def rate_limit_option(value: float | None) -> float | None:
    if value is not None and not value > 0:  # `not >` also refuses NaN
        raise typer.BadParameter(f"{value:g} messages per second would send nothing: give a number above 0 "
                                 "(0.5 = one message every 2 seconds), or leave --rate-limit out for no limit")
    return value


def after_read_option(value: str) -> str:
    if value in _AFTER_READ[:3]:
        return value
    if value.startswith("move:"):
        if not value[5:].strip():
            raise typer.BadParameter(f"move: needs a folder name, e.g. move:Archive (got {value!r})")
        if not value.isprintable():
            raise typer.BadParameter("the folder name after move: contains a control character")
        return value
    close = difflib.get_close_matches(value.lower().replace("-", "_"), _AFTER_READ[:3], n=1)
    guess = close[0] if close else f"move:{value}"
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(_AFTER_READ)}; did you mean {guess}?")


def criteria_option(value: str | None) -> str | None:
    from ..activities._search import search_problem

    if value is None or not value.strip():
        return value
    problem = search_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


def attachments_option(value: str) -> str:
    """inline, none, or a directory: an existing one, or a value written as a path (``./files``, ``~/in``,
    ``out/files``), so that a mistyped choice does not quietly become a new directory."""
    if value in ("inline", "none"):
        return value
    path = Path(value).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise typer.BadParameter(f"{value} is a file, not a directory; choices: inline, none, or a DIRECTORY")
    if "/" in value or value.startswith((".", "~")):
        return str(path)
    close = difflib.get_close_matches(value.lower(), ["inline", "none"], n=1)
    guess = f"did you mean {close[0]}? " if close else ""
    raise typer.BadParameter(f"{value!r} is not inline or none, nor an existing directory; {guess}to write the "
                             f"attachments to a new directory, write it as a path: ./{value}")
