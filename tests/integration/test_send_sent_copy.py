"""``save_to_sent``: a copy of each accepted message in the sender's Sent folder, against the real sandbox
(Postfix files nothing into Sent by itself, as most servers do not).

dave sends, erin receives. Every test marks its messages with a unique token in the subject and counts
only those, so tests running at the same time do not see each other's copies.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness.runner import cli
from conftest import wait_for

from mailconnector.activities import _sent_copy
from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import ConfigError
from mailconnector.imap import FetchedMessage, ImapSession
from mailconnector.records.send import SendResponse
from mailconnector.sandbox import Sandbox

SENDER, RECIPIENT = "dave", "erin"
PASSWORD_ENV = "MC_SENT_COPY_PASSWORD"
ENVELOPE_HEADERS = (b"return-path:", b"delivered-to:", b"received:")  # added on delivery, not sent

MakeConn = Callable[..., Connection]


def token() -> str:
    return uuid.uuid4().hex


def send(conn: Connection, records: list[dict[str, Any]], **settings: Any) -> list[SendResponse]:
    settings.setdefault("backoff", 0.05)
    return sorted(SendEmail(conn, **settings).send(records), key=lambda r: r.index)


def in_folder(conn: Connection, folder: str, tok: str) -> list[FetchedMessage]:
    """The messages of ``folder`` whose subject holds ``tok``, now (an APPEND is done when it returns)."""
    with ImapSession(conn) as imap:
        imap.select(folder, readonly=True)
        return list(imap.fetch(imap.search(["SUBJECT", tok])))


def received(conn: Connection, tok: str, count: int) -> list[bytes]:
    """What the recipient got, without the lines the servers add on delivery: the bytes that were sent."""

    def look() -> list[FetchedMessage] | None:
        found = in_folder(conn, "INBOX", tok)
        return found if len(found) >= count else None

    return [_without_delivery_headers(m.raw) for m in wait_for(look)]


def _without_delivery_headers(raw: bytes) -> bytes:
    lines = raw.split(b"\r\n")
    index = 0
    while index < len(lines) and lines[index].lower().startswith(ENVELOPE_HEADERS):
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):  # a folded continuation
            index += 1
    return b"\r\n".join(lines[index:])


def subject_of(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"subject:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Subject")


def test_each_accepted_message_is_saved_once_seen_and_byte_for_byte(make_conn: MakeConn) -> None:
    dave, erin = make_conn(SENDER), make_conn(RECIPIENT)
    tok = token()
    records = [{"to": f"{RECIPIENT}@example.test", "subject": f"copy {tok} {i}", "text": f"message {i}\n"}
               for i in range(6)]
    responses = send(dave, records, save_to_sent=True, concurrency=3)
    assert [(r.status, r.saved_to_sent) for r in responses] == [("sent", True)] * 6
    copies = in_folder(dave, "Sent", tok)
    assert sorted(subject_of(c.raw) for c in copies) == sorted(r["subject"] for r in records)  # one each
    assert all("\\Seen" in c.flags for c in copies)
    sent_bytes = {subject_of(raw): raw for raw in received(erin, tok, 6)}
    assert {subject_of(c.raw): c.raw for c in copies} == sent_bytes


def test_one_imap_connection_serves_the_whole_run(make_conn: MakeConn, monkeypatch: pytest.MonkeyPatch) -> None:
    logins: list[int] = []

    class Counting(ImapSession):
        def connect(self, **kwargs: Any) -> ImapSession:
            logins.append(1)
            return super().connect(**kwargs)

    monkeypatch.setattr(_sent_copy, "ImapSession", Counting)
    tok = token()
    records = [{"to": f"{RECIPIENT}@example.test", "subject": f"reuse {tok} {i}", "text": "x"} for i in range(8)]
    responses = send(make_conn(SENDER), records, save_to_sent=True, concurrency=4)
    assert all(r.saved_to_sent for r in responses)
    assert len(logins) == 1
    assert len(in_folder(make_conn(SENDER), "Sent", tok)) == 8


def test_without_the_setting_nothing_is_saved_and_the_response_says_nothing(make_conn: MakeConn) -> None:
    tok = token()
    [response] = send(make_conn(SENDER), [{"to": f"{RECIPIENT}@example.test", "subject": f"plain {tok}",
                                           "text": "x"}])
    assert response.status == "sent" and response.saved_to_sent is None
    received(make_conn(RECIPIENT), tok, 1)  # delivered, so a copy would have been made by now
    assert in_folder(make_conn(SENDER), "Sent", tok) == []


def test_a_dry_run_and_a_refused_message_save_nothing(make_conn: MakeConn, tmp_path: Path) -> None:
    dave = make_conn(SENDER)
    tok = token()
    [dry] = send(dave, [{"to": f"{RECIPIENT}@example.test", "subject": f"dry {tok}", "text": "x"}],
                 save_to_sent=True, dry_run=tmp_path)
    assert dry.status == "dry_run" and dry.saved_to_sent is None
    [refused] = send(dave, [{"to": "nobody@example.test", "subject": f"refused {tok}", "text": "x"}],
                     save_to_sent=True)
    assert refused.status == "failed" and refused.saved_to_sent is None
    [partial] = send(dave, [{"to": [f"{RECIPIENT}@example.test", "nobody@example.test"],
                             "subject": f"partial {tok}", "text": "x"}], save_to_sent=True)
    assert partial.status == "partial" and partial.saved_to_sent is True
    assert [subject_of(c.raw) for c in in_folder(dave, "Sent", tok)] == [f"partial {tok}"]


def test_sent_folder_on_the_connection_is_where_the_copy_goes(make_conn: MakeConn,
                                                              fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder(SENDER)
    dave = make_conn(SENDER, sent_folder=folder)
    tok = token()
    [response] = send(dave, [{"to": f"{RECIPIENT}@example.test", "subject": f"own {tok}", "text": "x"}],
                      save_to_sent=True)
    assert response.saved_to_sent is True
    assert len(in_folder(dave, folder, tok)) == 1
    assert in_folder(dave, "Sent", tok) == []


def test_a_failed_copy_never_fails_or_repeats_the_send(make_conn: MakeConn, caplog: pytest.LogCaptureFixture) -> None:
    missing = f"NoSuchFolder-{uuid.uuid4().hex[:8]}"
    dave = make_conn(SENDER, sent_folder=missing)
    tok = token()
    records = [{"to": f"{RECIPIENT}@example.test", "subject": f"nocopy {tok} {i}", "text": "x"} for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="mailconnector.send"):
        responses = send(dave, records, save_to_sent=True, concurrency=1)
    assert [(r.status, r.saved_to_sent, r.error) for r in responses] == [("sent", False, None)] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and missing in warnings[0]  # the folder is missing: tried once, not per message
    assert len(received(make_conn(RECIPIENT), tok, 3)) == 3
    with ImapSession(dave) as imap:
        assert not imap.folder_exists(missing)


def test_an_unreachable_imap_server_leaves_the_messages_sent(sandbox: Sandbox, make_conn: MakeConn) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    data = sandbox.connection_dict(SENDER)
    data["imap"]["port"] = closed_port
    dave = Connection.from_dict(data, name="imap-down")
    tok = token()
    records = [{"to": f"{RECIPIENT}@example.test", "subject": f"down {tok} {i}", "text": "x"} for i in range(2)]
    responses = send(dave, records, save_to_sent=True)
    assert [(r.status, r.saved_to_sent) for r in responses] == [("sent", False)] * 2
    assert len(received(make_conn(RECIPIENT), tok, 2)) == 2


def test_save_to_sent_without_imap_settings_is_a_configuration_error(sandbox: Sandbox) -> None:
    data = sandbox.connection_dict(SENDER)
    del data["imap"]
    conn = Connection.from_dict({**data, "activities": "send"}, name="smtp-only")
    with pytest.raises(ConfigError) as caught:
        SendEmail(conn, save_to_sent=True)
    assert caught.value.field == "save_to_sent" and "imap" in caught.value.message
    SendEmail(conn)  # the setting off: no IMAP needed


def test_a_provider_that_files_sent_mail_itself_gets_a_warning(sandbox: Sandbox,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    conn = Connection.from_dict({**sandbox.connection_dict(SENDER), "server_files_sent": True}, name="files-own")
    with caplog.at_level(logging.WARNING, logger="mailconnector.send"):
        SendEmail(conn, save_to_sent=True).close()
    assert any("second copy" in r.getMessage() for r in caplog.records)


def test_send_command_save_to_sent(sandbox: Sandbox, make_conn: MakeConn, tmp_path: Path) -> None:
    entry = sandbox.connection_dict(SENDER, password=f"${{env:{PASSWORD_ENV}}}")
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump({"connections": {"box": entry}}))
    env = {PASSWORD_ENV: sandbox.user(SENDER).password}
    tok = token()
    res = cli(["send", "box", "--to", f"{RECIPIENT}@example.test", "--subject", f"cli {tok}", "--text", "hi",
               "--save-to-sent", "--json"], tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    [response] = json.loads(res.stdout)["responses"]
    assert response["status"] == "sent" and response["saved_to_sent"] is True
    assert len(in_folder(make_conn(SENDER), "Sent", tok)) == 1
    plain = cli(["send", "box", "--to", f"{RECIPIENT}@example.test", "--subject", f"cli plain {tok}", "--text",
                 "hi", "--json"], tmp_path, env=env)
    assert "saved_to_sent" not in json.loads(plain.stdout)["responses"][0]
    assert len(in_folder(make_conn(SENDER), "Sent", tok)) == 1


def test_a_send_activity_of_the_project_saves_copies(sandbox: Sandbox, make_conn: MakeConn, tmp_path: Path) -> None:
    entry = sandbox.connection_dict(SENDER, password=f"${{env:{PASSWORD_ENV}}}")
    tok = token()
    (tmp_path / "outbox.jsonl").write_text(
        json.dumps({"to": f"{RECIPIENT}@example.test", "subject": f"op {tok}", "text": "x"}) + "\n")
    data = {
        "connections": {"box": entry},
        "activities": {"outbox": {"type": "file", "path": "outbox.jsonl"},
                       "mail-out": {"type": "send-email", "connection": "box", "save_to_sent": True}},
        "operations": {"send-outbox": {"source": "outbox", "target": "mail-out"}},
    }
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = cli(["run", "send-outbox"], tmp_path, env={PASSWORD_ENV: sandbox.user(SENDER).password})
    assert res.returncode == 0, res.stderr
    assert len(in_folder(make_conn(SENDER), "Sent", tok)) == 1
