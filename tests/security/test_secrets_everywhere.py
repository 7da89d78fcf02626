"""Every secret (password, OAuth2 client secret, refresh token, access token) stays out of every output: stdout
with ``--json`` of every command, stderr with ``--debug --verbose-protocol``, error messages, ``repr``, and the
operation logs in the store (its ``runs`` and ``run_errors`` tables, and ``mailconnector logs --json``).

The commands are listed from the typer app (through tests/cli_harness, shared with
tests/cli/test_no_secrets_in_output.py, whose ``test_every_command_is_covered`` fails for a command nobody
knows how to run), so a new command is covered as soon as it is added. Tokens in the store's own token cache are
there by design (file mode 0600, see test_security_checks.py); every other table is searched.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cli_harness.commands import (
    CONNECTING,
    INVOCATIONS,
    NOT_RUN,
    USER,
    commands,
    folder_with_mail,
    forbidden,
    option_names,
    write_project,
)
from cli_harness.runner import cli

from mailconnector.connection import Connection
from mailconnector.errors import MailConnectorError
from mailconnector.logs import RedactingFormatter
from mailconnector.sandbox import Sandbox
from mailconnector.secrets import register_secret

__all__ = ["folder_with_mail"]  # the fixture, used below

CLIENT_SECRET = "cl1ent-Secret-Value-9f3a"
REFRESH_TOKEN = "refresh-T0ken-Value-77c1"
ACCESS_TOKEN = "eyJhbGciOi.access-T0ken-Value.sig41"


def run_every_command(directory: Path, env: dict[str, str], folder: str,
                      only: Callable[[tuple[str, ...]], bool] = lambda _: True) -> dict[str, str]:
    """Each command once, with --json where it has it and the debug and protocol logs on; then the operation
    logs as `logs --json` and `logs RUN_ID --json` print them. Returns name -> everything it printed."""
    found = commands()
    outputs: dict[str, str] = {}
    for path, args in INVOCATIONS.items():
        if path not in found or not only(path):
            continue
        opts = option_names(found[path])
        extra = [flag for flag in ("--json", "--debug", "--verbose-protocol") if flag in opts]
        argv = [*path, *(a.replace("{folder}", folder) for a in args), *extra]
        res = cli(argv, directory, env)
        assert res.returncode != 10, (argv, res.stderr[-2000:])  # no crash
        outputs[" ".join(path)] = res.stdout + res.stderr
    listing = cli(["logs", "--json"], directory, env)
    outputs["logs --json (after the runs)"] = listing.stdout + listing.stderr
    for run_id in _run_ids(directory):
        one = cli(["logs", run_id, "--json"], directory, env)
        outputs[f"logs {run_id} --json"] = one.stdout + one.stderr
    return outputs


def _run_ids(directory: Path) -> list[str]:
    db = directory / ".mailconnector" / "state.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs")]


def store_text(directory: Path) -> str:
    """Every table of the project's store but the token cache, as text."""
    db = directory / ".mailconnector" / "state.db"
    if not db.exists():
        return ""
    out = []
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            if table != "tokens":
                out += [repr(row) for row in conn.execute(f"SELECT * FROM {table}")]
    return "\n".join(out)


def assert_absent(outputs: dict[str, str], secrets: dict[str, str]) -> None:
    leaks = [f"{kind} in {where}" for where, text in outputs.items() for kind, value in secrets.items()
             if value in text]
    assert not leaks, leaks


def test_the_command_list_comes_from_the_app() -> None:
    listed = set(commands())
    assert listed <= set(INVOCATIONS) | set(NOT_RUN)
    assert ("send",) in listed and ("logs",) in listed


def test_no_password_in_json_output_logs_or_operation_logs(sandbox: Sandbox, tmp_path: Path,
                                                           folder_with_mail: str) -> None:
    password = sandbox.user(USER).password
    write_project(tmp_path, sandbox, "${env:MC_SECRETS_PW}", folder_with_mail)
    outputs = run_every_command(tmp_path, {"MC_SECRETS_PW": password}, folder_with_mail)
    assert '"status"' in outputs["run"] and outputs["logs --json (after the runs)"].strip().startswith("[")
    outputs["store (runs, run_errors, ledger, checkpoints, leases)"] = store_text(tmp_path)
    assert_absent(outputs, forbidden(password, f"{USER}@example.test"))


def test_no_password_when_every_login_is_refused(sandbox: Sandbox, tmp_path: Path, folder_with_mail: str) -> None:
    wrong = "Wr0ng-but-Secret-Passw0rd"
    write_project(tmp_path, sandbox, "${env:MC_SECRETS_PW}", folder_with_mail)
    outputs = run_every_command(tmp_path, {"MC_SECRETS_PW": wrong}, folder_with_mail, only=lambda p: p in CONNECTING)
    outputs["store"] = store_text(tmp_path)
    assert "refused" in outputs["test"]
    assert_absent(outputs, forbidden(wrong, f"{USER}@example.test"))


def oauth_project(directory: Path, sandbox: Sandbox, folder: str) -> None:
    """The same project, but logging in with OAuth2 against a token endpoint that is not there."""
    write_project(directory, sandbox, "unused", folder)
    path = directory / "mailconnector.yaml"
    data = yaml.safe_load(path.read_text())
    data["connections"]["sandbox"]["auth"] = {
        "type": "oauth2", "username": f"{USER}@example.test",
        "oauth2": {"provider": "generic", "grant": "refresh_token", "client_id": "mc-client",
                   "client_secret": "${env:MC_CLIENT_SECRET}", "refresh_token": "${env:MC_REFRESH_TOKEN}",
                   "token_url": "https://127.0.0.1:9/token"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_no_oauth2_secret_in_any_output(sandbox: Sandbox, tmp_path: Path, folder_with_mail: str) -> None:
    oauth_project(tmp_path, sandbox, folder_with_mail)
    env = {"MC_CLIENT_SECRET": CLIENT_SECRET, "MC_REFRESH_TOKEN": REFRESH_TOKEN}
    outputs = run_every_command(tmp_path, env, folder_with_mail, only=lambda p: p in CONNECTING or p == ("logs",))
    assert "token" in outputs["test"].lower()  # it did try, and said why it failed
    outputs["store"] = store_text(tmp_path)
    secrets = {"client secret": CLIENT_SECRET, "refresh token": REFRESH_TOKEN,
               "base64(client secret)": base64.b64encode(CLIENT_SECRET.encode()).decode().rstrip("=")}
    assert_absent(outputs, secrets)


def test_secrets_are_absent_from_repr_errors_and_log_records() -> None:
    data = {"auth": {"type": "oauth2", "username": "a@example.test",
                     "oauth2": {"provider": "generic", "grant": "refresh_token", "client_id": "cid",
                                "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN,
                                "token_url": "https://127.0.0.1:9/token"}},
            "imap": {"host": "127.0.0.1", "port": 9, "security": "ssl"}, "activities": "read"}
    conn = Connection.from_dict(data, name="c")
    texts = [repr(conn), str(conn), conn.model_dump_json(), repr(conn.auth), repr(conn.auth.oauth2)]
    bad = dict(data, imap={"host": "127.0.0.1", "port": "not a port " + CLIENT_SECRET, "security": "ssl"})
    with pytest.raises(MailConnectorError) as info:
        Connection.from_dict(bad, name="c")
    texts += [str(info.value), repr(info.value), str(info.value.to_dict())]
    register_secret(ACCESS_TOKEN)
    record = logging.LogRecord("mailconnector.imap", logging.DEBUG, __file__, 1,
                               "C: AUTHENTICATE XOAUTH2 %s (token %s)", (ACCESS_TOKEN, REFRESH_TOKEN), None)
    register_secret(REFRESH_TOKEN)
    for fmt in (RedactingFormatter(), RedactingFormatter(json_lines=True)):
        texts.append(fmt.format(record))
    for value in (CLIENT_SECRET, REFRESH_TOKEN, ACCESS_TOKEN):
        assert not any(value in t for t in texts), value
