"""Operations against the real sandbox (Postfix + Dovecot): the example chain end to end, the ack protocol
under each error policy, transformations that drop or multiply records, and SIGTERM in the middle of a run.

Mailboxes: the example chain runs in a sandbox of its own (it reads and moves a whole INBOX); every other
test works in a fresh folder of its own, filled with IMAP APPEND, and sends only to erin, with unique
subjects, looking at erin's INBOX through those subjects alone.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for
from ops_support import append_messages, jsonl, read_state, subjects_in, write_project

from mailconnector.connection import Connection
from mailconnector.logs import RedactingFormatter, run_context
from mailconnector.operations import run_operation
from mailconnector.project import Project
from mailconnector.sandbox import Sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BIN = Path(sys.executable).parent / "mailconnector"


# ------------------------------------------------------------------------------------ the example chain
@pytest.fixture
def demo_sandbox() -> Iterator[Sandbox]:
    """The example chain reads a whole INBOX and moves what it finds: it gets mailboxes of its own, the
    demo's (alice sends, bob receives, carol is copied), so that it neither takes nor sees other tests' mail."""
    sbx = Sandbox.start()
    try:
        yield sbx
    finally:
        sbx.remove()


def test_example_operations_end_to_end(demo_sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox = demo_sandbox
    for name in ("transform.py", "outbox.jsonl"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    shutil.copytree(EXAMPLES / "files", tmp_path / "files")
    records = [json.loads(line) for line in (tmp_path / "outbox.jsonl").read_text().splitlines() if line]
    # As the demo builds it: the sandbox's connections (`sandbox` = alice, `sandbox-bob` = bob, ...) plus
    # examples/operations.yaml.
    path = sandbox.write_project(tmp_path / "mailconnector.yaml")
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc.update(yaml.safe_load((EXAMPLES / "operations.yaml").read_text()))
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    project = Project.load(path)
    project.validate_all()
    alice, bob, carol = (Connection.from_dict(sandbox.connection_dict(u), name=u) for u in ("alice", "bob", "carol"))

    sent = run_operation(project, "send-outbox")
    assert (sent.status, sent.read, sent.written, sent.failed) == ("success", 5, 5, 0)
    wait_for(lambda: len(read_state(bob, "INBOX")) >= 5, timeout=20)
    wait_for(lambda: len(read_state(carol, "INBOX")) >= 1, timeout=20)  # the cc

    inbox = run_operation(project, "inbox-to-jsonl")
    assert (inbox.status, inbox.read, inbox.written) == ("success", 5, 5)
    assert [(c.operation, c.status, c.written) for c in inbox.chained] == [("acknowledge", "success", 5)]
    extracted = jsonl(tmp_path / "inbox.jsonl")
    expected_subjects = {r["subject"] for r in records if r.get("subject")} | {"Welcome, Bob <the builder>!"}
    assert {r["subject"] for r in extracted} == expected_subjects
    assert {r["from"] for r in extracted} == {"alice@example.test"}
    saved = [Path(p) for r in extracted for p in r["attachments"]]
    assert sorted(p.name for p in saved) == sorted(["report.pdf", "logo.png", "données été.csv"])
    assert all(p.is_file() and p.is_relative_to(tmp_path / "attachments") for p in saved)
    assert len({p.parent for p in saved}) == 3  # one folder per email
    # after_read: move:Archive — the inbox is empty, the archive holds the five, read.
    assert read_state(bob, "INBOX") == {}
    archived = read_state(bob, "Archive")
    assert set(archived) == expected_subjects and all(archived.values())

    # The acknowledgements reach alice, threaded under the originals.
    wait_for(lambda: len(read_state(alice, "INBOX")) >= 5, timeout=20)
    replies = read_state(alice, "INBOX")
    assert set(replies) == {f"Re: {s}" for s in expected_subjects}

    # Reruns send nothing twice: the outbox's records have ids, and the acknowledgements' Message-IDs are
    # derived from their source records, so the send ledger knows them all.
    # They count as skipped, not as written: nothing was sent.
    again = run_operation(project, "send-outbox")
    assert (again.status, again.written, again.skipped) == ("success", 0, 5)
    ack_again = run_operation(project, "acknowledge")
    assert (ack_again.status, ack_again.written, ack_again.skipped) == ("success", 0, 5)
    logged_again = project.store().get_run(again.run_id)
    assert logged_again is not None
    assert (logged_again["records_written"], logged_again["records_skipped"]) == (0, 5)
    assert run_operation(project, "inbox-to-jsonl").read == 0
    time.sleep(1.0)  # give Postfix the time to deliver anything that was (wrongly) sent again
    assert read_state(bob, "INBOX") == {}
    assert len(read_state(alice, "INBOX")) == 5
    logged = {r["operation"] for r in project.store().list_runs()}
    assert logged == {"send-outbox", "inbox-to-jsonl", "acknowledge"}


# ------------------------------------------------------------------------------------- the ack protocol
GATE = '''\
from pathlib import Path

def gate(record):
    """Fails for a subject containing "poison" until the file `cured` exists beside this module."""
    if "poison" in record["subject"] and not (Path(__file__).parent / "cured").exists():
        raise ValueError("cannot handle " + record["subject"])
    return {"subject": record["subject"], "uid": record["uid"]}


def gate_csv(record):
    """A poisoned record carries a field the CSV target has no column for, until cured."""
    out = {"subject": record["subject"], "uid": record["uid"]}
    if "poison" in record["subject"] and not (Path(__file__).parent / "cured").exists():
        out["note"] = "not in the header"
    return out
'''


def read_op_project(tmp_path: Path, sandbox: Sandbox, folder: str, *, module: str, source: str,
                    target: dict[str, Any], extra_activities: dict[str, Any] | None = None,
                    **op: Any) -> Project:
    (tmp_path / f"{module}.py").write_text(source)
    activities = {"box": {"type": "read-email", "connection": "erin", "folder": folder, "batch_size": 2},
                  "out": target, **(extra_activities or {})}
    operations = {"op": {"source": "box", "target": "out", "transformation": f"{module}:{op.pop('function')}",
                         **op}}
    path = write_project(tmp_path / "mailconnector.yaml", sandbox, {"erin": "erin"}, activities, operations)
    return Project.load(path)


def delivered_subjects(path: Path) -> list[str]:
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [row["subject"] for row in csv.DictReader(f)]
    return [r["subject"] for r in jsonl(path)]


@pytest.mark.parametrize("stage", ["transformation", "target"])
@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_failed_record_stays_unread_and_a_rerun_delivers_exactly_what_was_left(
        policy: str, stage: str, sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
        fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    names = ["m0", "m1", "m2 poison", "m3", "m4", "m5"]
    append_messages(conn, folder, names)
    module = f"gate_{policy}_{uuid.uuid4().hex[:6]}"
    # The third email fails: in the transformation (it raises), or in the target (a CSV file refuses a
    # record with a field its columns lack). Both until the file `cured` appears.
    out = tmp_path / ("out.jsonl" if stage == "transformation" else "out.csv")
    project = read_op_project(tmp_path, sandbox, folder, module=module, source=GATE,
                              function="gate" if stage == "transformation" else "gate_csv",
                              target={"type": "file", "path": out.name, "append": True}, on_error=policy)

    first = run_operation(project, "op")
    assert first.status == "partial" and first.failed == 1
    delivered = delivered_subjects(out)
    state = read_state(conn, folder)
    if policy == "stop":
        assert delivered == ["m0", "m1"]
        assert first.read == 3  # nothing was read past the failed record
    else:
        assert delivered == ["m0", "m1", "m3", "m4", "m5"]
    # Exactly what was delivered is marked read; everything else (the failed one included) is still unread.
    assert {s for s, seen in state.items() if seen} == set(delivered)
    log = project.store().get_run(first.run_id)
    assert log is not None and log["status"] == "partial"
    assert len(log["errors"]) == 1 and log["errors"][0]["record"].startswith("uid ")
    error = log["errors"][0]["error"]
    record = error.pop("record")  # the record beside its error, as the read gave it to the transformation
    if stage == "transformation":
        assert error == {"type": "TransformationError", "stage": "transformation",
                         "message": "ValueError: cannot handle m2 poison"}
        assert record["subject"] == "m2 poison" and record["uid"] == int(log["errors"][0]["record"].split()[1])
    else:
        assert error["stage"] == "target" and "have no place for: note" in error["message"]
        assert record["subject"] == "m2 poison" and "note" in record  # as the transformation made it

    (tmp_path / "cured").touch()
    second = run_operation(project, "op")
    assert second.status == "success"
    after = delivered_subjects(out)
    assert after[len(delivered):] == [n for n in names if n not in delivered]  # exactly those, in order
    assert sorted(after) == sorted(names)  # nothing twice
    assert all(read_state(conn, folder).values())
    assert run_operation(project, "op").read == 0


SPLIT = '''\
def split(record):
    """Two messages per email (one refused for "poison" subjects until cured); none for "drop" subjects."""
    from pathlib import Path

    subject = record["subject"]
    if "drop" in subject:
        return None
    token = subject.split()[0]
    cured = (Path(__file__).parent / "cured").exists()
    second = "erin@example.test" if cured or "poison" not in subject else "nobody-here@example.test"
    return [{"to": "erin@example.test", "subject": f"{token} part 1 of {subject}", "text": "1"},
            {"to": second, "subject": f"{token} part 2 of {subject}", "text": "2"}]
'''


def test_an_email_is_acked_only_when_the_target_took_every_record_made_of_it(
        sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
        fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    token = f"split-{uuid.uuid4().hex[:8]}"
    names = [f"{token} a", f"{token} b poison", f"{token} c drop", f"{token} d"]
    append_messages(conn, folder, names)
    module = f"split_{uuid.uuid4().hex[:6]}"
    project = read_op_project(tmp_path, sandbox, folder, module=module, source=SPLIT, function="split",
                              target={"type": "send-email", "connection": "erin", "concurrency": 2})
    first = run_operation(project, "op")
    # 4 emails read; 6 messages made (2 + 2 + 0 + 2); one refused by the server (550 at RCPT).
    assert (first.read, first.written, first.failed) == (4, 5, 1)
    log = project.store().get_run(first.run_id)
    assert log is not None
    [error] = log["errors"]
    assert error["record"].endswith("output 1") and error["error"]["stage"] == "target"
    assert error["error"].get("code") == 550
    state = read_state(conn, folder)
    assert state == {names[0]: True, names[1]: False, names[2]: True, names[3]: True}

    (tmp_path / "cured").touch()
    second = run_operation(project, "op")
    # The rerun makes both messages again; the first is found in the send ledger and not sent twice.
    assert (second.read, second.written, second.skipped, second.failed) == (1, 1, 1, 0)
    assert all(read_state(conn, folder).values())
    expected = sorted(f"{token} part {p} of {n}" for n in (names[0], names[1], names[3]) for p in (1, 2))
    wait_for(lambda: len(subjects_in(conn, "INBOX", token)) >= 6, timeout=20)
    time.sleep(0.5)
    assert subjects_in(conn, "INBOX", token) == expected  # each exactly once


REFUSE_THIRD = '''\
from pathlib import Path

def to_erin(record):
    """The third email is answered to an address the server refuses (550) until `cured` exists."""
    subject = record["subject"]
    cured = (Path(__file__).parent / "cured").exists()
    bad = subject.endswith(" 2") and not cured
    to = "nobody-{}@example.test".format(subject.split()[0]) if bad else "erin@example.test"
    return {"to": to, "subject": "re " + subject, "text": "ok"}
'''


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_target_refusing_the_third_record(policy: str, sandbox: Sandbox, tmp_path: Path,
                                            make_conn: Callable[..., Connection],
                                            fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    token = f"refuse-{uuid.uuid4().hex[:8]}"
    names = [f"{token} {i}" for i in range(10)]
    append_messages(conn, folder, names)
    module = f"refuse_{uuid.uuid4().hex[:6]}"
    project = read_op_project(tmp_path, sandbox, folder, module=module, source=REFUSE_THIRD, function="to_erin",
                              target={"type": "send-email", "connection": "erin", "concurrency": 1},
                              on_error=policy)
    result = run_operation(project, "op")
    assert result.failed == 1 and result.status == "partial"
    state = read_state(conn, folder)
    assert state[names[2]] is False
    read_ones = sorted(s for s, seen in state.items() if seen)
    if policy == "continue":
        assert read_ones == sorted(n for n in names if n != names[2])
    else:
        # Nothing is read from the source after the failure; records already handed to the SMTP pipeline
        # when the refusal came back (it prepares the next messages while one is sent) are still
        # delivered, and acknowledged. So: read = delivered + the failed one, and the rest stays unread.
        assert {names[0], names[1]} <= set(read_ones) and names[-1] not in read_ones
        assert result.read == len(read_ones) + 1 == result.written + 1
    # Whatever was acked was delivered, and whatever was delivered was acked.
    wait_for(lambda: len(subjects_in(conn, "INBOX", f"re {token}")) >= len(read_ones), timeout=20)
    time.sleep(0.3)
    assert subjects_in(conn, "INBOX", f"re {token}") == sorted(f"re {n}" for n in read_ones)

    # Once the cause is fixed, a rerun delivers exactly what was left, and nothing twice.
    (tmp_path / "cured").touch()
    rest = run_operation(project, "op")
    assert (rest.status, rest.read) == ("success", len(names) - len(read_ones))
    assert all(read_state(conn, folder).values())
    wait_for(lambda: len(subjects_in(conn, "INBOX", f"re {token}")) >= len(names), timeout=20)
    time.sleep(0.3)
    assert subjects_in(conn, "INBOX", f"re {token}") == sorted(f"re {n}" for n in names)


def test_a_json_array_target_acks_once_the_array_is_written(
        sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
        fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    append_messages(conn, folder, ["j0", "j1 poison", "j2"])
    module = f"gate_json_{uuid.uuid4().hex[:6]}"
    project = read_op_project(tmp_path, sandbox, folder, module=module, source=GATE, function="gate",
                              target={"type": "file", "path": "out.json"})
    result = run_operation(project, "op")
    assert (result.status, result.written, result.failed) == ("partial", 2, 1)
    assert [r["subject"] for r in json.loads((tmp_path / "out.json").read_text())] == ["j0", "j2"]
    assert read_state(conn, folder) == {"j0": True, "j1 poison": False, "j2": True}
    (tmp_path / "cured").touch()
    assert run_operation(project, "op").written == 1
    # File targets append: the array grows by this run's records, keeping what the first run wrote
    # (and acknowledged: its emails are marked read).
    assert [r["subject"] for r in json.loads((tmp_path / "out.json").read_text())] == ["j0", "j2", "j1 poison"]


# ------------------------------------------------------------------------------------ SIGTERM mid-run
SLOW = '''\
import time
from pathlib import Path

def slow(record):
    """While the file `slow` exists: 10 ms a record for the first 30, then 50 ms (room for the signal)."""
    if (Path(__file__).parent / "slow").exists():
        time.sleep(0.01 if int(record["subject"].split()[1]) < 30 else 0.05)
    return {"subject": record["subject"], "uid": record["uid"]}
'''


def test_sigterm_in_the_middle_of_a_run(sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
                                        fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    names = [f"bulk {i:03d}" for i in range(200)]
    append_messages(conn, folder, names)
    module = f"slow_{uuid.uuid4().hex[:6]}"
    project = read_op_project(tmp_path, sandbox, folder, module=module, source=SLOW, function="slow",
                              target={"type": "file", "path": "out.jsonl"})
    out = tmp_path / "out.jsonl"
    (tmp_path / "slow").touch()
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen([str(BIN), "run", "op", "--project", str(project.path), "--json"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(jsonl(out)) >= 30, timeout=30)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr.decode()
    assert b"stopping after the record in hand" in stderr
    result = json.loads(stdout)
    assert result["status"] == "interrupted"
    written = [r["subject"] for r in jsonl(out)]
    assert 30 <= len(written) < 200 and len(set(written)) == len(written)
    state = read_state(conn, folder)
    assert {s for s, seen in state.items() if seen} == set(written)  # acked == taken by the target
    log = Project.load(project.path).store().get_run(result["run_id"])
    assert log is not None and log["status"] == "interrupted" and log["records_written"] == len(written)

    # The next run delivers the rest, and nothing twice.
    (tmp_path / "out.jsonl").rename(tmp_path / "first.jsonl")
    (tmp_path / "slow").unlink()
    rest = run_operation(Project.load(project.path), "op")
    assert rest.status == "success"
    assert sorted(written + [r["subject"] for r in jsonl(out)]) == names


class _Lines(logging.Handler):
    """Each record as the JSON log format writes it, with the thread that wrote it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(RedactingFormatter(json_lines=True))
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.threadName, json.loads(self.format(record))))


def test_every_log_line_of_a_run_carries_its_run_id(sandbox: Sandbox, tmp_path: Path,
                                                     make_conn: Callable[..., Connection],
                                                     fresh_folder: Callable[[str], str]) -> None:
    """Lines written by the run's own thread, its fetch thread, its send workers and its lease keeper name the
    run and the operation (JSON fields; `[run ID]` in text); lines outside a run name none."""
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    token = f"logged-{uuid.uuid4().hex[:8]}"
    append_messages(conn, folder, [f"{token} {i}" for i in range(4)])
    module = f"refuse_{uuid.uuid4().hex[:6]}"
    project = read_op_project(tmp_path, sandbox, folder, module=module, source=REFUSE_THIRD, function="to_erin",
                              target={"type": "send-email", "connection": "erin", "concurrency": 2},
                              on_error="continue")
    handler = _Lines()
    root = logging.getLogger("mailconnector")
    wire = logging.getLogger("mailconnector.protocol")  # the reader's and the send workers' lines
    saved = (root.level, wire.level, root.handlers[:])
    root.handlers[:] = [handler]  # only this one: a handler left by an earlier test may write to a closed stream
    root.setLevel(logging.DEBUG)
    wire.setLevel(logging.DEBUG)
    try:
        logging.getLogger("mailconnector.test").debug("before the run")
        result = run_operation(project, "op")
        logging.getLogger("mailconnector.test").debug("after the run")
    finally:
        root.setLevel(saved[0])
        wire.setLevel(saved[1])
        root.handlers[:] = saved[2]
    assert result.failed == 1  # the refused third record: a warning logged by the run
    during = handler.lines[1:-1]
    threads = {thread.split("_")[0] for thread, _ in during}
    assert {"MainThread", "mc-send"} <= threads, threads
    assert all((line.get("run_id"), line.get("operation")) == (result.run_id, "op") for _, line in during), [
        (t, line) for t, line in during if line.get("run_id") != result.run_id]
    assert "run_id" not in handler.lines[0][1] and "run_id" not in handler.lines[-1][1]
    text = RedactingFormatter().format(logging.LogRecord("mailconnector.x", logging.INFO, "", 0, "m", None, None))
    assert "[run" not in text
    with run_context("20260101-000000-abcdef", "op"):
        text = RedactingFormatter().format(logging.LogRecord("mailconnector.x", logging.INFO, "", 0, "m", None, None))
    assert text.endswith("mailconnector.x [run 20260101-000000-abcdef]: m")
