"""What every command shares: the common options, the project, output on stdout, messages on stderr."""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ..errors import MailConnectorError
from ..logs import configure_logging, json_line
from ..secrets import redact
from ._advice import advised, advising
from ._exit_codes import exit_code_for

if TYPE_CHECKING:
    from ..project import Project

__all__ = [
    "EXIT_CODES_HELP",
    "MODE",
    "DebugOpt",
    "JsonOpt",
    "LogFormatOpt",
    "OutputMode",
    "ProjectOpt",
    "Session",
    "VerboseOpt",
    "emit_json",
    "guess_mode",
    "print_error",
    "print_table",
    "progress",
    "report_failure",
    "start",
    "with_session",
]

ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-p", help="Project file (default: $MAILCONNECTOR_PROJECT or ./mailconnector.yaml).",
                 show_default=False),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Debug logging on stderr.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose-protocol", help="Log the SMTP/IMAP conversation (credentials redacted).")
]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="Log format on stderr: text or json.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout, for scripts.")]

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 some records failed; 2 usage error; 3 configuration; 4 authentication; "
    "5 connection or TLS; 6 server refused; 7 message could not be composed or parsed; 8 local state; "
    "10 unexpected error; 130 interrupted."
)


@dataclass
class OutputMode:
    """How this run reports: ``json_logs`` (``--log-format json``: every message on stderr is a JSON line)
    and ``json_result`` (``--json``: a failure also prints a JSON error document on stdout)."""

    json_logs: bool = False
    json_result: bool = False


MODE = OutputMode()


def guess_mode(argv: Sequence[str]) -> None:
    """Set MODE from the raw command line, before it is parsed, so that errors found while parsing it (usage
    errors) already follow --json and --log-format json; ``start`` then sets it from the parsed options."""
    args = list(itertools.takewhile(lambda a: a != "--", argv))
    MODE.json_result = "--json" in args
    MODE.json_logs = "--log-format=json" in args or any(
        a == "--log-format" and b == "json" for a, b in itertools.pairwise(args))


class _MessageConsole(Console):
    """The console of messages on stderr. On a terminal: rich as usual. Elsewhere (cron, pipes, files): one
    line per message, never wrapped at a width (rich would wrap at 80 columns, or at $COLUMNS). With
    ``--log-format json``: each message is a JSON object on a line, with the fields of the log records."""

    _json_lock = threading.Lock()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if MODE.json_logs and all(isinstance(o, str | Text) for o in objects):
            markup = kwargs.get("markup") is not False
            plain = " ".join(o.plain if isinstance(o, Text) else Text.from_markup(o).plain if markup else o
                             for o in objects)
            self.write_json_line(json_line(plain))
            return
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)

    def write_json_line(self, line: str) -> None:
        with self._json_lock:
            self.file.write(line + "\n")
            self.file.flush()


err_console = _MessageConsole(stderr=True, highlight=False)
out_console = Console(highlight=False)


@dataclass
class Session:
    """A command's context: its project (loaded on first use) and output mode."""

    project_path: Path | None
    json: bool = False
    debug: bool = False
    log_format: str = "text"
    _project: Project | None = None

    @property
    def project(self) -> Project:
        if self._project is None:
            from ..project import Project

            self._project = Project.load(self.project_path)
            if self._project.uses_oauth2:
                from ..auth.oauth2 import use_store

                use_store(self._project.store())  # OAuth2 tokens survive between runs (file mode 0600)
        return self._project


def start(project: Path | None = None, *, debug: bool = False, verbose_protocol: bool = False,
          log_format: str = "text", json_output: bool = False) -> Session:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--log-format")
    configure_logging(debug=debug, verbose_protocol=verbose_protocol, log_format=log_format)
    MODE.json_logs, MODE.json_result = log_format == "json", json_output
    return Session(project, json=json_output, debug=debug, log_format=log_format)


R = TypeVar("R")
# The options every command that reads the project shares, in the order its --help lists them (last).
_COMMON: dict[str, tuple[Any, Any]] = {
    "project": (ProjectOpt, None),
    "json_output": (JsonOpt, False),
    "debug": (DebugOpt, False),
    "verbose_protocol": (VerboseOpt, False),
    "log_format": (LogFormatOpt, "text"),
}


def with_session(*, json: bool = False, verbose: bool = True, log_format: bool = True,
                 advice: Mapping[str, str] | None = None) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the common options (--project, --debug, and --json, --verbose-protocol, --log-format as
    asked) and call it with its started :class:`Session` first: written once here, not in every command.
    ``advice``: what the command adds to the hint of an error of that topic (see ``_advice``).

    typer reads the command's parameters from the returned function's signature: the command's own ones
    (without the session), then the common ones.
    """
    names = [name for name, wanted in (("project", True), ("json_output", json), ("debug", True),
                                       ("verbose_protocol", verbose), ("log_format", log_format)) if wanted]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]  # the session goes

        @functools.wraps(command)
        def run(**options: Any) -> R:
            common = {name: options.pop(name) for name in names}
            session = start(common.get("project"), debug=common["debug"],
                            verbose_protocol=common.get("verbose_protocol", False),
                            log_format=common.get("log_format", "text"), json_output=common.get("json_output", False))
            with advising(advice or {}):
                return command(session, **options)

        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_COMMON[name][1],
                                   annotation=_COMMON[name][0]) for name in names]
        run.__signature__ = inspect.Signature([*own, *extra])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
        return run

    return decorate


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(table: Any) -> None:
    """A table on stdout: fitted to a terminal; elsewhere (a pipe, a file) at its natural width, so that no
    cell is cut to fit $COLUMNS or 80 columns that nobody is looking at."""
    if out_console.is_terminal:
        out_console.print(table)
    else:
        Console(file=sys.stdout, width=100_000, highlight=False).print(table)


def print_error(exc: MailConnectorError) -> None:
    """The error a command ended with: see ``report_failure``."""
    where = {k: v for k in ("source", "line", "field") if (v := getattr(exc, k, None)) is not None}
    report_failure(exc.kind, exc.message, advised(exc.hint, exc.topic, {}), exit_code_for(exc), where=where)


def report_failure(kind: str, message: str, hint: str | None, exit_code: int, *,
                   text: Sequence[str] | None = None, where: dict[str, Any] | None = None) -> None:
    """How a run that failed says so. On stderr: the message and its hint (``text``: rich markup lines instead),
    or with --log-format json one JSON line at level error. With --json, also one JSON document on stdout:
    ``{"ok": false, "error": {"type", "message", "hint", "exit_code"}}``, so a script that reads stdout
    gets an answer whatever happened; ``where`` adds the place of a configuration or record error (``source``,
    ``line``, ``field``), which the message also names. Secrets removed from both."""
    message, hint = redact(message), redact(hint) if hint else None
    error: dict[str, Any] = {"type": kind, "message": message, "hint": hint, "exit_code": exit_code, **(where or {})}
    if MODE.json_result:
        sys.stdout.write(redact(json.dumps({"ok": False, "error": error}, ensure_ascii=False)) + "\n")
        sys.stdout.flush()
    if MODE.json_logs:
        err_console.write_json_line(json_line(message, level=logging.ERROR, error=error))
        return
    lines = list(text or [f"[bold red]error[/] ({kind}): {_escape(message)}"])
    if text is None and hint:
        lines.append(f"[yellow]hint[/]: {_escape(hint)}")
    for line in lines:
        err_console.print(line)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass


class _RichProgress:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_total(self, total: int | None) -> None:
        self._progress.update(self._task, total=total)


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[_NoProgress | _RichProgress]:
    """A progress bar on stderr, only when stderr is a terminal (never in pipes, logs or CI), and not among
    JSON log lines."""
    if not err_console.is_terminal or MODE.json_logs:
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        yield _RichProgress(bar, bar.add_task(description, total=total))
