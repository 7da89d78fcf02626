"""The program's entry point run in this process as a fresh run would see it: its own cwd, environment, streams,
logging set-up and a fresh process context (so redaction by value knows only what the run itself resolved, and
no TLS context, token provider or token store is left over from another run)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailconnector._context import Context, swap_context
from mailconnector.cli import main

__all__ = ["Result", "cli"]

_LOGGERS = ("mailconnector", "mailconnector.protocol", "imapclient")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_flat(self) -> str:
        """stderr without the line wrapping, for messages longer than the terminal."""
        return " ".join(self.stderr.split())


def cli(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, *, columns: int = 200) -> Result:
    """Run the program in this process as a fresh run would: its cwd, environment, streams and secrets."""
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    saved_logging = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    saved_context = swap_context(Context())  # a fresh process knows no secret until it resolves one
    os.environ.pop("MAILCONNECTOR_PROJECT", None)
    os.environ.update({"COLUMNS": str(columns), **(env or {})})
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for lg, level, propagate, handlers in saved_logging:
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers
        swap_context(saved_context)
    return Result(code, out.getvalue(), err.getvalue())
