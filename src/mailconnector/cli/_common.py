"""What every command shares: the common options, the project, output on stdout, messages on stderr."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ..errors import MailConnectorError
from ..logs import configure_logging

if TYPE_CHECKING:
    from ..project import Project

__all__ = [
    "EXIT_CODES_HELP",
    "DebugOpt",
    "JsonOpt",
    "LogFormatOpt",
    "ProjectOpt",
    "Session",
    "VerboseOpt",
    "emit_json",
    "print_error",
    "progress",
    "start",
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

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


@dataclass
class Session:
    """A command's context: its project (loaded on first use) and output mode."""

    project_path: Path | None
    json: bool = False
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
    return Session(project, json=json_output)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_error(exc: MailConnectorError) -> None:
    err_console.print(f"[bold red]error[/] ({exc.kind}): {_escape(exc.message)}")
    if exc.hint:
        err_console.print(f"[yellow]hint[/]: {_escape(exc.hint)}")


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
    """A progress bar on stderr, only when stderr is a terminal (never in pipes, logs or CI)."""
    if not err_console.is_terminal:
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        yield _RichProgress(bar, bar.add_task(description, total=total))
