"""Stopping things at awkward moments, as users and machines do: Ctrl-C during ``send`` (at 50 moments, and
twice in a row), SIGKILL during a ``run`` that writes a file, and a second run waiting for the first. Each
case counts what reached the mailbox or the file: nothing lost, nothing sent twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _mail import append_all, make_message
from cli_harness.runner import Result, cli as run_cli
from conftest import wait_for

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.state import LeaseKeeper, Store, account_key

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
PW_VAR = "MC_CLI_INTERRUPT_PASSWORD"
SLOW = "import time\n\ndef slow(record):\n    time.sleep(0.004)\n    return {'subject': record['subject']}\n"


@pytest.fixture
def project(sandbox: Sandbox, tmp_path: Path) -> Path:
    doc = {"connections": {"mail": sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}"),
                           "reader": sandbox.connection_dict("dave")}}
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path


def cli(sandbox: Sandbox, cwd: Path, *args: str) -> Result:
    return run_cli(args, cwd, {PW_VAR: sandbox.info.password("alice")})


@pytest.fixture
def quiet_sigint() -> Iterator[None]:
    """A SIGINT that lands after the command has ended (it was not waiting for it) must not stop the tests."""
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def subjects_in(sandbox: Sandbox, user: str, tok: str, at_least: int) -> list[str]:
    conn = Connection.from_dict(sandbox.connection_dict(user), name=f"interrupt-look-{user}")

    def look() -> list[str] | None:
        with ImapSession(conn) as imap:
            imap.select("INBOX", readonly=True)
            uids = imap.search(["SUBJECT", tok])
            if len(uids) < at_least:
                return None
            out = []
            for m in imap.fetch(uids):
                line = next(ln for ln in m.raw.split(b"\r\n") if ln.lower().startswith(b"subject:"))
                out.append(line.split(b":", 1)[1].strip().decode())
            return out

    found: list[str] = wait_for(look, timeout=60)
    return found


def _interrupt(fired: list[float]) -> None:
    fired.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_at_50_moments_stops_within_2_s_and_every_accepted_message_has_its_response(
        sandbox: Sandbox, project: Path, quiet_sigint: None) -> None:
    tok = uuid.uuid4().hex[:10]
    moments = random.Random(15).sample(range(0, 300), 50)  # milliseconds after the command starts
    total_responses = interrupted = 0
    for n, moment in enumerate(moments):
        records = [{"to": "erin@example.test", "subject": f"{tok} run{n} msg{i}", "text": "x"} for i in range(20)]
        (project / "outbox.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        fired: list[float] = []
        timer = threading.Timer(moment / 1000, _interrupt, (fired,))
        timer.start()
        result = cli(sandbox, project, "send", "mail", "--input", "outbox.jsonl", "--output", f"out{n}.jsonl",
                     "--concurrency", "8", "--rate-limit", "100")
        ended = time.monotonic()
        timer.join()
        if fired and fired[0] < ended:
            assert ended - fired[0] < 2.0, f"moment {moment} ms: {ended - fired[0]:.2f} s to stop"
        responses = [json.loads(line) for line in (project / f"out{n}.jsonl").read_text().splitlines()]
        assert {r["status"] for r in responses} <= {"sent"}, responses
        if result.returncode == 130:
            assert "interrupted — " in result.stderr and "not sent: rerun to continue" in result.stderr
            assert len(responses) < 20
            interrupted += 1
        else:
            assert (result.returncode, len(responses)) == (0, 20), result.stderr
        total_responses += len(responses)

    assert interrupted  # the early moments land before the last message is out, however fast this machine
    store = Store(project / ".mailconnector" / "state.db")
    entries = store.ledger_entries(limit=100000)
    assert {e.status for e in entries} == {"sent"}  # nothing claimed and left, nothing uncertain
    assert len(entries) == total_responses  # every message the server accepted has its response
    store.close()
    arrived = subjects_in(sandbox, "erin", tok, total_responses)
    time.sleep(0.5)  # a message sent twice would be right behind
    assert len(arrived) == len(set(arrived)) == total_responses == len(subjects_in(sandbox, "erin", tok, 0))


def test_a_second_ctrl_c_ends_send_at_once(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex[:10]
    records = [{"to": "erin@example.test", "subject": f"{tok} {i}", "text": "x"} for i in range(40)]
    (project / "outbox.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**os.environ, PW_VAR: sandbox.info.password("alice"), "COLUMNS": "200"}
    proc = subprocess.Popen([str(MAILCONNECTOR), "send", "mail", "--input", "outbox.jsonl", "--output", "out.jsonl",
                             "--rate-limit", "4"], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (project / "out.jsonl").exists() and (project / "out.jsonl").read_text().count("\n") >= 2,
             timeout=30)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    sent_at = time.monotonic()
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - sent_at < 2.0
    assert proc.returncode == 130, err
    # Either the first signal's clean stop already ended it, or the second cut it short: both say where it was.
    assert "aborted: " in err or "interrupted — " in err, err


def read_to_file_project(project: Path, folder: str, **target: Any) -> None:
    doc = yaml.safe_load((project / "mailconnector.yaml").read_text())
    doc["activities"] = {"inbox": {"type": "read-email", "connection": "reader", "folder": folder,
                                   "attachments": "none", "batch_size": 20},
                         "file": {"type": "file", "path": "inbox.jsonl", **target}}
    doc["operations"] = {"drain": {"source": "inbox", "target": "file", "transformation": "slow_tx:slow"}}
    (project / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (project / "slow_tx.py").write_text(SLOW)


def test_a_run_killed_mid_way_keeps_its_file_lines_and_shows_interrupted(
        sandbox: Sandbox, project: Path, fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("dave")
    conn = Connection.from_dict(sandbox.connection_dict("dave"), name="interrupt-fill")
    subjects = [f"kill {i:03d}" for i in range(300)]
    append_all(conn, folder, [make_message(s) for s in subjects])
    read_to_file_project(project, folder)
    out = project / "inbox.jsonl"
    proc = subprocess.Popen([str(MAILCONNECTOR), "run", "drain"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 60, timeout=60, interval=0.005)
    proc.kill()
    proc.wait(timeout=10)
    before = out.read_bytes()
    complete = before[: before.rfind(b"\n") + 1]

    logs = cli(sandbox, project, "logs", "--json")
    [killed] = json.loads(logs.stdout)
    assert killed["status"] == "interrupted" and "ended before the run finished" in killed["error"]

    again = cli(sandbox, project, "run", "drain")  # its lease was the dead process's: taken over at once
    assert again.returncode == 0, again.stderr
    after = out.read_bytes()
    assert after.startswith(complete)  # every line the killed run finished is still there
    got = [json.loads(line)["subject"] for line in after.decode().splitlines()]
    assert set(got) == set(subjects)
    assert len(got) <= len(subjects) + 1  # at most the record written but not yet acknowledged, again


def test_a_file_target_that_replaces_is_refused_for_a_mail_source(sandbox: Sandbox, project: Path) -> None:
    read_to_file_project(project, "INBOX", append=False)
    result = cli(sandbox, project, "run", "drain")
    assert result.returncode == 3
    assert "append: false" in result.stderr_flat and "lose the records of earlier runs" in result.stderr_flat


def test_run_wait_waits_for_the_run_holding_the_folder(
        sandbox: Sandbox, project: Path, fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("dave")
    conn = Connection.from_dict(sandbox.connection_dict("dave"), name="interrupt-wait")
    append_all(conn, folder, [make_message("waited for")])
    read_to_file_project(project, folder)
    assert conn.imap is not None
    store = Store(project / ".mailconnector" / "state.db")
    keeper = LeaseKeeper(store, f"read:{account_key(conn.imap.host, conn.imap.port, conn.auth.username)}/{folder}",
                         30)
    assert keeper.take()  # a live run of this host holds the folder
    try:
        busy = cli(sandbox, project, "run", "drain")
        assert busy.returncode == 8 and "--wait" in busy.stderr_flat
        releaser = threading.Timer(1.0, keeper.stop)
        releaser.start()
        waited = cli(sandbox, project, "run", "drain", "--wait")
        releaser.join()
    finally:
        keeper.stop()
        store.close()
    assert waited.returncode == 0, waited.stderr
    assert "waiting: " in waited.stderr
    assert [json.loads(line)["subject"] for line in (project / "inbox.jsonl").read_text().splitlines()] == [
        "waited for"]


def test_ctrl_c_during_a_send_operation_then_a_rerun_sends_each_record_once(
        sandbox: Sandbox, project: Path, quiet_sigint: None) -> None:
    tok = uuid.uuid4().hex[:10]
    doc = yaml.safe_load((project / "mailconnector.yaml").read_text())
    doc["activities"] = {"outbox": {"type": "file", "path": "outbox.jsonl"},
                         "mail": {"type": "send-email", "connection": "mail", "rate_limit": 4, "concurrency": 2}}
    doc["operations"] = {"send-outbox": {"source": "outbox", "target": "mail"}}
    (project / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    records = [{"to": "erin@example.test", "subject": f"{tok} op{i}", "text": "x"} for i in range(12)]
    (project / "outbox.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    fired: list[float] = []
    timer = threading.Timer(1.0, _interrupt, (fired,))  # a dozen at 4 a second take 3 s
    timer.start()
    first = cli(sandbox, project, "run", "send-outbox", "--json")
    ended = time.monotonic()
    timer.join()
    assert fired and ended - fired[0] < 2.0
    assert first.returncode == 130, first.stderr
    interrupted = json.loads(first.stdout)
    assert interrupted["status"] == "interrupted" and interrupted["written"] < 12

    second = cli(sandbox, project, "run", "send-outbox", "--json")
    assert second.returncode == 0, second.stderr
    rest = json.loads(second.stdout)
    assert (rest["written"], rest["skipped"]) == (12 - interrupted["written"], interrupted["written"])
    arrived = subjects_in(sandbox, "erin", tok, 12)
    time.sleep(0.5)  # a message sent twice would be right behind
    assert sorted(subjects_in(sandbox, "erin", tok, 12)) == sorted(arrived) == sorted(r["subject"] for r in records)
