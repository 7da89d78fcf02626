"""What the command line says, and how: one line per message on stderr when it is not a terminal, JSON
errors and summaries under ``--log-format json`` and ``--json``, the ``logs`` table's run ids at 80
columns, ``--version``, help without Python types, and ``x-`` keys in the project file.

File operations only (no mail server): the connection below is never contacted, except by the read-email
source that is meant to fail (nothing listens on port 9).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness.commands import commands
from cli_harness.runner import Result, cli as run_cli
from typer.testing import CliRunner

from mailconnector import secrets as secret_registry
from mailconnector._context import Context, swap_context
from mailconnector.cli import _common, app
from mailconnector.cli._common import MODE, report_failure
from mailconnector.errors import ConfigError
from mailconnector.logs import RedactingFormatter
from mailconnector.project import Project, project_schema

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
LONG_OP = "copy-the-numbers-into-a-file-with-a-name-long-enough-to-pass-eighty-columns"
CONNECTION = {
    "auth": {"type": "basic", "username": "ops@example.test", "password": "not-a-real-password"},
    "smtp": {"host": "127.0.0.1", "port": 9, "security": "none"},
    "imap": {"host": "127.0.0.1", "port": 9, "security": "none"},
    "timeouts": {"connect": 2, "command": 2},
}
LOG_FIELDS = {"time", "level", "logger", "message"}  # what every JSON log record has


def cli(*args: str, cwd: Path, columns: int = 80) -> Result:
    """The program in this process, with a narrow console: stderr and stdout are not terminals."""
    return run_cli(args, cwd, columns=columns)


def real(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed script as a real process, stdout and stderr pipes, COLUMNS=80."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAILCONNECTOR_PROJECT", "FORCE_COLOR")}
    env["COLUMNS"] = "80"
    return subprocess.run([str(MAILCONNECTOR), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on a line that is not one)."""
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    doc: dict[str, Any] = {
        "connections": {"mb": CONNECTION},
        "activities": {
            "numbers": {"type": "file", "path": "numbers.jsonl"},
            "copy": {"type": "file", "path": "copy.jsonl"},
            "inbox": {"type": "read-email", "connection": "mb", "folder": "INBOX",
                      "criteria": {"from": "boss@example.test"}},
        },
        "operations": {
            LONG_OP: {"source": "numbers", "target": "copy"},
            "short": {"source": "numbers", "target": "copy"},
            "drain": {"source": "inbox", "target": "copy"},
        },
    }
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "numbers.jsonl").write_text("".join(json.dumps({"n": n}) + "\n" for n in range(1, 4)))
    return tmp_path


# ------------------------------------------------------------------------------------------ stderr lines
def test_a_summary_longer_than_the_console_is_one_line(project: Path) -> None:
    res = cli("run", LONG_OP, cwd=project)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, lines
    assert len(lines[0]) > 80
    assert re.fullmatch(rf"{LONG_OP}: success — read 3, written 3, failed 0 \(run \d{{8}}-\d{{6}}-[0-9a-f]{{6}}\)",
                        lines[0]), lines[0]
    assert "\x1b[" not in res.stderr  # no colours where there is no terminal


def test_an_error_and_its_hint_are_one_line_each(project: Path) -> None:
    res = cli("logs", "--operation", LONG_OP + "-nope", cwd=project)
    assert res.returncode == 3
    lines = res.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error (ConfigError): ") and f"'{LONG_OP}-nope'" in lines[0]
    assert lines[0].endswith("and no run of one in the operation logs")
    assert lines[1] == "hint: list the runs of every operation with: mailconnector logs"


def test_a_real_process_writes_whole_lines_into_a_pipe(project: Path) -> None:
    res = real("run", LONG_OP, cwd=project)
    assert res.returncode == 0, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"{LONG_OP}: success") and line.endswith(")") and "\x1b[" not in line


def test_markup_like_text_in_a_message_is_printed_as_written(project: Path) -> None:
    name = "[bold]op[/bold] [red]"
    res = cli("run", name, cwd=project)
    assert res.returncode == 3
    assert f"no operation named {name!r}" in res.stderr


# ------------------------------------------------------------------------------------------ JSON on stderr
def test_log_format_json_makes_the_summary_a_json_record(project: Path) -> None:
    res = cli("run", LONG_OP, "--log-format", "json", cwd=project)
    assert res.returncode == 0, res.stderr
    (record,) = json_lines(res.stderr)
    assert set(record) >= LOG_FIELDS
    assert (record["level"], record["logger"]) == ("info", "mailconnector.cli")
    assert record["message"].startswith(f"{LONG_OP}: success — read 3, written 3, failed 0 (run ")
    assert "[" not in record["message"].split(" (run ")[0]  # the markup went, the words stayed


def test_log_format_json_makes_the_error_a_json_record(project: Path) -> None:
    res = cli("run", "nope", "--log-format=json", cwd=project)
    assert res.returncode == 3
    assert res.stdout == ""
    (record,) = json_lines(res.stderr)
    assert set(record) >= LOG_FIELDS
    assert record["level"] == "error"
    assert "no operation named 'nope' (defined: " in record["message"]
    assert record["error"] == {"type": "ConfigError", "message": record["message"], "hint": None, "exit_code": 3,
                               "source": str(project / "mailconnector.yaml")}


def test_log_format_json_records_have_the_fields_of_the_log_records(project: Path) -> None:
    """A failed connection logs a warning through logging and ends with an error: one parser reads both."""
    res = cli("run", "drain", "--log-format", "json", cwd=project)
    assert res.returncode == 5, res.stderr
    records = json_lines(res.stderr)
    assert records and all(set(r) >= LOG_FIELDS for r in records)
    assert records[-1]["level"] == "error" and records[-1]["error"]["type"] == "TransportError"
    logged = json.loads(RedactingFormatter(json_lines=True).format(
        logging.LogRecord("mailconnector.x", logging.WARNING, __file__, 1, "m", None, None)))
    assert set(logged) == LOG_FIELDS


def test_a_usage_error_under_log_format_json_is_a_json_record(project: Path) -> None:
    res = cli("run", "short", "--no-such-option", "--log-format", "json", cwd=project)
    assert res.returncode == 2
    (record,) = json_lines(res.stderr)
    assert record["level"] == "error" and record["error"]["type"] == "UsageError"
    assert record["error"]["exit_code"] == 2 and "--no-such-option" in record["message"]
    assert record["error"]["hint"] == "see: mailconnector run --help"


# ------------------------------------------------------------------------------------------ --json errors
def test_a_failing_json_command_prints_a_json_error_document(project: Path) -> None:
    res = cli("run", "nope", "--json", cwd=project)
    assert res.returncode == 3
    doc = json.loads(res.stdout)
    assert doc["ok"] is False
    assert set(doc["error"]) == {"type", "message", "hint", "exit_code", "source"}
    assert doc["error"]["type"] == "ConfigError" and doc["error"]["exit_code"] == 3
    assert "no operation named 'nope' (defined: " in doc["error"]["message"]
    assert "error (ConfigError)" in res.stderr  # the words for a person are still on stderr


def test_a_json_error_gives_the_line_and_field_apart(tmp_path: Path) -> None:
    """A script or a console points at the place without parsing the message, which still names it."""
    (tmp_path / "mailconnector.yaml").write_text("operations:\n  o:\n    source: a\n    target: b\n")
    res = cli("run", "o", "--json", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    error = json.loads(res.stdout)["error"]
    assert (error["line"], error["field"], error["source"]) == (3, "operations.o.source",
                                                                 str(tmp_path / "mailconnector.yaml"))
    assert error["message"] == f"{tmp_path / 'mailconnector.yaml'}: line 3: operations.o.source: no activity named 'a'"


def test_a_json_error_document_of_the_real_script(project: Path) -> None:
    res = real("logs", "--operation", "nope", "--json", cwd=project)
    assert res.returncode == 3, res.stderr
    doc = json.loads(res.stdout)
    assert doc["error"]["type"] == "ConfigError" and doc["error"]["exit_code"] == 3
    assert doc["error"]["hint"] == "list the runs of every operation with: mailconnector logs"


@pytest.mark.parametrize("args", [["run", "--json"], ["run", "short", "--json", "--bogus"],
                                  ["logs", "--json", "--limit", "0"], ["logs", "--json", "--limit", "many"]])
def test_a_usage_error_under_json_is_a_json_document(project: Path, args: list[str]) -> None:
    res = cli(*args, cwd=project)
    assert res.returncode == 2, (res.stdout, res.stderr)
    doc = json.loads(res.stdout)
    assert doc["ok"] is False
    assert doc["error"]["type"] == "UsageError" and doc["error"]["exit_code"] == 2
    assert doc["error"]["message"] and doc["error"]["hint"].endswith(" --help")
    assert res.stderr.strip()


def test_a_usage_error_without_json_is_left_to_typer(project: Path) -> None:
    res = cli("run", "short", "--bogus", cwd=project)
    assert res.returncode == 2
    assert res.stdout == "" and "No such option" in res.stderr


def test_hostile_names_keep_the_json_valid(project: Path) -> None:
    name = '"}\n{"ok": true, "x": "[red]\u202e\x00'
    res = cli("run", name, "--json", "--log-format", "json", cwd=project)
    assert res.returncode == 3
    (doc,) = json_lines(res.stdout)
    assert doc["ok"] is False and repr(name) in doc["error"]["message"]
    (record,) = json_lines(res.stderr)
    assert record["error"] == doc["error"]


def test_json_errors_never_carry_a_known_secret(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "S3cret-for-the-json-error-test"
    saved_mode = (MODE.json_logs, MODE.json_result)
    saved_context = swap_context(Context())
    try:
        secret_registry.register_secret(secret)
        MODE.json_logs = MODE.json_result = True
        report_failure("ConfigError", f"bad value {secret}", f"not {secret}", 3)
        for mode in ((False, True), (False, False)):
            MODE.json_logs, MODE.json_result = mode
            report_failure("ConfigError", f"bad value {secret}", f"not {secret}", 3)
    finally:
        MODE.json_logs, MODE.json_result = saved_mode
        swap_context(saved_context)
    out, err = capsys.readouterr()
    assert out.count('"ok": false') == 2 and err.count("bad value") == 2 + 1 + 1  # JSON: message and error
    assert secret not in out + err


# ------------------------------------------------------------------------------------------ logs
def test_logs_keeps_run_ids_whole_at_80_columns(project: Path) -> None:
    ids = [json.loads(cli("run", op, "--json", cwd=project).stdout)["run_id"] for op in (LONG_OP, "short")]
    res = cli("logs", cwd=project, columns=80)
    assert res.returncode == 0, res.stderr
    for run_id in ids:
        assert run_id in res.stdout
    assert LONG_OP in res.stdout  # not a terminal: the table keeps its natural width, nothing is cut
    assert "…" not in res.stdout


def test_logs_keeps_run_ids_whole_on_an_80_column_terminal(project: Path) -> None:
    run_id = json.loads(cli("run", LONG_OP, "--json", cwd=project).stdout)["run_id"]
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    env.update({"COLUMNS": "80", "TERM": "xterm"})
    with subprocess.Popen([str(MAILCONNECTOR), "logs"], cwd=project, stdin=subprocess.DEVNULL, stdout=slave,
                          stderr=slave, env=env) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    os.close(master)
    screen = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode())
    assert run_id in screen
    assert max(len(line) for line in screen.splitlines()) <= 80  # fitted to the terminal, the run id whole


def test_logs_of_an_unknown_operation_is_a_configuration_error(project: Path) -> None:
    res = cli("logs", "--operation", "nope", cwd=project)
    assert res.returncode == 3
    assert f"no operation named 'nope' (defined: {LONG_OP}, short, drain)" in res.stderr
    assert res.stdout == ""


def test_logs_of_a_known_operation_without_runs_is_empty(project: Path) -> None:
    res = cli("logs", "--operation", "short", "--json", cwd=project)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


def test_logs_of_a_removed_operation_that_has_runs(project: Path) -> None:
    run_id = json.loads(cli("run", "short", "--json", cwd=project).stdout)["run_id"]
    path = project / "mailconnector.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["operations"]["short"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = cli("logs", "--operation", "short", "--json", cwd=project)
    assert res.returncode == 0, res.stderr
    assert [r["run_id"] for r in json.loads(res.stdout)] == [run_id]


def test_logs_json_shows_field_names_as_written_in_the_project_file(project: Path) -> None:
    assert cli("run", "drain", cwd=project).returncode == 5  # recorded, with its settings, then failed
    listed = cli("logs", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert run["settings"]["source"]["criteria"]["from"] == "boss@example.test"
    assert "from_" not in listed.stdout
    shown = cli("logs", run["run_id"], "--json", cwd=project)
    assert "from_" not in shown.stdout and '"from": "boss@example.test"' in shown.stdout


# ------------------------------------------------------------------------------------------ --version
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(tmp_path: Path, flag: str) -> None:
    res = cli(flag, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"mailconnector {importlib.metadata.version('mailconnector')}\n"


def test_version_of_the_real_script(tmp_path: Path) -> None:
    res = real("--version", cwd=tmp_path)
    assert res.returncode == 0 and re.fullmatch(r"mailconnector \d+\.\d+\.\d+\S*\n", res.stdout), res


# ------------------------------------------------------------------------------------------ help
PYTHON_TYPES = re.compile(r"<(str|int|float|bool|path|file|directory|list|dict|uuid|datetime)\b|list\[|\{\w+\}")


def help_paths() -> list[tuple[str, ...]]:
    return sorted(commands())


@pytest.mark.parametrize("path", help_paths(), ids=lambda p: " ".join(p) or "mailconnector")
def test_help_shows_no_python_types(tmp_path: Path, path: tuple[str, ...]) -> None:
    res = cli(*path, "--help", cwd=tmp_path, columns=200)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout
    assert not PYTHON_TYPES.search(res.stdout), PYTHON_TYPES.search(res.stdout)
    usage = next(line for line in res.stdout.splitlines() if "Usage:" in line)
    assert not re.search(r"\{|\b[a-z]+_[a-z_]+\b", usage), usage  # arguments in capitals: CONNECTION, RUN_ID


def test_help_shows_plain_metavars() -> None:
    runner = CliRunner()
    send = runner.invoke(app, ["send", "--help"], env={"COLUMNS": "200"}).output
    assert "Usage: mailconnector send [OPTIONS] CONNECTION" in send
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"│\s*\*?\s*(--[\w-]+)(?:\s+-\w)?\s+(\S[^│]*?)\s{2,}",
                                                                 send)}
    assert rows["--to"] == "TEXT" and rows["--attach"] == "PATH" and rows["--output"] == "PATH"
    assert rows["--concurrency"].startswith("INTEGER RANGE")
    flag_row = next(line for line in send.splitlines() if "--json" in line)
    assert re.search(r"--json\s+Print the result", flag_row), flag_row  # a flag: no metavar at all
    logs = runner.invoke(app, ["logs", "--help"], env={"COLUMNS": "200"}).output
    assert "Usage: mailconnector logs [OPTIONS] [RUN_ID]" in logs


# ------------------------------------------------------------------------------------------ x- keys
ANCHORED = """\
x-mailserver: &server
  host: 127.0.0.1
  security: none
x-auth: &auth {type: basic, username: ops@example.test, password: "not-a-real-password"}
x-notes: [anything, {goes: here}, null]
connections:
  first:
    auth: *auth
    smtp: {<<: *server, port: 2525}
    imap: {<<: *server, port: 1143}
  second:
    auth: *auth
    smtp: {<<: *server, port: 2526}
    imap: {<<: *server, port: 1144}
"""


def test_x_keys_hold_anchors_that_two_connections_reuse(tmp_path: Path) -> None:
    path = tmp_path / "mailconnector.yaml"
    path.write_text(ANCHORED)
    project = Project.load(path)
    project.validate_all()
    assert project.connection_names == ["first", "second"]
    ports = [(project.connection(n).smtp.port, project.connection(n).imap.port) for n in ("first", "second")]
    assert ports == [(2525, 1143), (2526, 1144)]
    assert {project.connection(n).smtp.host for n in ("first", "second")} == {"127.0.0.1"}


def test_x_keys_through_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "mailconnector.yaml").write_text(ANCHORED)
    res = cli("logs", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


@pytest.mark.parametrize("key", ["x", "X-upper", "xconnections", "-x-", "1"])
def test_other_unknown_top_level_keys_are_still_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "mailconnector.yaml"
    path.write_text(f"connections: {{}}\n{key}: 1\n")
    with pytest.raises(ConfigError) as caught:
        Project.load(path)
    assert f"line 2: {key}: unknown section" in caught.value.message
    assert "x- are ignored" in caught.value.message


def test_the_schema_allows_x_keys(tmp_path: Path) -> None:
    schema = project_schema()
    assert schema["additionalProperties"] is False
    assert list(schema["patternProperties"]) == ["^x-"]
    res = cli("schema", "project", cwd=tmp_path, columns=200)
    assert json.loads(res.stdout)["patternProperties"] == schema["patternProperties"]


def test_the_mode_does_not_leak_between_runs(project: Path) -> None:
    """A run in JSON mode, then one without: the second speaks plain words again."""
    assert cli("run", "nope", "--json", "--log-format", "json", cwd=project).returncode == 3
    res = cli("run", "nope", cwd=project)
    assert res.stdout == "" and res.stderr.startswith("error (ConfigError): ")
    assert (_common.MODE.json_logs, _common.MODE.json_result) == (False, False)
