"""The command line as scripts see it: help, exit codes, table and JSON output, folders, the sandbox commands.

Most commands run in this process through the program's own entry point (``main``), with the working
directory, environment, stdout and stderr of a fresh run; a few run the installed ``mailconnector`` script as
a real process, so that exit codes and streams are also checked exactly as a script gets them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_harness.commands import commands
from cli_harness.runner import cli
from typer.testing import CliRunner

from mailconnector.cli import app
from mailconnector.sandbox import Sandbox

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
PW_VAR = "MC_CLI_BASICS_PASSWORD"


def run(args: list[str], cwd: Path, *, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    full_env.update({"COLUMNS": "200", "NO_COLOR": "1"})
    full_env.update(env or {})
    return subprocess.run([str(MAILCONNECTOR), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env, stdin=subprocess.DEVNULL)


def flat(text: str) -> str:
    """Help text without the box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def command_paths() -> list[tuple[str, ...]]:
    return sorted(commands())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def project(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a good connection, a wrong-password one, one to a closed port, and a broken entry."""
    directory = tmp_path_factory.mktemp("cli-basics")
    good = sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")
    wrong = sandbox.connection_dict("alice", password="definitely-not-alices-password")
    closed = sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")
    closed["smtp"] = {**closed["smtp"], "port": free_port()}
    closed["timeouts"] = {"connect": 2, "command": 2}
    data = {"connections": {"good": good, "wrong": wrong, "closed": closed,
                            "broken": {**good, "smtp": {**good["smtp"], "port": 70000}}}}
    (directory / "mailconnector.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def pw_env(sandbox: Sandbox) -> dict[str, str]:
    return {PW_VAR: sandbox.user("alice").password}


# ------------------------------------------------------------------------------------------ help
def test_every_command_has_help() -> None:
    runner = CliRunner()
    paths = command_paths()
    assert {("test",), ("folders",), ("sandbox",), ("sandbox", "stop"), ("sandbox", "status")} <= set(paths)
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path
        if path:
            assert path[-1] in result.output


def test_top_level_help_lists_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    text = flat(result.output)
    for words in ("Exit codes", "0 success", "2 usage error", "3 configuration", "4 authentication",
                  "5 connection or TLS", "6 server refused", "8 local state"):
        assert words in text, words


# ------------------------------------------------------------------------------------------ test
@pytest.mark.parametrize(("args", "code"), [(["test", "good", "--json"], 0), (["test", "wrong", "--json"], 4),
                                            (["test", "good", "--bogus"], 2)])
def test_exit_codes_of_the_real_script(project: Path, pw_env: dict[str, str], args: list[str], code: int) -> None:
    res = run(args, project, env=pw_env)
    assert res.returncode == code, res.stdout + res.stderr
    if code != 2:
        data = json.loads(res.stdout)
        assert data["ok"] is (code == 0)
        failed = [s for s in data["steps"] if s["status"] == "failed"]
        if code == 4:
            assert failed[0]["name"] == "authentication" and failed[0]["error_type"] == "AuthenticationError"
    else:
        assert "No such option" in res.stderr and res.stdout == ""


def test_test_command_table(project: Path, pw_env: dict[str, str]) -> None:
    res = cli(["test", "good"], project, env=pw_env)
    assert res.returncode == 0, res.stdout + res.stderr
    for words in ("Connection Test: good", "SMTP", "IMAP", "DNS", "TCP connect", "authentication",
                  "sender accepted", "folder can be selected", "passed", "every step passed"):
        assert words in res.stdout, words
    assert "FAILED" not in res.stdout


def test_test_command_json(project: Path, pw_env: dict[str, str]) -> None:
    res = cli(["test", "good", "--json"], project, env=pw_env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["connection"] == "good" and data["ok"] is True
    assert len(data["steps"]) >= 12
    for st in data["steps"]:
        assert st["status"] == "passed"
        assert isinstance(st["ms"], int | float) and st["ms"] >= 0
        assert st["server"] in ("smtp", "imap") and st["name"]


def test_project_option_and_environment_variable(project: Path, pw_env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli(["test", "good", "--json", "--project", str(project / "mailconnector.yaml")], elsewhere, env=pw_env)
    assert res.returncode == 0, res.stderr
    res = cli(["test", "good", "--json"], elsewhere,
              env={**pw_env, "MAILCONNECTOR_PROJECT": str(project / "mailconnector.yaml")})
    assert res.returncode == 0, res.stderr


def test_exit_code_4_for_a_wrong_password(project: Path) -> None:
    res = cli(["test", "wrong"], project)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "FAILED" in res.stdout and "authentication failed" in res.stdout
    assert "hint" in res.stdout


def test_exit_code_5_for_a_closed_port(project: Path, pw_env: dict[str, str]) -> None:
    t0 = time.monotonic()
    res = cli(["test", "closed", "--json"], project, env=pw_env)
    assert time.monotonic() - t0 < 10
    assert res.returncode == 5, res.stdout + res.stderr
    data = json.loads(res.stdout)
    failed = next(s for s in data["steps"] if s["status"] == "failed")
    assert failed["server"] == "smtp" and failed["name"] == "TCP connect"
    # The IMAP server was still tested.
    assert any(s["server"] == "imap" and s["status"] == "passed" for s in data["steps"])


def test_exit_code_3_for_an_unknown_connection(project: Path) -> None:
    res = cli(["test", "nope"], project)
    assert res.returncode == 3
    assert "no connection named 'nope'" in res.stderr
    assert "mailconnector.yaml" in res.stderr
    assert res.stdout == ""


def test_exit_code_3_for_a_broken_connection_entry(project: Path, pw_env: dict[str, str]) -> None:
    res = cli(["test", "broken"], project, env=pw_env)
    assert res.returncode == 3
    assert "connections.broken.smtp.port" in flat(res.stderr)
    assert re.search(r"line \d+", res.stderr)


def test_exit_code_3_for_an_unset_password_variable(project: Path) -> None:
    res = cli(["test", "good"], project)  # PW_VAR not set
    assert res.returncode == 3
    assert PW_VAR in res.stderr


def test_exit_code_3_for_a_bad_project_file(tmp_path: Path) -> None:
    (tmp_path / "mailconnector.yaml").write_text("connections:\n  good: {auth: [\n")
    res = cli(["test", "good"], tmp_path)
    assert res.returncode == 3
    assert "invalid YAML" in res.stderr and "line" in res.stderr


def test_exit_code_3_without_a_project_file(tmp_path: Path) -> None:
    res = cli(["test", "good"], tmp_path)
    assert res.returncode == 3
    assert "not found" in res.stderr
    assert "or name it with --project" in " ".join(res.stderr.split())  # the command line's own advice


@pytest.mark.parametrize("args", [["test", "good", "--no-such-option"], ["no-such-command"], ["test"],
                                  ["test", "good", "--log-format", "xml"]])
def test_exit_code_2_for_usage_errors(project: Path, args: list[str]) -> None:
    res = cli(args, project)
    assert res.returncode == 2, (args, res.stdout, res.stderr)
    assert res.stderr.strip()


# ------------------------------------------------------------------------------------------ folders
def test_folders(project: Path, pw_env: dict[str, str]) -> None:
    res = cli(["folders", "good", "--json"], project, env=pw_env)
    assert res.returncode == 0, res.stderr
    folders = {f["name"]: f for f in json.loads(res.stdout)}
    assert {"INBOX", "Sent", "Trash", "Archive"} <= set(folders)
    assert folders["Sent"]["special_use"] == "\\Sent"
    assert folders["Trash"]["special_use"] == "\\Trash"
    assert folders["Archive"]["special_use"] == "\\Archive"
    assert folders["INBOX"]["special_use"] is None
    assert isinstance(folders["INBOX"]["messages"], int)

    table = cli(["folders", "good"], project, env=pw_env)
    assert table.returncode == 0
    for words in ("INBOX", "Sent", "\\Sent", "Trash", "\\Trash", "Archive", "\\Archive"):
        assert words in table.stdout


def test_folders_with_a_wrong_password(project: Path) -> None:
    res = cli(["folders", "wrong"], project)
    assert res.returncode == 4
    assert "AuthenticationError" in res.stderr and "hint" in res.stderr


# ------------------------------------------------------------------------------------------ sandbox
def test_sandbox_background_status_stop(tmp_path: Path) -> None:
    t0 = time.monotonic()
    started = run(["sandbox", "--background", "--json"], tmp_path)
    start_s = time.monotonic() - t0
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    rundir = Path(info["rundir"])
    try:
        print(f"\n`mailconnector sandbox --background`: {start_s:.2f} s")
        assert (tmp_path / "mailconnector.yaml").exists()
        assert info["project_file"] == "mailconnector.yaml"
        state = json.loads((rundir / "sandbox.json").read_text())
        for user in state["users"]:
            assert user["password"] not in started.stdout + started.stderr
            assert user["password"] not in (tmp_path / "mailconnector.yaml").read_text()

        status = cli(["sandbox", "status", "--json"], tmp_path)
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
        assert st["running"] is True
        pids = list(st["pids"].values())
        assert pids and all(Path(f"/proc/{p}").exists() for p in pids)

        # A second start in the same directory is refused while the first runs.
        again = cli(["sandbox", "--background"], tmp_path)
        assert again.returncode == 8 and "already running" in again.stderr

        tested = cli(["test", "sandbox", "--json"], tmp_path)
        assert tested.returncode == 0, tested.stdout + tested.stderr

        stopped = cli(["sandbox", "stop"], tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in stopped.stderr
        deadline = time.monotonic() + 3
        while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(Path(f"/proc/{p}").exists() for p in pids)
        assert not rundir.exists()

        after = cli(["sandbox", "status"], tmp_path)
        assert after.returncode == 8
    finally:
        pointer = tmp_path / ".mailconnector" / "sandbox-rundir"
        for leftover in {rundir, Path(pointer.read_text().strip()) if pointer.exists() else rundir}:
            if leftover.exists():
                Sandbox.attach(leftover).remove()


def test_sandbox_stop_without_a_sandbox(tmp_path: Path) -> None:
    res = cli(["sandbox", "stop"], tmp_path)
    assert res.returncode == 8
    assert "no sandbox" in res.stderr
