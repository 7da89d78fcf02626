"""Logging: the ``mailconnector.*`` logger tree, ``--debug``, ``--verbose-protocol``, JSON logs, redaction.

Loggers: ``mailconnector`` with children ``smtp``, ``imap``, ``auth``, ``send``, ``read``, ``operations``,
``store``, ``sandbox``, ``cli``; the wire conversation goes to ``mailconnector.protocol.smtp`` and
``mailconnector.protocol.imap`` at DEBUG, and only when asked for. Every handler installed here redacts
credentials twice: by protocol (AUTH payloads, LOGIN arguments) where the line is produced, and by
value (every secret resolved from the configuration) where it is written.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, ParamSpec, TypeVar

from .secrets import REDACTED, redact

__all__ = ["RedactingFormatter", "configure_logging", "in_this_run", "json_line", "redact_imap_line",
           "redact_smtp_line", "run_context"]

ROOT = "mailconnector"
PROTOCOL = "mailconnector.protocol"

_AUTH_CMD = re.compile(r"^(\s*AUTH\s+\S+)(\s+.*)?$", re.IGNORECASE | re.DOTALL)
_IMAP_SECRET_CMD = re.compile(r"^(\S+\s+(?:UID\s+)?(?:LOGIN|AUTHENTICATE))\s+.*$", re.IGNORECASE | re.DOTALL)


def redact_smtp_line(line: str, *, in_auth: bool) -> str:
    """Redact one client line of an SMTP conversation (``in_auth``: the server asked for a SASL response)."""
    m = _AUTH_CMD.match(line)
    if m:
        return f"{m.group(1)} {REDACTED}" if m.group(2) and m.group(2).strip() else m.group(1)
    if in_auth:
        return REDACTED
    return line


def redact_imap_line(line: str, *, in_auth: bool = False) -> str:
    """Redact one client line of an IMAP conversation."""
    m = _IMAP_SECRET_CMD.match(line)
    if m:
        return f"{m.group(1)} {REDACTED}"
    if in_auth:
        return REDACTED
    return line


# The operation run a thread is working for: (run id, operation). Every log line written meanwhile carries
# them, so that a run's lines can be picked out of a shared log (and by the web console).
_RUN: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("mailconnector_run", default=None)
P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def run_context(run_id: str, operation: str) -> Iterator[None]:
    """Log lines written inside (in this thread, and in threads started with ``in_this_run``) name the run."""
    token = _RUN.set((run_id, operation))
    try:
        yield
    finally:
        _RUN.reset(token)


def in_this_run(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the caller's run: for the worker threads a run starts (they begin with no context)."""
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)  # a copy each: a context runs in one thread at a time

    return run


class RedactingFormatter(logging.Formatter):
    """Formats, then removes every known secret value from the result (message, args and traceback)."""

    def __init__(self, fmt: str | None = None, *, json_lines: bool = False) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)-7s %(name)s%(run)s: %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        run = _RUN.get()
        if run is not None and not hasattr(record, "run_id"):
            record.run_id, record.operation = run
        if not self.json_lines:
            run_id = getattr(record, "run_id", None)
            record.run = f" [run {run_id}]" if run_id else ""
            return redact(super().format(record))
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "operation", "record", "uid", "message_id", "error"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, ensure_ascii=False, default=str))


def json_line(message: str, *, level: int = logging.INFO, logger: str = f"{ROOT}.cli", **fields: Any) -> str:
    """A message that is no log record (a command's summary, the error it ended with) as one JSON line with
    the fields of the log records, so that one parser reads the whole of stderr; secrets removed.

    ``fields`` are the extra keys the JSON formatter knows (``run_id``, ``error``, ...).
    """
    record = logging.LogRecord(logger, level, __file__, 0, message, None, None)
    for key, value in fields.items():
        setattr(record, key, value)
    return RedactingFormatter(json_lines=True).format(record)


_installed: list[logging.Handler] = []
_routed: list[str] = []


def configure_logging(*, debug: bool = False, verbose_protocol: bool = False, log_format: str = "text",
                      stream: IO[str] | None = None, level: int = logging.WARNING, also: Sequence[str] = ()) -> None:
    """Install one redacting handler on ``mailconnector`` (and on ``imapclient`` for the wire log).

    Without ``--debug`` only ``level`` and above is shown (a command: warnings and errors, since its results go
    to stdout; a worker: info too). ``also``: other libraries' loggers (a worker's ``celery``) in the same format.
    """
    for h in _installed:
        for name in (ROOT, "imapclient", *_routed):
            logging.getLogger(name).removeHandler(h)
    _installed.clear()
    _routed[:] = list(also)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(json_lines=log_format == "json"))
    root = logging.getLogger(ROOT)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else level)
    root.propagate = False
    for name in also:
        other = logging.getLogger(name)
        other.addHandler(handler)
        other.setLevel(logging.DEBUG if debug else level)
        other.propagate = False
    proto = logging.getLogger(PROTOCOL)
    proto.setLevel(logging.DEBUG if verbose_protocol else logging.WARNING)
    if verbose_protocol:
        # IMAPClient logs the commands it builds itself; route them through the same redacting handler.
        lib = logging.getLogger("imapclient")
        lib.addHandler(handler)
        lib.setLevel(logging.DEBUG)
        lib.propagate = False
    else:
        logging.getLogger("imapclient").setLevel(logging.WARNING)
    _installed.append(handler)

