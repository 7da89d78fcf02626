"""The commands the secret checks run, and the project they run against: shared by
tests/cli/test_no_secrets_in_output.py and tests/security/test_secrets_everywhere.py."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from mailconnector.cli import app
from mailconnector.sandbox import Sandbox

__all__ = [
    "CONNECTING",
    "INVOCATIONS",
    "NOT_RUN",
    "USER",
    "commands",
    "folder_with_mail",
    "forbidden",
    "option_names",
    "write_project",
]

USER = "frank"  # logs in as this user; touches only a folder of its own, never the INBOX

# How to run each command against the project below. A command added to the app without an entry here
# fails test_every_command_is_covered (tests/cli/test_no_secrets_in_output.py), so it cannot escape this check.
INVOCATIONS: dict[tuple[str, ...], list[str]] = {
    ("test",): ["sandbox"],
    ("folders",): ["sandbox"],
    # A recipient the server refuses: the whole SMTP conversation, login included, and nothing delivered.
    ("send",): ["sandbox", "--to", "nobody@example.test", "--subject", "no secrets here", "--text", "hello"],
    ("read",): ["sandbox", "--folder", "{folder}", "--limit", "5", "--after-read", "keep_unread"],
    ("run",): ["copy-folder"],
    ("logs",): [],
    ("schema",): ["project"],
    ("init",): ["starter"],
    ("sandbox", "status"): [],
    ("auth", "login"): ["sandbox"],
    ("ledger", "list"): ["--status", "uncertain"],
    ("ledger", "resolve"): ["<not-in-the-ledger@example.test>", "--sent"],
    ("ledger", "reconcile"): ["sandbox"],
    ("state", "show"): ["sandbox"],
    ("state", "reset"): ["sandbox", "--folder", "{folder}", "--yes"],
}
NOT_RUN = {
    (): "the program itself: its commands are run one by one",
    ("sandbox",): "starts servers of its own with passwords of its own: covered in test_cli_basics",
    ("sandbox", "stop"): "needs a sandbox started from the directory: covered in test_cli_basics",
    ("auth",): "a group: its command is run",
    ("ledger",): "a group: its commands are run",
    ("state",): "a group: its commands are run",
    ("console",): "serves until stopped: no page or API answer holding a secret is checked in tests/console",
    ("worker",): "serves until stopped: its log lines are checked for the password in tests/distributed",
}
CONNECTING = {("test",), ("folders",), ("send",), ("read",), ("run",)}


def commands() -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        found[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def option_names(cmd: Any) -> set[str]:
    return {opt for p in cmd.params for opt in getattr(p, "opts", [])}


def forbidden(password: str, user: str) -> dict[str, str]:
    raw = password.encode()
    return {
        "password": password,
        "base64(password)": base64.b64encode(raw).decode().rstrip("="),
        "base64(\\0user\\0password)": base64.b64encode(b"\0" + user.encode() + b"\0" + raw).decode(),
        "base64(user\\0user\\0password)": base64.b64encode(user.encode() + b"\0" + user.encode() + b"\0" + raw)
        .decode(),
    }


def write_project(directory: Path, sandbox: Sandbox, password_ref: str, folder: str) -> Path:
    conn = sandbox.connection_dict(USER, password=password_ref)
    data = {
        "connections": {"sandbox": conn},
        "activities": {
            "inbox": {"type": "read-email", "connection": "sandbox", "folder": folder,
                      "after_read": "keep_unread"},
            "out": {"type": "file", "path": "out.jsonl"},
        },
        "operations": {"copy-folder": {"source": "inbox", "target": "out"}},
    }
    path = directory / "mailconnector.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def folder_with_mail(sandbox: Sandbox, fresh_folder: Callable[[str], str]) -> str:
    """A folder of USER's with one message, for `read` and `run` to find."""
    from mailconnector.connection import Connection
    from mailconnector.imap import ImapSession

    name = fresh_folder(USER)
    conn = Connection.from_dict(sandbox.connection_dict(USER), name="seed")
    with ImapSession(conn) as imap:
        imap.append(name, b"From: a@example.test\r\nTo: frank@example.test\r\nSubject: seed\r\n\r\nbody\r\n")
    return name
