"""Reruns as users make them, against the sandbox: fix a bad line and rerun, send the same records again on
purpose (``--key``, ``--resend``), read twice with ``keep_unread``, peek, and look at / reset the read state.
Every claim is checked in the mailbox: how many copies arrived."""

from __future__ import annotations

import json
import uuid
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

PW_VAR = "MC_CLI_RERUN_PASSWORD"
RECIPIENT = "erin"


@pytest.fixture
def project(sandbox: Sandbox, tmp_path: Path) -> Path:
    mail = sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")
    reader = sandbox.connection_dict("gina")  # gina's INBOX is read only here and in test_read_state_keys
    (tmp_path / "mailconnector.yaml").write_text(
        yaml.safe_dump({"connections": {"mail": mail, "reader": reader}}, sort_keys=False))
    return tmp_path


def cli(sandbox: Sandbox, cwd: Path, *args: str) -> Result:
    return run_cli(args, cwd, {PW_VAR: sandbox.info.password("alice")}, columns=80)


def copies(sandbox: Sandbox, tok: str, user: str = RECIPIENT) -> dict[str, int]:
    """Subject -> number of copies in ``user``'s INBOX, once a sentinel sent after everything has arrived
    (so that a duplicate sent before it would have arrived too)."""
    conn = Connection.from_dict(sandbox.connection_dict(user), name=f"rerun-look-{user}")
    sentinel = f"sentinel {tok} {uuid.uuid4().hex[:6]}"
    sender = Connection.from_dict(sandbox.connection_dict("alice"), name="rerun-sentinel")
    from mailconnector.activities.send import SendEmail

    assert SendEmail(sender).send_one({"to": f"{user}@example.test", "subject": sentinel, "text": "x"}).status == "sent"

    def look() -> dict[str, int] | None:
        with ImapSession(conn) as imap:
            imap.select("INBOX", readonly=True)
            subjects: dict[str, int] = {}
            for m in imap.fetch(imap.search(["SUBJECT", tok])):
                line = next(ln for ln in m.raw.split(b"\r\n") if ln.lower().startswith(b"subject:"))
                subject = line.split(b":", 1)[1].strip().decode()
                subjects[subject] = subjects.get(subject, 0) + 1
            return subjects if sentinel in subjects else None

    found: dict[str, int] = wait_for(look, timeout=30)
    del found[sentinel]
    return found


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_fix_a_bad_line_and_rerun_sends_only_that_line(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex[:10]
    to = f"{RECIPIENT}@example.test"
    records = [{"to": to, "subject": f"{tok} one", "text": "1"},
               {"to": "not an address", "subject": f"{tok} two", "text": "2"},
               {"to": to, "subject": f"{tok} three", "text": "3"}]
    write_jsonl(project / "outbox.jsonl", records)
    first = cli(sandbox, project, "send", "mail", "--input", "outbox.jsonl", "--json")
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout)["counts"] == {"sent": 2, "failed": 1}

    records[1]["to"] = to  # the fix
    write_jsonl(project / "outbox.jsonl", records)
    second = cli(sandbox, project, "send", "mail", "--input", "outbox.jsonl")
    assert second.returncode == 0, second.stderr
    assert "3 record(s): 1 sent, 2 skipped_duplicate" in second.stderr
    assert "2 skipped: already sent" in second.stderr and "--resend" in second.stderr
    assert copies(sandbox, tok) == {f"{tok} one": 1, f"{tok} two": 1, f"{tok} three": 1}


def test_a_new_key_or_resend_sends_again_the_same_key_does_not(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex[:10]
    to = f"{RECIPIENT}@example.test"
    write_jsonl(project / "daily.jsonl", [{"to": to, "subject": f"{tok} statement", "text": "s"},
                                          {"id": "fixed-id", "to": to, "subject": f"{tok} with id", "text": "i"}])

    def send(*extra: str) -> dict[str, Any]:
        result = cli(sandbox, project, "send", "mail", "--input", "daily.jsonl", "--json", *extra)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout)["counts"])

    assert send("--key", f"{tok}-day-1") == {"sent": 2}
    assert send("--key", f"{tok}-day-1") == {"skipped_duplicate": 2}
    assert send("--key", f"{tok}-day-2") == {"sent": 2}
    assert send() == {"sent": 2}  # no key is a key of its own
    assert send() == {"skipped_duplicate": 2}

    resent = cli(sandbox, project, "send", "mail", "--input", "daily.jsonl", "--resend")
    assert resent.returncode == 0, resent.stderr
    assert "2 record(s): 2 sent" in resent.stderr
    key = resent.stderr.split("resending under the new key ", 1)[1].split()[0]
    # The printed key finishes an interrupted resend: here it was complete, so nothing is sent again.
    assert send("--key", key) == {"skipped_duplicate": 2}
    assert copies(sandbox, tok) == {f"{tok} statement": 4, f"{tok} with id": 4}

    both = cli(sandbox, project, "send", "mail", "--input", "daily.jsonl", "--resend", "--key", "x")
    assert both.returncode == 2 and "--resend" in both.stderr


def put(sandbox: Sandbox, folder: str, subjects: list[str]) -> None:


    conn = Connection.from_dict(sandbox.connection_dict("gina"), name="rerun-put")
    with ImapSession(conn) as imap:
        if not imap.folder_exists(folder):
            imap.client.create_folder(folder)
    append_all(conn, folder, [make_message(s) for s in subjects])


def test_read_twice_keep_unread_says_what_it_skipped_and_peek_and_state_commands(
        sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex[:8]
    folder = f"Rerun{tok}"
    put(sandbox, folder, [f"{tok} a", f"{tok} b", f"{tok} c"])

    def read(*extra: str) -> Result:
        return cli(sandbox, project, "read", "reader", "--folder", folder, "--attachments", "none", *extra)

    first = read("--after-read", "keep_unread")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 3
    second = read("--after-read", "keep_unread", "--include-read")
    assert second.returncode == 0 and second.stdout == ""
    assert "0 email(s) read" in second.stderr
    note = " ".join(second.stderr.split())
    assert "3 email(s) matching the search were already delivered by an earlier run" in note
    assert "--include-delivered" in note and "\n" not in second.stderr.split("note: ", 1)[1].rstrip("\n")

    peeked = read("--peek")
    assert peeked.returncode == 0, peeked.stderr
    assert sorted(json.loads(line)["subject"] for line in peeked.stdout.splitlines()) == [
        f"{tok} a", f"{tok} b", f"{tok} c"]
    assert "peek: nothing marked, moved or recorded" in peeked.stderr
    assert cli(sandbox, project, "read", "reader", "--folder", folder, "--peek", "--after-read", "delete"
               ).returncode == 2

    shown = cli(sandbox, project, "state", "show", "reader", "--folder", folder, "--json")
    assert shown.returncode == 0, shown.stderr
    [state] = json.loads(shown.stdout)
    assert (state["folder"], state["delivered"], state["actions_pending"], state["held_by"]) == (folder, 3, 0, None)

    again = read("--include-delivered", "--after-read", "mark_read")
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 3
    put(sandbox, folder, [f"{tok} d"])
    assert [json.loads(line)["subject"] for line in read("--after-read", "keep_unread").stdout.splitlines()] == [
        f"{tok} d"]
    assert read("--after-read", "keep_unread").stdout == ""

    refused = cli(sandbox, project, "state", "reset", "reader", "--folder", folder)  # not a terminal
    assert refused.returncode == 2 and "--yes" in refused.stderr
    reset = cli(sandbox, project, "state", "reset", "reader", "--folder", folder, "--yes", "--json")
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout)["forgotten"] == 4
    assert len(read("--after-read", "keep_unread").stdout.splitlines()) == 1  # only d is still unread
    assert json.loads(cli(sandbox, project, "state", "show", "reader", "--folder", "Nowhere", "--json").stdout) == []
    nothing = cli(sandbox, project, "state", "reset", "reader", "--folder", "Nowhere", "--yes")
    assert nothing.returncode == 0 and "nothing to forget" in nothing.stderr
