"""The connection Test (SPEC section 1) against the real sandbox: which steps, in which order, with which
words, and where it stops."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest

from mailconnector.cli._exit_codes import exit_code_of_test
from mailconnector.connection import Connection
from mailconnector.diagnostics import TestReport, diagnose
from mailconnector.sandbox import Sandbox

SMTP_STEPS = ["DNS", "TCP connect", "greeting", "EHLO extensions", "STARTTLS offered and TLS certificate",
              "authentication", "sender accepted"]
IMAP_STEPS = ["DNS", "TCP connect", "TLS handshake and certificate", "greeting", "capabilities",
              "authentication", "folder can be selected"]


def build(sandbox: Sandbox, user: str = "alice", *, smtp: dict[str, Any] | None = None,
          imap: dict[str, Any] | None = None, password: str | None = None, **top: Any) -> Connection:
    """The sandbox's default connection (submission + imaps) with some fields changed."""
    data = sandbox.connection_dict(user, password=password)
    for key, value in (("smtp", smtp), ("imap", imap), *top.items()):
        if value is None:
            continue
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return Connection.from_dict(data, name=f"diag-{uuid.uuid4().hex[:6]}")


def by_name(report: TestReport, server: str) -> dict[str, Any]:
    return {s.name: s for s in report.steps if s.server == server}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_good_connection_passes_every_step_with_times_and_details(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox))
    assert report.ok and exit_code_of_test(report) == 0 and report.first_failure() is None
    assert [s.name for s in report.steps if s.server == "smtp"] == SMTP_STEPS
    assert [s.name for s in report.steps if s.server == "imap"] == IMAP_STEPS
    # SMTP first, then IMAP.
    servers = [s.server for s in report.steps]
    assert servers == sorted(servers, key=["smtp", "imap"].index)
    for st in report.steps:
        assert st.status == "passed"
        assert isinstance(st.ms, float) and st.ms >= 0
        assert st.error is None and st.hint is None
    smtp, imap = by_name(report, "smtp"), by_name(report, "imap")
    assert smtp["DNS"].detail == "127.0.0.1"
    assert smtp["TCP connect"].detail == f"127.0.0.1:{sandbox.info.ports['submission']}"
    assert smtp["greeting"].detail.startswith("220 ")
    assert "STARTTLS" in smtp["EHLO extensions"].detail
    assert smtp["STARTTLS offered and TLS certificate"].detail.startswith("TLSv1.")
    # Authentication names the mechanisms offered and the one used.
    assert "offered:" in smtp["authentication"].detail and "used: PLAIN" in smtp["authentication"].detail
    assert "<alice@example.test> 250" in smtp["sender accepted"].detail
    tls = imap["TLS handshake and certificate"].detail
    assert tls.startswith("TLSv1.") and "valid until" in tls and "127.0.0.1" in tls
    assert "IMAP4REV1" in imap["capabilities"].detail
    assert "used: LOGIN" in imap["authentication"].detail
    assert imap["folder can be selected"].detail.startswith("INBOX: ")


def test_report_to_dict_is_json_ready(sandbox: Sandbox) -> None:
    data = diagnose(build(sandbox, password="wrong-password-xyz")).to_dict()
    text = json.dumps(data)
    back = json.loads(text)
    assert back["ok"] is False
    assert back["connection"].startswith("diag-")
    statuses = {s["status"] for s in back["steps"]}
    assert statuses == {"passed", "failed", "skipped"}
    for s in back["steps"]:
        assert {"server", "name", "status", "ms", "detail"} <= set(s)
        assert "exit_code" not in s and "exception" not in s  # the exception object stays in the report
    failed = [s for s in back["steps"] if s["status"] == "failed"]
    assert all({"error", "error_type", "hint"} <= set(s) for s in failed)
    assert "wrong-password-xyz" not in text


def test_wrong_password_fails_at_authentication_and_skips_the_rest(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox, password="not-the-password-42"))
    assert not report.ok
    assert exit_code_of_test(report) == 4
    for server, later in (("smtp", "sender accepted"), ("imap", "folder can be selected")):
        steps = by_name(report, server)
        auth = steps["authentication"]
        assert auth.status == "failed", auth
        assert auth.error_type == "AuthenticationError"
        assert auth.hint and "password" in auth.hint
        assert steps[later].status == "skipped"
        assert steps[later].ms == 0
        assert steps["greeting"].status == "passed"
    first = report.first_failure()
    assert first is not None and first.server == "smtp" and first.name == "authentication"


def test_one_server_failing_does_not_stop_the_other(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox, smtp={"port": free_port()}))
    smtp, imap = by_name(report, "smtp"), by_name(report, "imap")
    assert smtp["TCP connect"].status == "failed"
    assert smtp["TCP connect"].error_type == "TransportError"
    assert "nothing listens" in (smtp["TCP connect"].error or "")
    assert all(smtp[n].status == "skipped" for n in SMTP_STEPS[2:])
    assert all(imap[n].status == "passed" for n in IMAP_STEPS)
    assert exit_code_of_test(report) == 5


def test_dns_failure_is_said_in_words(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox, imap={"host": "no-such-host.invalid"}, activities="read"))
    steps = by_name(report, "imap")
    assert steps["DNS"].status == "failed"
    assert "does not resolve" in (steps["DNS"].error or "")
    assert "no-such-host.invalid" in (steps["DNS"].error or "")
    assert steps["DNS"].hint
    assert [s.name for s in report.steps] == IMAP_STEPS
    assert all(steps[n].status == "skipped" for n in IMAP_STEPS[1:])


@pytest.mark.parametrize(("activities", "servers"), [("send", {"smtp"}), ("read", {"imap"}),
                                                     ("both", {"smtp", "imap"})])
def test_only_the_servers_the_connection_serves_are_tested(sandbox: Sandbox, activities: str,
                                                            servers: set[str]) -> None:
    report = diagnose(build(sandbox, activities=activities))
    assert report.ok
    assert {s.server for s in report.steps} == servers


def test_a_folder_that_does_not_exist(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox, activities="read"), folder="No-Such-Folder")
    failed = report.first_failure()
    assert failed is not None and failed.name == "folder can be selected"
    assert "No-Such-Folder" in (failed.error or "")
    assert "mailconnector folders" in (failed.hint or "")
    assert exit_code_of_test(report) == 3


def test_another_folder_can_be_selected(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox, activities="read"), folder="Sent")
    assert report.ok
    assert by_name(report, "imap")["folder can be selected"].detail.startswith("Sent: ")


def test_a_refused_sender_fails_the_last_smtp_step(sandbox: Sandbox) -> None:
    """Postfix refuses a MAIL FROM with bad syntax: the Test says so, and sends nothing."""
    report = diagnose(build(sandbox, activities="send", from_address="not an address@@"))
    failed = report.first_failure()
    assert failed is not None and failed.name == "sender accepted", [s.to_dict() for s in report.steps]
    assert failed.error_type == "SenderRefusedError"
    assert "from_address" in (failed.hint or "")
    assert exit_code_of_test(report) == 6
    assert by_name(report, "smtp")["authentication"].status == "passed"


def test_a_listener_sees_each_step_start_and_end_in_order(sandbox: Sandbox) -> None:
    """What the console's live Test is built on: every step is told of as it starts, then once more as it ends
    (a failed one with its error), before the next one starts."""
    events: list[tuple[str, str, str]] = []
    conn = build(sandbox, imap={"port": free_port()})  # the IMAP side fails at its TCP connect
    report = diagnose(conn, on_step=lambda st: events.append((st.server, st.name, st.status)))
    ran = [s for s in report.steps if s.status != "skipped"]
    expected = [e for s in ran for e in ((s.server, s.name, "running"), (s.server, s.name, s.status))]
    assert events == expected
    assert ("imap", "TCP connect", "failed") in events and ("smtp", "sender accepted", "passed") in events
