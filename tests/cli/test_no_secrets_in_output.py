"""No command prints a password: every command of the CLI, with ``--debug --verbose-protocol``, against the
sandbox, with the password given through ``${env:}`` and through ``${file:}``, and with a wrong password.

Besides the password itself, its base64 and the base64 of the SASL PLAIN payload (``\\0user\\0password``, as
sent by ``AUTH PLAIN``) must not appear in stdout or stderr.

The commands run in this process through the program's entry point (``main``), each as a fresh run would:
its own working directory, environment, streams, logging set-up and an empty secret registry (so the
redaction by value knows only what the run itself resolved). ``test`` also runs as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
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

from mailconnector.sandbox import Sandbox

__all__ = ["folder_with_mail"]  # the fixture, used below

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
WRONG_PASSWORD = "Wr0ng-Passw0rd-for-frank"
PW_VAR = "MC_NOSECRET_PASSWORD"


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
