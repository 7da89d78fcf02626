"""The ``mailconnector`` command: one typer app; each error family leaves with its own exit code."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..errors import MailConnectorError
from ..secrets import redact
from ._common import EXIT_CODES_HELP, MODE, guess_mode, print_error, report_failure
from ._exit_codes import exit_code_for

__all__ = ["app", "exit_code_for", "main"]

# ------------------------------------------------------------------------------------------ plain help
# typer (0.2x) shows a parameter's Python type in --help: `<bool>` beside every flag, `<list[Path]>`, and
# `{connection}` for a required argument. Users read `TEXT`, `PATH`, `CONNECTION`, and nothing for a flag:
# the classes below say that, and the app's group puts them in place of typer's through the command tree.
_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN", "path": "PATH", "file": "FILE",
          "directory": "DIRECTORY", "datetime": "DATETIME", "int range": "INTEGER RANGE",
          "float range": "FLOAT RANGE"}


def _plain_type(shown: str | None) -> str | None:
    """`<list[Path]>` as `PATH`, `<int range>` as `INTEGER RANGE`, `<a|b>` as `[a|b]`."""
    if not shown:
        return shown
    inner = shown.removeprefix("<").removesuffix(">")
    while inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list["):-1]
    return _WORDS.get(inner.lower(), f"[{inner}]" if "|" in inner else inner.upper())


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return _plain_type(self.display_type(ctx))


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return _plain_type(self.display_type(ctx))

    def _usage_display_name(self) -> str:
        name = self.metavar or self.display_name_raw.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def _plain_params(params: list[Any]) -> None:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _PlainOption
        elif type(param) is TyperArgument:
            param.__class__ = _PlainArgument


class _PlainCommand(TyperCommand):
    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_params([option])
        return option


class _PlainGroup(TyperGroup):
    """The app's group: every command under it (and its parameters) shows plain metavars in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _make_plain(self)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_params([option])
        return option


def _make_plain(command: Any) -> None:
    _plain_params(command.params)
    if type(command) is TyperCommand:
        command.__class__ = _PlainCommand
    elif type(command) is TyperGroup:
        command.__class__ = _PlainGroup
    for sub in getattr(command, "commands", {}).values():
        _make_plain(sub)


app = typer.Typer(
    name="mailconnector",
    help="Send and read email for integration work: SMTP + IMAP connections, a step-by-step connection "
    "Test, Send Email and Read Email activities, operations with logs.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=_PlainGroup,
)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("mailconnector")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from .. import __version__ as installed
    sys.stdout.write(f"mailconnector {installed}\n")
    raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_print_version,
                                               help="Print the installed version (mailconnector X.Y.Z) and exit.")]
    = False,
) -> None:
    """The options of the program itself (each command has its own)."""

from . import (  # noqa: E402  (registers commands)
    auth_cmd,
    connection_cmds,
    console_cmd,
    ledger_cmd,
    project_cmds,
    read_cmd,
    sandbox_cmd,
    send_cmd,
    state_cmd,
    worker_cmd,
)

# The whole command line in one table, in the order --help lists it: (name, command or group of commands).
for _name, _command in (
    ("test", connection_cmds.test_cmd), ("folders", connection_cmds.folders_cmd),
    ("send", send_cmd.send_cmd), ("read", read_cmd.read_cmd),
    ("run", project_cmds.run_cmd), ("logs", project_cmds.logs_cmd), ("schema", project_cmds.schema_cmd),
    ("init", project_cmds.init_cmd),
    ("sandbox", sandbox_cmd.sandbox_app), ("auth", auth_cmd.auth_app), ("ledger", ledger_cmd.ledger_app),
    ("state", state_cmd.state_app), ("console", console_cmd.console_cmd), ("worker", worker_cmd.worker_cmd),
):
    if isinstance(_command, typer.Typer):
        app.add_typer(_command, name=_name)
    else:
        app.command(_name)(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns errors into one message, one hint and one exit code.

    Commands end with ``typer.Exit(code)``; usage errors leave with 2. typer prints those itself, except
    under --json or --log-format json: then they come back here, to be reported as JSON like any error.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    guess_mode(args)
    # pydantic looks for plugins (observers of validation) through every installed package's entry points
    # when it builds the first model: a noticeable part of a command's start, for nothing the command uses.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        if MODE.json_result or MODE.json_logs:
            result = app(args=args, prog_name="mailconnector", standalone_mode=False)
            sys.exit(result if isinstance(result, int) else 0)
        app(args=args, prog_name="mailconnector")
    except MailConnectorError as exc:
        print_error(exc)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        report_failure("Interrupted", "interrupted", None, 130, text=["interrupted"])
        sys.exit(130)
    except typer.Abort:  # only without standalone mode: end of input at a prompt
        report_failure("Aborted", "aborted", None, 1, text=["aborted"])
        sys.exit(1)
    except Exception as exc:
        if isinstance(exc, _click_exception()):  # only without standalone mode: a usage error
            ctx = getattr(exc, "ctx", None)
            path = ctx.command_path if ctx is not None else "mailconnector"
            code = int(getattr(exc, "exit_code", 2))
            report_failure("UsageError", exc.format_message(), f"see: {path} --help", code)
            sys.exit(code)
        # A bug: say so without leaking a secret; --debug logs the traceback.
        import logging

        logging.getLogger("mailconnector.cli").debug("unexpected error", exc_info=True)
        message = redact(f"{type(exc).__name__}: {exc}")
        hint = "run again with --debug for the traceback; this is a bug, please report it"
        report_failure("UnexpectedError", message, hint, 10,
                       text=[f"[bold red]unexpected error[/]: {_escape(message)}", hint])
        sys.exit(10)


def _click_exception() -> type[Any]:
    """The base class of the errors found while parsing the command line: typer vendors click since 0.2x."""
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            found: type[Any] = importlib.import_module(module).ClickException
            return found
    raise ImportError("no ClickException in typer or click")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
