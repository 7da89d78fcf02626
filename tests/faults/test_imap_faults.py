"""Read Email under a fault at every step of the IMAP conversation, through the fault proxy to the real Dovecot.

Each case puts one fault at one step (just before the server's answer to it, or in the middle of a message
literal) and runs the reader the way an operation does: take each record downstream, then ``ack()`` it. A run
that fails must fail with a retryable error, and the next run picks up where it stopped. Checked each time:

- nothing is lost and nothing is delivered twice: over all runs, every message is taken exactly once
  (counted by Message-ID);
- nothing is marked read (moved, deleted) that was not taken: checked on the server right after the faulty
  run, before any rerun could repair it.

The step triggers need clear text: the plain ``imap`` port with ``security: none`` (the sandbox accepts plain
logins from 127.0.0.1). The TLS handshake cases use the ``imaps`` port. The matrix is the table in
docs/reliability.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faults import C2S, S2C, AfterBytes, Corrupt, Cut, Delay, Fault, FaultProxy, OnPattern, Replace, Stall
from mailconnector.activities.read import ReadEmail
from mailconnector.connection import Connection
from mailconnector.errors import MailConnectorError, TLSSecurityError, TransportError
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store

USER = "erin"
BODY_MARK = b"MIDDLE-OF-THE-LITERAL"
MESSAGES = 4
MakeConn = Callable[..., Connection]

# step -> (trigger, direction, after_read)
STEPS: dict[str, tuple[AfterBytes | OnPattern, str, str]] = {
    "connect": (AfterBytes(0), S2C, "mark_read"),                          # connected, no greeting yet
    "LOGIN": (OnPattern(b"OK Logged in", before=True), S2C, "mark_read"),
    "SELECT": (OnPattern(b"OK [READ-WRITE]", before=True), S2C, "mark_read"),
    "SEARCH": (OnPattern(b"* SEARCH", before=True), S2C, "mark_read"),
    "FETCH": (OnPattern(b"BODY[] {", before=True), S2C, "mark_read"),     # the first message's literal
    "mid-literal": (OnPattern(BODY_MARK), S2C, "mark_read"),              # inside a 200 KB literal
    "STORE": (OnPattern(b"OK Store completed", before=True), S2C, "mark_read"),
    "MOVE": (OnPattern(b"OK Move completed", before=True), S2C, "move:{archive}"),
    "EXPUNGE": (OnPattern(b"OK Expunge completed", before=True), S2C, "delete"),
}
ACTIONS: dict[str, Any] = {
    "cut": Cut(),
    "reset": Cut(reset=True),
    "stall": Stall(),
    "delay": Delay(0.2),
    "corrupt": Corrupt(3),
}
# Bytes inside a message are not protected by IMAP (TCP and TLS guard them): corruption goes into the
# protocol's own bytes only (the answers, the literal's length).
NO_CORRUPT = {"mid-literal"}
CASES = [
    pytest.param(step, action, id=f"{action}-at-{step}")
    for step in STEPS for action in ACTIONS
    if not (action == "corrupt" and step in NO_CORRUPT)
]


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", sandbox.info.ports["imap"])) as p:
        yield p


def via(sandbox: Sandbox, proxy: FaultProxy, *, port_name: str = "imap", security: str = "none") -> Connection:
    data = sandbox.connection_dict(USER, imap="imaps" if port_name == "imaps" else "imap")
    data["imap"].update(port=proxy.port, security=security)
    data["timeouts"] = {"connect": 2, "command": 1}
    data["activities"] = "read"
    data.pop("smtp")
    return Connection.from_dict(data, name=f"imapfault-{uuid.uuid4().hex[:6]}")


def seed(make_conn: MakeConn, folder: str, token: str) -> list[str]:
    """MESSAGES unread messages with known Message-IDs; the second carries a 200 KB body with a mark."""
    ids = []
    with ImapSession(make_conn(USER)) as imap:
        for i in range(MESSAGES):
            mid = f"<imapfault-{token}-{i}@example.test>"
            body = b"short body\r\n"
            if i == 1:
                line = b"y" * 76 + b"\r\n"
                body = line * 1300 + BODY_MARK + b"\r\n" + line * 1300
            imap.append(folder, b"From: a@example.test\r\nTo: erin@example.test\r\nMessage-ID: " + mid.encode()
                        + f"\r\nSubject: imap fault {i}\r\n\r\n".encode() + body)
            ids.append(mid)
    return ids


def run_once(conn: Connection, folder: str, store: Store, after_read: str,
             taken: list[str]) -> MailConnectorError | None:
    """One run as an operation does it: the record goes downstream (``taken``), then it is acked."""
    try:
        with ReadEmail(conn, store=store, folder=folder, after_read=after_read, batch_size=2) as reader:
            for item in reader:
                assert item.record.message_id is not None
                taken.append(item.record.message_id)
                item.ack()
    except MailConnectorError as exc:
        return exc
    return None


def server_state(make_conn: MakeConn, folder: str, archive: str | None) -> tuple[set[str], set[str]]:
    """(Message-IDs still in ``folder`` with \\Seen, Message-IDs that left it for ``archive`` or were deleted)."""
    present: dict[str, bool] = {}
    with ImapSession(make_conn(USER)) as imap:
        imap.select(folder, readonly=True)
        uids = imap.search(["ALL"])
        for msg in imap.fetch(uids):
            mid = _message_id(msg.raw)
            present[mid] = "\\Seen" in msg.flags
    seen = {m for m, s in present.items() if s}
    return seen, set(present)


def _message_id(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("message without Message-ID")


@pytest.mark.parametrize(("step", "action"), CASES)
def test_fault_at_every_imap_step(sandbox: Sandbox, make_conn: MakeConn, fresh_folder: Callable[[str], str],
                                  proxy: FaultProxy, tmp_path: Path, step: str, action: str) -> None:
    folder = fresh_folder(USER)
    archive = fresh_folder(USER) if step == "MOVE" else None
    token = uuid.uuid4().hex[:12]
    ids = seed(make_conn, folder, token)
    trigger, direction, after_read = STEPS[step]
    after_read = after_read.format(archive=archive)
    fault = proxy.add(Fault(trigger, ACTIONS[action], direction=direction))  # type: ignore[arg-type]
    conn = via(sandbox, proxy)
    store = Store(tmp_path / "state.db")

    taken: list[str] = []
    error = run_once(conn, folder, store, after_read, taken)
    assert fault.fired == 1, "the fault did not fire: the step trigger no longer matches the conversation"
    if error is not None:
        assert isinstance(error, TransportError) and error.retryable, (type(error), error)
        assert "IMAP" in error.message
    # Right after the faulty run: nothing acted on that was not taken downstream.
    seen, present = server_state(make_conn, folder, archive)
    assert seen <= set(taken), f"marked read but never taken: {seen - set(taken)}"
    assert set(ids) - present <= set(taken), "moved or deleted but never taken"

    runs = 1
    while error is not None and runs < 3:
        error = run_once(conn, folder, store, after_read, taken)
        runs += 1
    assert error is None, f"still failing after {runs} runs: {error}"
    if action == "delay":
        assert runs == 1
    assert sorted(taken) == sorted(ids), "every message exactly once"
    seen, present = server_state(make_conn, folder, archive)
    if after_read == "mark_read":
        assert seen == set(ids)
    else:
        assert present == set(), "every message moved or deleted"
    if archive is not None:
        with ImapSession(make_conn(USER)) as imap:
            imap.select(archive, readonly=True)
            assert len(imap.search(["ALL"])) == MESSAGES, "moved exactly once"


# --------------------------------------------------------------------------- TLS handshake (implicit TLS)


@pytest.mark.parametrize(("fault", "refused"), [
    pytest.param(Fault(AfterBytes(0), Cut()), False, id="cut-before-ClientHello"),
    pytest.param(Fault(AfterBytes(0), Cut(reset=True)), False, id="reset-before-ClientHello"),
    pytest.param(Fault(AfterBytes(0), Stall(), direction=S2C), False, id="stall-ServerHello"),
    pytest.param(Fault(AfterBytes(200), Cut(), direction=S2C), False, id="cut-mid-handshake"),
    pytest.param(Fault(AfterBytes(0), Delay(0.2), direction=S2C), False, id="delay-ServerHello"),
    pytest.param(Fault(AfterBytes(200), Corrupt(4), direction=S2C), True, id="corrupt-mid-handshake"),
])
def test_fault_in_the_tls_handshake(sandbox: Sandbox, make_conn: MakeConn, fresh_folder: Callable[[str], str],
                                    tmp_path: Path, fault: Fault, refused: bool) -> None:
    folder = fresh_folder(USER)
    ids = seed(make_conn, folder, uuid.uuid4().hex[:12])
    with FaultProxy(("127.0.0.1", sandbox.info.ports["imaps"])) as proxy:
        proxy.add(fault)
        conn = via(sandbox, proxy, port_name="imaps", security="ssl")
        store = Store(tmp_path / "state.db")
        taken: list[str] = []
        error = run_once(conn, folder, store, "mark_read", taken)
        assert fault.fired == 1
        if refused:  # a tampered handshake: refused as a TLS failure, nothing read
            assert isinstance(error, TLSSecurityError) and not error.retryable, error
            assert taken == []
            return
        if error is not None:
            assert isinstance(error, TransportError) and error.retryable, (type(error), error)
            error = run_once(conn, folder, store, "mark_read", taken)
        assert error is None, error
    assert sorted(taken) == sorted(ids)


# --------------------------------------------------------------------------- STARTTLS stripped on the way


def test_starttls_stripped_by_a_middlebox_is_refused_before_any_credential(sandbox: Sandbox) -> None:
    with FaultProxy(("127.0.0.1", sandbox.info.ports["imap"])) as proxy:
        proxy.add(Fault(OnPattern(b"STARTTLS"), Replace(b"XSTRIPPED"), direction=S2C, times=None))
        conn = via(sandbox, proxy, security="starttls")
        with pytest.raises(TLSSecurityError, match="does not offer STARTTLS"):
            ImapSession(conn).connect()
        proxy.wait_idle()
        sent = proxy.transcript(C2S)
    assert b"CAPABILITY" in sent or sent == b""
    password = sandbox.user(USER).password.encode()
    assert b"LOGIN" not in sent.upper() and b"AUTHENTICATE" not in sent.upper() and password not in sent
