"""The ``mailconnector`` command: one typer app; each error family leaves with its own exit code."""

from __future__ import annotations

import sys

import typer

from ..errors import MailConnectorError
from ..secrets import redact
from ._common import EXIT_CODES_HELP, err_console, print_error

__all__ = ["app", "main"]

app = typer.Typer(
    name="mailconnector",
    help="Send and read email for integration work: SMTP + IMAP connections, a step-by-step connection "
    "Test, Send Email and Read Email activities, operations with logs.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

from . import (  # noqa: E402  (registers commands)
    auth_cmd,
    connection_cmds,
    ledger_cmd,
    project_cmds,
    read_cmd,
    sandbox_cmd,
    send_cmd,
)

connection_cmds.register(app)
send_cmd.register(app)
read_cmd.register(app)
project_cmds.register(app)
sandbox_cmd.register(app)
auth_cmd.register(app)
ledger_cmd.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns errors into one message, one hint and one exit code.

    Commands end with ``typer.Exit(code)``; usage errors leave with 2 (typer's own handling).
    """
    try:
        app(args=argv, prog_name="mailconnector")
    except MailConnectorError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: say so without leaking a secret; --debug logs the traceback
        import logging

        logging.getLogger("mailconnector.cli").debug("unexpected error", exc_info=True)
        err_console.print(f"[bold red]unexpected error[/]: {redact(f'{type(exc).__name__}: {exc}')}")
        err_console.print("run again with --debug for the traceback; this is a bug, please report it")
        sys.exit(10)
