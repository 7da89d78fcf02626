"""``mailconnector send`` as a script runs it: the installed command in a real process, a project file in a
temporary directory pointing at the sandbox, and the delivered mail read back over IMAP."""

from __future__ import annotations

import email
import json
import os
import socket
import subprocess
import sys
import uuid
from email import policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import received

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
PW_VAR = "MC_CLI_SEND_PASSWORD"
BAD_PW = "wrong-password-for-the-cli-test"


@pytest.fixture
def project(sandbox: Sandbox, tmp_path: Path) -> Path:
    """A project with ``mail`` (alice, good password from the environment), ``wrong`` (a bad password) and
    ``dead`` (nothing listens on its SMTP port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    good = sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")
    wrong = sandbox.connection_dict("alice", password=BAD_PW)
    dead = sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")
    dead["smtp"] = {"host": "127.0.0.1", "port": dead_port, "security": "none"}
    (tmp_path / "mailconnector.yaml").write_text(
        yaml.safe_dump({"connections": {"mail": good, "wrong": wrong, "dead": dead}}, sort_keys=False))
    return tmp_path


def run(sandbox: Sandbox, cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", PW_VAR: sandbox.info.password("alice")})
    return subprocess.run([str(MAILCONNECTOR), "send", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def now_in(sandbox: Sandbox, user: str, tok: str) -> int:
    conn = Connection.from_dict(sandbox.connection_dict(user), name=f"cli-count-{user}")
    with ImapSession(conn) as imap:
        imap.select("INBOX", readonly=True)
        return len(imap.search(["SUBJECT", tok]))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tree(part: Message) -> Any:
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        return part.get_content_type(), [tree(c) for c in children if isinstance(c, Message)]
    return part.get_content_type()


def test_jsonl_input_writes_responses_and_exits_1_when_some_failed(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    (project / "outbox.jsonl").write_text(
        json.dumps({"to": "bob@example.test", "subject": f"cli {tok} 0", "text": "first"}) + "\n"
        + json.dumps({"to": "carol@example.test", "subject": f"cli {tok} 1", "text": "second"}) + "\n"
        + json.dumps({"id": "no-rcpt", "subject": "nobody", "text": "x"}) + "\n"
        + "{not json\n")
    res = run(sandbox, project, "mail", "--input", "outbox.jsonl", "--output", "responses.jsonl")
    assert res.returncode == 1, res.stderr
    out = sorted(lines(project / "responses.jsonl"), key=lambda r: r["index"])
    assert [r["status"] for r in out] == ["sent", "sent", "failed", "failed"]
    assert out[2]["id"] == "no-rcpt" and out[2]["error"]["field"] == "to"
    assert out[2]["error"]["message"].startswith("record 'no-rcpt': ")
    assert out[3]["error"]["message"].startswith("record 3 (line 4): invalid JSON")
    assert "failed record 2" in res.stderr and "failed record 3" in res.stderr
    assert "4 record(s): 2 failed, 2 sent" in res.stderr
    assert res.stdout == ""
    received(sandbox, "bob", f"cli {tok} 0")
    received(sandbox, "carol", f"cli {tok} 1")

    # The same input again: nothing is sent twice (the project's send ledger).
    again = run(sandbox, project, "mail", "--input", "outbox.jsonl", "--output", "again.jsonl")
    assert again.returncode == 1
    statuses = [r["status"] for r in sorted(lines(project / "again.jsonl"), key=lambda r: r["index"])]
    assert statuses == ["skipped_duplicate", "skipped_duplicate", "failed", "failed"]
    assert now_in(sandbox, "bob", f"cli {tok} 0") == 1 and now_in(sandbox, "carol", f"cli {tok} 1") == 1


def test_json_array_with_json_output_and_a_default_sender(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    (project / "outbox.json").write_text(json.dumps([
        {"to": "dave@example.test", "subject": f"json {tok} a", "text": "a"},
        {"to": "dave@example.test", "subject": f"json {tok} b", "text": "b", "from": "alice@example.test"},
    ]))
    res = run(sandbox, project, "mail", "--input", "outbox.json", "--json", "--concurrency", "2",
              "--from", "Shop Desk <alice@example.test>")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"sent": 2}
    assert [r["index"] for r in doc["responses"]] == [0, 1]
    assert all(r["message_id"].startswith("<") and r["accepted"] == ["dave@example.test"]
               for r in doc["responses"])
    [a] = received(sandbox, "dave", f"json {tok} a")
    [b] = received(sandbox, "dave", f"json {tok} b")
    assert a["From"] == "Shop Desk <alice@example.test>"  # --from fills records without one
    assert b["From"] == "alice@example.test"
    assert a["Message-ID"] == doc["responses"][0]["message_id"]


def test_csv_on_stdin_with_a_row_of_too_many_cells(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    csv_text = (
        "to,cc,subject,text\n"
        f"erin@example.test,,csv {tok} 0,hello\n"
        f"erin@example.test,,csv {tok} 1,hello,extra\n"
        f'"erin@example.test, frank@example.test",,"csv {tok} 2",hi both\n'
    )
    res = run(sandbox, project, "mail", "--input", "-", "--json", stdin=csv_text)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"sent": 2, "failed": 1}
    bad = doc["responses"][1]
    assert bad["status"] == "failed" and bad["error"]["type"] == "MessageError"
    assert bad["error"]["message"] == "record 1 (line 3): more cells than header columns"
    assert doc["responses"][2]["accepted"] == ["erin@example.test", "frank@example.test"]
    received(sandbox, "erin", f"csv {tok} 0")
    received(sandbox, "frank", f"csv {tok} 2")


def test_one_message_from_flags_with_an_attachment(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    attachment = project / "résumé.pdf"
    attachment.write_bytes(b"%PDF-1.4 not really\n" + bytes(range(256)))
    res = run(sandbox, project, "mail", "--to", "bob@example.test", "--cc", "carol@example.test",
              "--subject", f"flags {tok} ✓", "--text", "plain", "--html", "<b>rich</b>",
              "--attach", str(attachment), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"sent": 1}
    for user in ("bob", "carol"):
        [msg] = received(sandbox, user, f"flags {tok}")
        assert msg["Subject"] == f"flags {tok} ✓"
        assert tree(msg) == ("multipart/mixed", [("multipart/alternative", ["text/plain", "text/html"]),
                                                 "application/pdf"])
        [part] = list(msg.iter_attachments())
        assert part.get_filename() == "résumé.pdf"
        assert part.get_payload(decode=True) == attachment.read_bytes()


def test_dry_run_writes_eml_files_and_never_connects(sandbox: Sandbox, project: Path) -> None:
    (project / "outbox.jsonl").write_text(
        "".join(json.dumps({"to": "bob@example.test", "subject": f"dry {i}", "text": "x"}) + "\n"
                for i in range(3)))
    # "dead" has no SMTP server behind it: a dry run must not need one.
    res = run(sandbox, project, "dead", "--input", "outbox.jsonl", "--dry-run", "eml", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"dry_run": 3}
    files = sorted((project / "eml").glob("*.eml"))
    assert len(files) == 3
    assert sorted(project / r["eml_path"] for r in doc["responses"]) == files  # as given: relative to the cwd
    first = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert first["Subject"] == "dry 0" and first["Message-ID"] == doc["responses"][0]["message_id"]


def test_a_refused_login_exits_4_and_never_shows_the_password(sandbox: Sandbox, project: Path) -> None:
    res = run(sandbox, project, "wrong", "--to", "bob@example.test", "--subject", "x", "--text", "y", "--json")
    assert res.returncode == 4, (res.returncode, res.stderr)
    doc = json.loads(res.stdout)
    [r] = doc["responses"]
    assert r["status"] == "failed" and r["error"]["type"] == "AuthenticationError"
    assert "535" in r["error"]["message"]
    assert BAD_PW not in res.stdout + res.stderr


USAGE_ERRORS = {
    "no input and no recipient": ["mail"],
    "--input with --to": ["mail", "--input", "x.jsonl", "--to", "bob@example.test"],
    "--input with --attach": ["mail", "--input", "x.jsonl", "--attach", "x.jsonl"],
    "unknown --format": ["mail", "--input", "x.jsonl", "--format", "xml"],
}


def test_usage_errors_exit_2(sandbox: Sandbox, project: Path) -> None:
    (project / "x.jsonl").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", PW_VAR: sandbox.info.password("alice")})
    procs = {name: subprocess.Popen([str(MAILCONNECTOR), "send", *args], cwd=project, env=env, text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in USAGE_ERRORS.items()}  # in parallel: each start costs the interpreter's import
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (name, proc.returncode, err)
        assert "--input" in err or "--format" in err, (name, err)
