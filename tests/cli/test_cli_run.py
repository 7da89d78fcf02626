"""``mailconnector run``, ``logs``, ``schema`` and ``init`` as scripts see them: exit codes, JSON output, and
errors that name the project file, the line and the field. These run without a mail server (file
operations; a folder lease held by "another process"); runs against the sandbox are in tests/integration.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness.runner import Result, cli as run_cli

from mailconnector.project import Project
from mailconnector.state import Store

CONNECTION = {
    "auth": {"type": "basic", "username": "ops@example.test", "password": "${env:MC_CLI_RUN_PASSWORD}"},
    "smtp": {"host": "127.0.0.1", "port": 9, "security": "none"},  # never contacted
    "imap": {"host": "127.0.0.1", "port": 9, "security": "none"},
}

FAILS_ON_THREE = '''\
def check(record):
    if record["n"] == 3:
        raise ValueError("three is not allowed")
    return {"n": record["n"], "double": record["n"] * 2}
'''


def cli(*args: str, cwd: Path) -> Result:
    """The program's entry point in this process, with a wide terminal and the project's password variable."""
    return run_cli(args, cwd, {"MC_CLI_RUN_PASSWORD": "not-a-real-password"}, columns=250)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    doc: dict[str, Any] = {
        "connections": {"mb": CONNECTION},
        "activities": {
            "numbers": {"type": "file", "path": "numbers.jsonl"},
            "doubled": {"type": "file", "path": "doubled.csv"},
            "copy": {"type": "file", "path": "copy.json"},
            "inbox": {"type": "read-email", "connection": "mb", "folder": "INBOX"},
        },
        "operations": {
            "double": {"source": "numbers", "target": "doubled", "transformation": "cli_run_tx:check",
                       "on_failure": "copy"},
            "copy": {"source": "numbers", "target": "copy"},
            "drain": {"source": "inbox", "target": "copy"},
        },
    }
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "numbers.jsonl").write_text("".join(json.dumps({"n": n}) + "\n" for n in range(1, 6)))
    (tmp_path / "cli_run_tx.py").write_text(FAILS_ON_THREE)
    return tmp_path


def test_run_then_logs_show_the_failed_record(project: Path) -> None:
    run = cli("run", "double", "--json", cwd=project)
    assert run.returncode == 1, run.stderr  # some records failed, the rest succeeded
    result = json.loads(run.stdout)
    assert (result["status"], result["read"], result["written"], result["failed"]) == ("partial", 5, 4, 1)
    assert [(c["operation"], c["status"]) for c in result["chained"]] == [("copy", "success")]
    assert (project / "doubled.csv").read_text().splitlines() == ["n,double", "1,2", "2,4", "4,8", "5,10"]
    assert [r["n"] for r in json.loads((project / "copy.json").read_text())] == [1, 2, 3, 4, 5]

    shown = cli("logs", result["run_id"], "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    log = json.loads(shown.stdout)
    assert (log["run_id"], log["operation"], log["status"]) == (result["run_id"], "double", "partial")
    assert (log["records_read"], log["records_written"], log["records_failed"]) == (5, 4, 1)
    assert log["errors"] == [{"record": "record 2", "error": {
        "type": "TransformationError", "stage": "transformation", "message": "ValueError: three is not allowed",
        "record": {"n": 3}}}]
    assert log["settings"]["transformation"]["callable"] == "cli_run_tx:check"
    assert log["settings"]["target"]["path"] == str(project / "doubled.csv")
    assert log["started_at"] and log["ended_at"]

    text = cli("logs", result["run_id"], cwd=project)
    assert text.returncode == 0 and "record 2" in text.stdout and "three is not allowed" in text.stdout

    listed = cli("logs", "--json", cwd=project)
    runs = json.loads(listed.stdout)
    assert [(r["operation"], r["status"]) for r in runs] == [("copy", "success"), ("double", "partial")]
    only = json.loads(cli("logs", "--json", "--operation", "copy", cwd=project).stdout)
    assert [r["operation"] for r in only] == ["copy"]
    table = cli("logs", cwd=project)
    assert table.returncode == 0 and result["run_id"] in table.stdout and "partial" in table.stdout


def test_a_clean_run_exits_0_and_reports_on_stderr(project: Path) -> None:
    run = cli("run", "copy", cwd=project)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""  # results go to stderr unless --json
    assert "copy: success — read 5, written 5, failed 0" in run.stderr_flat


def test_run_restores_the_signal_handlers(project: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert cli("run", "copy", cwd=project).returncode == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_logs_of_an_unknown_run(project: Path) -> None:
    shown = cli("logs", "20000101-000000-abcdef", cwd=project)
    assert shown.returncode == 8
    assert "no run '20000101-000000-abcdef'" in shown.stderr_flat


def test_an_unknown_operation(project: Path) -> None:
    run = cli("run", "nope", cwd=project)
    assert run.returncode == 3
    assert "no operation named 'nope' (defined: double, copy, drain)" in run.stderr_flat


@pytest.mark.parametrize(("operation", "edit", "expected"), [
    ("copy", lambda t: t.replace("  copy:\n    source: numbers", "  copy:\n    source: [numbers"), "invalid YAML"),
    ("drain", lambda t: t.replace("type: read-email", "type: imap"),
     "activities.inbox.type: unknown activity type 'imap'"),
    ("copy", lambda t: t.replace("    target: copy\n", "    target: copy\n    on_success: missing\n", 1),
     "operations.copy.on_success: no operation named 'missing'"),
    ("double", lambda t: t.replace("transformation: cli_run_tx:check", "transformation: cli_run_tx"),
     "operations.double.transformation: 'cli_run_tx' is not module:function"),
])
def test_a_broken_project_file_exits_3_naming_file_line_and_field(project: Path, operation: str, edit: Any,
                                                                  expected: str) -> None:
    path = project / "mailconnector.yaml"
    text = path.read_text()
    path.write_text(edit(text))
    assert path.read_text() != text
    run = cli("run", operation, cwd=project)
    assert run.returncode == 3, run.stderr
    assert "mailconnector.yaml: line " in run.stderr_flat and expected in run.stderr_flat
    # An entry the operation does not use does not stop it (entries are checked when used).
    if operation != "copy":
        assert cli("run", "copy", cwd=project).returncode == 0


def test_a_folder_held_by_another_consumer_exits_8(project: Path) -> None:
    from mailconnector.state import account_key

    store = Store(project / ".mailconnector" / "state.db")
    lease = f"read:{account_key('127.0.0.1', 9, 'ops@example.test')}/INBOX"  # the mailbox, whatever its name
    assert store.acquire_lease(lease, ttl=60, holder="another-process")
    for args in (("run", "drain"), ("run", "drain", "--watch")):
        run = cli(*args, cwd=project)
        assert run.returncode == 8, run.stderr
        assert f"{lease.split(':', 1)[1]} is being processed by another run" in run.stderr_flat
        assert "--wait" in run.stderr_flat


def test_a_file_source_cannot_be_watched(project: Path) -> None:
    run = cli("run", "copy", "--watch", cwd=project)
    assert run.returncode == 3
    assert "cannot be watched" in run.stderr_flat


# ----------------------------------------------------------------------------------------------- schema
def test_schema_lists_and_prints_the_project_schema(project: Path) -> None:
    listed = cli("schema", cwd=project)
    assert listed.returncode == 0
    assert listed.stdout.split() == ["send-request", "send-response", "read-record", "project"]
    printed = cli("schema", "project", cwd=project)
    assert printed.returncode == 0
    schema = json.loads(printed.stdout)
    assert schema["title"] == "mailconnector project file"
    assert set(schema["properties"]) == {"connections", "activities", "operations", "settings"}
    read = schema["$defs"]["ReadActivity"]["properties"]
    assert {"folder", "after_read", "criteria", "attachments"} <= set(read)
    send = schema["$defs"]["SendActivity"]["properties"]
    assert {"concurrency", "rate_limit", "defaults", "to", "subject"} <= set(send)
    assert cli("schema", "nope", cwd=project).returncode == 3


# ------------------------------------------------------------------------------------------------- init
def test_init_writes_a_project_that_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "new-project"
    made = cli("init", str(target), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    path = target / "mailconnector.yaml"
    assert path.exists() and (target / "outbox.jsonl").exists()
    assert "${env:MAILBOX_PASSWORD}" in path.read_text()  # no secret in clear
    monkeypatch.setenv("MAILBOX_PASSWORD", "set-by-the-user")
    project = Project.load(path)
    project.validate_all()
    assert set(project._section("operations")) == {"send-outbox", "inbox-to-file"}
    again = cli("init", str(target), cwd=tmp_path)
    assert again.returncode == 3 and "already exists" in again.stderr_flat
    path.write_text("# mine\n")
    assert cli("init", str(target), "--force", cwd=tmp_path).returncode == 0
    Project.load(path).validate_all()
