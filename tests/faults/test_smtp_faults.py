"""Send Email under a fault at every step of the SMTP conversation, through the fault proxy to the real Postfix.

Each case puts one fault at one step — just before the server's reply to that step reaches the client, so the
server has acted on the command and the client does not know it yet (the worst moment) — and checks the
outcome against the promise:

- before the message data was accepted (greeting, EHLO, AUTH, MAIL, RCPT, DATA, in the middle of the data):
  the record is sent after a retry on a new connection, and exactly one copy arrives;
- once the final dot was sent: the record fails with ``MayHaveBeenDelivered`` (not retryable), it is never
  sent a second time, not by a retry and not by a rerun, and at most one copy arrives.

The step triggers need clear text, so these cases use the plain ``smtp`` port with ``security: none``; the
TLS handshake cases use the implicit-TLS ``smtps`` port (the proxy then sees only TLS records). Copies are
counted in the recipient's mailbox by a token in the subject. The matrix is the table in docs/reliability.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from faults import C2S, S2C, AfterBytes, Corrupt, Cut, Delay, Fault, FaultProxy, OnPattern, Replace, Stall
from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import TLSSecurityError
from mailconnector.imap import ImapSession
from mailconnector.records.send import SendResponse
from mailconnector.sandbox import Sandbox
from mailconnector.smtp import SmtpSession
from mailconnector.state import Store

RECIPIENT = "dave"
COMMAND_TIMEOUT = 1.0
BODY_MARK = b"MIDDLE-OF-THE-BODY"
MakeConn = Callable[..., Connection]

# step -> (where the fault fires, direction). "reply" steps fire just before the server's reply to the step.
STEPS: dict[str, tuple[AfterBytes | OnPattern, str]] = {
    "connect": (AfterBytes(0), S2C),                                    # connected, greeting not yet seen
    "EHLO": (OnPattern(b"250-mail.example.test", before=True), S2C),
    "AUTH": (OnPattern(b"235 ", before=True), S2C),
    "MAIL": (OnPattern(b"250 2.1.0", before=True), S2C),
    "RCPT": (OnPattern(b"250 2.1.5", before=True), S2C),
    "DATA": (OnPattern(b"354 ", before=True), S2C),
    "mid-data": (OnPattern(BODY_MARK), C2S),                            # half of an 8 MB message is out
    "mid-data-small": (OnPattern(BODY_MARK), C2S),                      # half of a 28 KB message is out
    "before-final-dot": (OnPattern(b"\r\n.\r\n", before=True), C2S),    # all data sent but the dot
    "after-final-dot": (OnPattern(b"250 2.0.0 Ok: queued", before=True), S2C),  # the server has it all
}
ACTIONS: dict[str, Any] = {
    "cut": Cut(),
    "reset": Cut(reset=True),
    "stall": Stall(),
    "delay": Delay(0.2),
    "corrupt": Corrupt(3),
}
AFTER_DATA = {"before-final-dot", "after-final-dot"}
# The client cannot tell a drop before the dot reached the server from one after it, once its last write
# returned: a message that fits in the socket buffers is written whole at once, so any drop during its data
# is "may have been delivered". A message larger than the buffers usually sees the drop as a failed write,
# which proves the dot was never sent: that one is retried. Whether the last write returned before the drop
# reached the client is a race, so for those cases either safe outcome is accepted (and counted).
UNCERTAIN = {("mid-data-small", a) for a in ("cut", "reset", "stall")} | {("mid-data", "stall")}
EITHER = {("mid-data", "cut"), ("mid-data", "reset")}
# Corrupting the message's own bytes cannot be detected by SMTP (no checksum; TCP and TLS guard it), so
# corruption is injected into the server's replies only.
NO_CORRUPT = {"mid-data", "mid-data-small", "before-final-dot"}

CASES = [
    pytest.param(step, action, id=f"{action}-at-{step}")
    for step in STEPS for action in ACTIONS
    if not (action == "corrupt" and step in NO_CORRUPT)
]


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as p:
        yield p


def via(sandbox: Sandbox, proxy: FaultProxy, *, port_name: str = "smtp", name: str | None = None) -> Connection:
    data = sandbox.connection_dict("alice", smtp=port_name)
    data["smtp"]["port"] = proxy.port
    data["timeouts"] = {"connect": 2, "command": COMMAND_TIMEOUT}
    return Connection.from_dict(data, name=name or f"smtpfault-{uuid.uuid4().hex[:6]}")


def send(conn: Connection, records: list[dict[str, Any]], **settings: Any) -> list[SendResponse]:
    settings.setdefault("backoff", 0.05)
    settings.setdefault("concurrency", 1)
    return sorted(SendEmail(conn, **settings).send(records), key=lambda r: r.index)


def copies(conn: Connection, token: str) -> int:
    with ImapSession(conn) as imap:
        imap.select("INBOX", readonly=True)
        return len(imap.search(["SUBJECT", token]))


def settle(make_conn: MakeConn, token: str, expected_at_least: int) -> int:
    """The number of copies once delivery has settled: wait for ``expected_at_least``, then send a sentinel
    straight (no proxy) and wait for it; a copy queued before the sentinel has arrived by then too."""
    reader = make_conn(RECIPIENT)
    if expected_at_least:
        wait_for(lambda: copies(reader, token) >= expected_at_least)
    sentinel = f"sentinel {uuid.uuid4().hex}"
    [r] = send(make_conn(), [{"to": f"{RECIPIENT}@example.test", "subject": sentinel, "text": "after"}])
    assert r.status == "sent", r.error
    wait_for(lambda: copies(reader, sentinel) == 1)
    return copies(reader, token)


def message(token: str, *, lines: int = 200) -> dict[str, Any]:
    filler = "x" * 70
    body = "\n".join([filler] * lines + [BODY_MARK.decode()] + [filler] * lines)  # the mark sits mid-data
    return {"id": f"rec-{token}", "to": f"{RECIPIENT}@example.test", "subject": f"smtp fault {token}",
            "text": body}


@pytest.mark.parametrize(("step", "action"), CASES)
def test_fault_at_every_smtp_step(sandbox: Sandbox, make_conn: MakeConn, proxy: FaultProxy, tmp_path: Path,
                                  step: str, action: str) -> None:
    trigger, direction = STEPS[step]
    fault = proxy.add(Fault(trigger, ACTIONS[action], direction=direction))  # type: ignore[arg-type]
    token = uuid.uuid4().hex
    conn = via(sandbox, proxy)
    store = Store(tmp_path / "state.db")
    record = message(token, lines=60_000 if step == "mid-data" else 200)
    [r] = send(conn, [record], store=store, retries=3)
    assert fault.fired == 1, "the fault did not fire: the step trigger no longer matches the conversation"

    if action == "delay":  # slower, not broken: done on the first attempt
        assert r.status == "sent" and r.attempts == 1, r.error
        assert settle(make_conn, token, 1) == 1
        return
    if (step, action) in EITHER and r.status == "uncertain":
        assert r.error is not None and r.error.type == "MayHaveBeenDelivered", r.error
    elif step not in AFTER_DATA and (step, action) not in UNCERTAIN:
        # Nothing was accepted yet: retried on a new connection, delivered exactly once.
        assert r.status == "sent", r.error
        assert r.attempts == 2, (r.attempts, r.error)
        # A stalled greeting also gets one probe for implicit TLS (a ClientHello): not an SMTP connection.
        smtp_connections = [c for c in proxy.connections if not c.received["c2s"].startswith(b"\x16\x03")]
        assert len(smtp_connections) == 2
        assert store.ledger_entry(r.message_id).status == "sent"  # type: ignore[union-attr]
        assert settle(make_conn, token, 1) == 1
        return
    # The data may have been accepted: uncertain, clearly, never retried; a rerun does not send it either.
    assert r.status == "uncertain" and r.attempts == 1, r
    assert r.error is not None and r.error.type == "MayHaveBeenDelivered" and r.error.retryable is False
    assert "may have been delivered" in r.error.message
    assert store.ledger_entry(r.message_id).status == "uncertain"  # type: ignore[union-attr]
    [again] = send(conn, [record], store=store)
    assert again.status == "uncertain" and again.message_id == r.message_id
    assert len(proxy.connections) == 1, "nothing may be sent after the data was possibly accepted"
    # The server had the final dot in "after-final-dot" (one copy), never in the others (none).
    expected = 1 if step == "after-final-dot" else 0
    assert settle(make_conn, token, expected) == expected


# --------------------------------------------------------------------------- TLS handshake (implicit TLS)


@pytest.fixture
def tls_proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtps"])) as p:
        yield p


@pytest.mark.parametrize(("fault", "retried"), [
    pytest.param(Fault(AfterBytes(0), Cut()), True, id="cut-before-ClientHello"),
    pytest.param(Fault(AfterBytes(0), Cut(reset=True)), True, id="reset-before-ClientHello"),
    pytest.param(Fault(AfterBytes(0), Stall(), direction=S2C), True, id="stall-ServerHello"),
    pytest.param(Fault(AfterBytes(200), Cut(), direction=S2C), True, id="cut-mid-handshake"),
    pytest.param(Fault(AfterBytes(200), Cut(reset=True), direction=S2C), True, id="reset-mid-handshake"),
    pytest.param(Fault(AfterBytes(0), Delay(0.2), direction=S2C), False, id="delay-ServerHello"),
    pytest.param(Fault(AfterBytes(200), Corrupt(4), direction=S2C), None, id="corrupt-mid-handshake"),
])
def test_fault_in_the_tls_handshake(sandbox: Sandbox, make_conn: MakeConn, tls_proxy: FaultProxy,
                                    fault: Fault, retried: bool | None) -> None:
    tls_proxy.add(fault)
    token = uuid.uuid4().hex
    [r] = send(via(sandbox, tls_proxy, port_name="smtps"), [message(token)], retries=3)
    assert fault.fired == 1
    if retried is None:
        # A tampered handshake is refused as a TLS failure, not retried, and nothing was sent.
        assert r.status == "failed" and r.attempts == 1, r
        assert r.error is not None and r.error.type == "TLSSecurityError" and not r.error.retryable
        assert "TLS" in r.error.message
        assert settle(make_conn, token, 0) == 0
        return
    assert r.status == "sent", r.error
    assert r.attempts == (2 if retried else 1)
    assert settle(make_conn, token, 1) == 1


# --------------------------------------------------------------------------- STARTTLS stripped on the way


def test_starttls_stripped_by_a_middlebox_is_refused_before_any_credential(sandbox: Sandbox) -> None:
    """A man in the middle hides STARTTLS from the EHLO reply: the client stops, and the proxy saw no AUTH
    and no password on the wire."""
    with FaultProxy(("127.0.0.1", sandbox.info.ports["submission"])) as proxy:
        proxy.add(Fault(OnPattern(b"STARTTLS"), Replace(b"XSTRIPPED"), direction=S2C, times=None))
        conn = via(sandbox, proxy, port_name="submission")
        assert conn.smtp is not None and conn.smtp.security == "starttls"
        with pytest.raises(TLSSecurityError, match="does not offer STARTTLS"):
            SmtpSession(conn).connect()
        proxy.wait_idle()
        sent = proxy.transcript(C2S)
    password = sandbox.user("alice").password.encode()
    assert b"EHLO" in sent.upper()
    assert b"AUTH" not in sent.upper() and password not in sent
    assert b"STARTTLS" not in sent.upper()


def test_corrupt_action_flips_only_the_chosen_bytes(sandbox: Sandbox) -> None:
    """The proxy's Corrupt action itself: the greeting's first three bytes arrive flipped, the rest intact."""
    import socket

    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        proxy.add(Fault(AfterBytes(0), Corrupt(3), direction=S2C))
        with socket.create_connection(proxy.address, timeout=2) as s:
            greeting = s.recv(200)
    assert greeting[:3] == bytes(b ^ 0xFF for b in b"220")
    assert greeting[3:].startswith(b" mail.example.test")
