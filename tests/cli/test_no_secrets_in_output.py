"""No command prints a password: every command of the CLI, with ``--debug --verbose-protocol``, against the
sandbox, with the password given through ``${env:}`` and through ``${file:}``, and with a wrong password.

Besides the password itself, its base64 and the base64 of the SASL PLAIN payload (``\\0user\\0password``, as
sent by ``AUTH PLAIN``) must not appear in stdout or stderr.

The commands run in this process through the program's entry point (``main``), each as a fresh run would:
its own working directory, environment, streams, logging set-up and an empty secret registry (so the
redaction by value knows only what the run itself resolved). ``test`` also runs as a real process.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from mailconnector import secrets as secret_registry
from mailconnector.cli import app, main
from mailconnector.sandbox import Sandbox

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
USER = "frank"  # logs in as this user; touches only a folder of its own, never the INBOX
WRONG_PASSWORD = "Wr0ng-Passw0rd-for-frank"
PW_VAR = "MC_NOSECRET_PASSWORD"

# How to run each command against the project below. A command added to the app without an entry here
# fails test_every_command_is_covered, so it cannot escape this check.
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
}
NOT_RUN = {
    (): "the program itself: its commands are run one by one",
    ("sandbox",): "starts servers of its own with passwords of its own: covered in test_cli_basics",
    ("sandbox", "stop"): "needs a sandbox started from the directory: covered in test_cli_basics",
    ("auth",): "a group: its command is run",
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


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> Result:
    """Run the program in this process as a fresh run would: its cwd, environment, streams and secrets."""
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    loggers = [logging.getLogger(n) for n in ("mailconnector", "mailconnector.protocol", "imapclient")]
    saved_logging = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    saved_secrets = (set(secret_registry._known), secret_registry._pattern)
    os.environ.pop("MAILCONNECTOR_PROJECT", None)
    os.environ.update({"COLUMNS": "200", **env})
    secret_registry._known.clear()
    secret_registry._pattern = None
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
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
        secret_registry._known.clear()
        secret_registry._known.update(saved_secrets[0])
        secret_registry._pattern = saved_secrets[1]
    return Result(code, out.getvalue(), err.getvalue())


def real_process(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    full_env.update({"COLUMNS": "200", **env})
    return subprocess.run([str(MAILCONNECTOR), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=full_env, stdin=subprocess.DEVNULL)


def run_all(directory: Path, env: dict[str, str], folder: str,
            only: Callable[[tuple[str, ...]], bool] = lambda _: True) -> dict[tuple[str, ...], Any]:
    all_commands = commands()
    results: dict[tuple[str, ...], Any] = {}
    for path, args in INVOCATIONS.items():
        if path not in all_commands or not only(path):
            continue
        opts = option_names(all_commands[path])
        extra = [flag for flag in ("--debug", "--verbose-protocol") if flag in opts]
        argv = [*path, *(a.replace("{folder}", folder) for a in args), *extra]
        results[path] = cli(argv, directory, env)
        if path == ("test",):
            results[("test", "(real process)")] = real_process(argv, directory, env)
    return results


def assert_clean(results: dict[tuple[str, ...], Any], secrets: dict[str, str]) -> None:
    leaks = []
    for path, res in results.items():
        for stream in ("stdout", "stderr"):
            text = getattr(res, stream)
            for kind, value in secrets.items():
                if value in text:
                    leaks.append(f"{' '.join(path)}: {kind} in {stream}")
    assert not leaks, leaks


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


def test_every_command_is_covered() -> None:
    missing = [" ".join(p) for p in commands() if p not in INVOCATIONS and p not in NOT_RUN]
    assert not missing, f"add these commands to INVOCATIONS: {missing}"


@pytest.mark.parametrize("how", ["env", "file"])
def test_no_password_in_any_output(sandbox: Sandbox, tmp_path: Path, folder_with_mail: str, how: str) -> None:
    password = sandbox.user(USER).password
    if how == "env":
        ref, env = f"${{env:{PW_VAR}}}", {PW_VAR: password}
    else:
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "pw").write_text(password + "\n")
        ref, env = "${file:secrets/pw}", {}
    write_project(tmp_path, sandbox, ref, folder_with_mail)
    # Every command once; the ones that log in a second time with the password read from a file.
    results = run_all(tmp_path, env, folder_with_mail, only=lambda p: how == "env" or p in CONNECTING)
    # The commands really ran against the sandbox, with the protocol log on.
    for path in (("test",), ("folders",)):
        assert results[path].returncode == 0, (path, results[path].stdout, results[path].stderr)
        assert "mailconnector.protocol" in results[path].stderr, "the protocol log should be on"
    assert "AUTH PLAIN" in results[("test",)].stderr or "AUTH" in results[("test",)].stderr
    assert "LOGIN" in results[("folders",)].stderr
    if ("send",) in results:
        assert "AUTH PLAIN ****" in results[("send",)].stderr, "send should have logged in"
    for path in CONNECTING & set(results):
        assert results[path].returncode != 10, (path, results[path].stderr[-2000:])
    assert_clean(results, forbidden(password, f"{USER}@example.test"))


def test_no_password_in_output_when_the_login_fails(sandbox: Sandbox, tmp_path: Path,
                                                     folder_with_mail: str) -> None:
    write_project(tmp_path, sandbox, f"${{env:{PW_VAR}}}", folder_with_mail)
    results = run_all(tmp_path, {PW_VAR: WRONG_PASSWORD}, folder_with_mail, only=lambda p: p in CONNECTING)
    assert results[("test",)].returncode == 4
    assert results[("folders",)].returncode == 4
    for path, res in results.items():
        assert res.returncode not in (0, 10), (path, res.returncode, res.stderr[-2000:])
    user = f"{USER}@example.test"
    assert_clean(results, {**forbidden(WRONG_PASSWORD, user),
                           **{f"real {k}": v for k, v in forbidden(sandbox.user(USER).password, user).items()}})
