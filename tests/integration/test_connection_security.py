"""Every security mode, and every way of getting security wrong, against the real sandbox servers.

The sandbox (Dovecot + Postfix on loopback) offers: ``smtps`` (implicit TLS), ``submission`` (STARTTLS
required by the server), ``smtp`` (plain, STARTTLS offered), ``smtp_notls`` (no TLS, no AUTH), ``imaps``,
``imap`` (plain + STARTTLS) and ``imap_notls`` on 127.0.0.2 (no TLS, plain logins refused).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailconnector._context import context
from mailconnector.cli._exit_codes import exit_code_for, exit_code_of_test
from mailconnector.connection import Connection
from mailconnector.diagnostics import diagnose
from mailconnector.errors import (
    AuthenticationError,
    ConfigError,
    ProtocolTimeoutError,
    TLSSecurityError,
    TransportError,
)
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.smtp import SmtpSession

SMTP_SECURITY = {"smtps": "ssl", "submission": "starttls", "smtp": "none"}


def build(sandbox: Sandbox, user: str = "alice", *, smtp: dict[str, Any] | None = None,
          imap: dict[str, Any] | None = None, password: str | None = None, **top: Any) -> Connection:
    """A sandbox connection with any field changed (``smtp``/``imap``/``tls``/``timeouts`` are merged)."""
    data = sandbox.connection_dict(user, password=password)
    for key, value in (("smtp", smtp), ("imap", imap), *top.items()):
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Connection.from_dict(data, name=f"sec-{uuid.uuid4().hex[:6]}")


def smtp_conn(sandbox: Sandbox, port_name: str, security: str, **kw: Any) -> Connection:
    return build(sandbox, smtp={"port": sandbox.info.ports[port_name], "security": security},
                 activities="send", **kw)


def imap_conn(sandbox: Sandbox, port_name: str, security: str, *, host: str = "127.0.0.1",
              **kw: Any) -> Connection:
    return build(sandbox, imap={"host": host, "port": sandbox.info.ports[port_name], "security": security},
                 activities="read", **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def steps_of(report: Any, server: str) -> dict[str, Any]:
    return {s.name: s for s in report.steps if s.server == server}


@pytest.fixture
def mc_caplog(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog that also sees ``mailconnector.*`` records after a CLI run in this process stopped propagation."""
    monkeypatch.setattr(logging.getLogger("mailconnector"), "propagate", True)
    return caplog


@pytest.fixture
def fresh_tls_contexts() -> Iterator[None]:
    """TLS contexts are cached per settings; the verify-off warning is logged when one is built."""
    context().tls_contexts.clear()
    yield


# ------------------------------------------------------------------------------------------ the good paths
@pytest.mark.parametrize("port_name", ["smtps", "submission", "smtp"])
def test_smtp_security_mode_connects_logs_in_and_passes_the_test(sandbox: Sandbox, port_name: str) -> None:
    security = SMTP_SECURITY[port_name]
    conn = smtp_conn(sandbox, port_name, security)
    session = SmtpSession(conn).connect()
    try:
        assert session.connected
        assert session.auth_mechanism == "PLAIN"
        sock = session._smtp.sock if session._smtp else None
        assert isinstance(sock, ssl.SSLSocket) is (security != "none")
        assert session.noop()
    finally:
        session.close()
    assert not session.connected

    report = diagnose(conn)
    assert report.ok, [s.to_dict() for s in report.steps]
    assert exit_code_of_test(report) == 0
    names = [s.name for s in report.steps]
    expected = ["DNS", "TCP connect", "greeting", "EHLO extensions", "authentication", "sender accepted"]
    if security == "ssl":
        expected.insert(2, "TLS handshake and certificate")
    if security == "starttls":
        expected.insert(4, "STARTTLS offered and TLS certificate")
    assert names == expected
    assert {s.server for s in report.steps} == {"smtp"}
    assert all(s.ms >= 0 for s in report.steps)
    assert "nothing sent" in steps_of(report, "smtp")["sender accepted"].detail


@pytest.mark.parametrize(("port_name", "security"), [("imaps", "ssl"), ("imap", "starttls"), ("imap", "none")])
def test_imap_security_mode_connects_logs_in_and_passes_the_test(sandbox: Sandbox, port_name: str,
                                                                 security: str) -> None:
    conn = imap_conn(sandbox, port_name, security)
    with ImapSession(conn) as imap:
        assert imap.auth_mechanism == "LOGIN"
        assert isinstance(imap.client.socket(), ssl.SSLSocket) is (security != "none")
        state = imap.select("INBOX", readonly=True)
        assert state.uidvalidity > 0

    report = diagnose(conn)
    assert report.ok, [s.to_dict() for s in report.steps]
    names = [s.name for s in report.steps]
    expected = ["DNS", "TCP connect", "greeting", "capabilities", "authentication", "folder can be selected"]
    if security == "ssl":
        expected.insert(2, "TLS handshake and certificate")
    if security == "starttls":
        expected.insert(4, "STARTTLS offered and TLS certificate")
    assert names == expected
    assert "INBOX" in steps_of(report, "imap")["folder can be selected"].detail


def test_both_servers_are_tested_for_a_both_connection(sandbox: Sandbox) -> None:
    report = diagnose(build(sandbox))
    assert report.ok
    assert {s.server for s in report.steps} == {"smtp", "imap"}
    data = report.to_dict()
    assert data["ok"] is True
    assert all(s["status"] == "passed" and "ms" in s for s in data["steps"])


# ------------------------------------------------------------------------------------------ wrong password
def test_wrong_password_smtp(sandbox: Sandbox) -> None:
    conn = smtp_conn(sandbox, "submission", "starttls", password="not-the-password-42")
    with pytest.raises(AuthenticationError) as ei:
        SmtpSession(conn).connect()
    assert exit_code_for(ei.value) == 4
    assert not ei.value.retryable
    assert "not-the-password-42" not in str(ei.value)
    assert "alice@example.test" in str(ei.value)
    assert ei.value.hint


def test_wrong_password_imap(sandbox: Sandbox) -> None:
    conn = imap_conn(sandbox, "imaps", "ssl", password="not-the-password-42")
    with pytest.raises(AuthenticationError) as ei:
        ImapSession(conn).connect()
    assert exit_code_for(ei.value) == 4
    assert "not-the-password-42" not in str(ei.value)
    assert ei.value.hint


# ------------------------------------------------------------------------------------------ wrong port
@pytest.mark.parametrize("proto", ["smtp", "imap"])
def test_tls_spoken_to_a_plain_port(sandbox: Sandbox, proto: str) -> None:
    if proto == "smtp":
        conn = smtp_conn(sandbox, "smtp", "ssl", timeouts={"connect": 2, "command": 2})
        session: Any = SmtpSession(conn)
    else:
        conn = imap_conn(sandbox, "imap", "ssl", timeouts={"connect": 2, "command": 2})
        session = ImapSession(conn)
    t0 = time.monotonic()
    with pytest.raises(TLSSecurityError) as ei:
        session.connect()
    assert time.monotonic() - t0 < 3
    assert "starttls" in (ei.value.hint or "")
    assert exit_code_for(ei.value) == 5

    report = diagnose(conn)
    step = report.first_failure()
    assert step is not None
    assert step.name == "TLS handshake and certificate"
    assert "starttls" in (step.hint or "")
    assert exit_code_of_test(report) == 5


@pytest.mark.parametrize(("proto", "security"), [("smtp", "none"), ("imap", "none")])
def test_plain_spoken_to_a_tls_port(sandbox: Sandbox, proto: str, security: str) -> None:
    """The server waits for a TLS ClientHello, the client for a greeting: a probe tells it after 1.5 s of
    silence, long before the greeting's timeout (10 s here)."""
    timeouts = {"connect": 10, "command": 10}
    if proto == "smtp":
        conn = smtp_conn(sandbox, "smtps", security, timeouts=timeouts)
        session: Any = SmtpSession(conn)
    else:
        conn = imap_conn(sandbox, "imaps", security, timeouts=timeouts)
        session = ImapSession(conn)
    t0 = time.monotonic()
    with pytest.raises(TransportError) as ei:
        session.connect()
    elapsed = time.monotonic() - t0
    assert elapsed < 6, elapsed
    assert exit_code_for(ei.value) == 5
    assert isinstance(ei.value, TLSSecurityError), ei.value.to_dict()
    assert "implicit TLS" in ei.value.message
    assert "security: ssl" in (ei.value.hint or "")
    # The library's exception is chained, never raised as it is.
    assert ei.value.__cause__ is not None
    assert not isinstance(ei.value, smtplib.SMTPException)


@pytest.mark.parametrize("proto", ["smtp", "imap"])
def test_plain_spoken_to_a_tls_port_in_the_test(sandbox: Sandbox, proto: str) -> None:
    timeouts = {"connect": 10, "command": 10}
    if proto == "smtp":
        conn = smtp_conn(sandbox, "smtps", "starttls", timeouts=timeouts)
    else:
        conn = imap_conn(sandbox, "imaps", "starttls", timeouts=timeouts)
    t0 = time.monotonic()
    report = diagnose(conn)
    assert time.monotonic() - t0 < 6
    step = report.first_failure()
    assert step is not None and step.name == "greeting", [s.to_dict() for s in report.steps]
    assert step.error_type == "TLSSecurityError"
    assert "implicit TLS" in (step.error or "") and "security: ssl" in (step.hint or "")
    assert exit_code_of_test(report) == 5
    statuses = {s.name: s.status for s in report.steps}
    assert statuses["TCP connect"] == "passed"
    assert statuses["authentication"] == "skipped"


# ------------------------------------------------------------------------------------------ certificates
@pytest.mark.parametrize(("proto", "port_name", "security"), [("smtp", "smtps", "ssl"),
                                                              ("smtp", "submission", "starttls"),
                                                              ("imap", "imaps", "ssl"),
                                                              ("imap", "imap", "starttls")])
def test_untrusted_certificate_then_ca_file_then_verify_off(
    sandbox: Sandbox, proto: str, port_name: str, security: str, mc_caplog: pytest.LogCaptureFixture,
    fresh_tls_contexts: None,
) -> None:
    make = smtp_conn if proto == "smtp" else imap_conn
    session_cls: Any = SmtpSession if proto == "smtp" else ImapSession

    untrusted = make(sandbox, port_name, security, tls={"ca_file": None})
    with pytest.raises(TLSSecurityError) as ei:
        session_cls(untrusted).connect()
    assert "tls.ca_file" in (ei.value.hint or "")
    assert not ei.value.retryable
    report = diagnose(untrusted)
    failed = report.first_failure()
    assert failed is not None and "tls.ca_file" in (failed.hint or "")
    assert failed.name in ("TLS handshake and certificate", "STARTTLS offered and TLS certificate")

    trusted = make(sandbox, port_name, security)
    assert trusted.tls.ca_file is not None
    session_cls(trusted).connect().close()

    mc_caplog.set_level(logging.WARNING, logger="mailconnector")
    unverified = make(sandbox, port_name, security, tls={"ca_file": None, "verify": False})
    session_cls(unverified).connect().close()
    warnings = [r for r in mc_caplog.records if r.levelno == logging.WARNING and "verification" in r.getMessage()]
    assert warnings, [r.getMessage() for r in mc_caplog.records]
    assert "tls.verify: false" in warnings[0].getMessage()
    assert diagnose(unverified).ok


def _name_for_loopback_not_in_certificate() -> str | None:
    """A host name that resolves to 127.0.0.1 but is not in the sandbox certificate.

    The certificate holds localhost, 127.0.0.1, 127.0.0.2, ::1 and mail.example.test. The machine's own
    host name usually resolves to 127.0.0.1 through /etc/hosts (here: ``vm``); ``localhost.localdomain``
    does on many systems.
    """
    in_cert = {"localhost", "127.0.0.1", "127.0.0.2", "::1", "mail.example.test"}
    for name in (socket.gethostname(), socket.getfqdn(), "localhost.localdomain", "localhost4"):
        if not name or name.lower() in in_cert:
            continue
        try:
            addrs = {i[4][0] for i in socket.getaddrinfo(name, 1, socket.AF_INET, socket.SOCK_STREAM)}
        except OSError:
            continue
        if "127.0.0.1" in addrs:
            return name
    return None


@pytest.mark.parametrize(("proto", "port_name", "security"), [("smtp", "smtps", "ssl"),
                                                              ("smtp", "submission", "starttls"),
                                                              ("imap", "imaps", "ssl"),
                                                              ("imap", "imap", "starttls")])
def test_certificate_for_another_host_name(sandbox: Sandbox, proto: str, port_name: str, security: str) -> None:
    name = _name_for_loopback_not_in_certificate()
    if name is None:
        pytest.skip("no host name here resolves to 127.0.0.1 without being in the sandbox certificate")
    if proto == "smtp":
        conn = build(sandbox, smtp={"host": name, "port": sandbox.info.ports[port_name], "security": security},
                     activities="send")
        session: Any = SmtpSession(conn)
    else:
        conn = build(sandbox, imap={"host": name, "port": sandbox.info.ports[port_name], "security": security},
                     activities="read")
        session = ImapSession(conn)
    with pytest.raises(TLSSecurityError) as ei:
        session.connect()
    assert "mismatch" in ei.value.message.lower() or "not valid for" in ei.value.message
    assert repr(name) in (ei.value.hint or "")
    failed = diagnose(conn).first_failure()
    assert failed is not None and failed.error_type == "TLSSecurityError"
    assert repr(name) in (failed.hint or "")


# ------------------------------------------------------------------------------------------ STARTTLS required
def test_smtp_starttls_required_but_not_offered(sandbox: Sandbox, mc_caplog: pytest.LogCaptureFixture) -> None:
    mc_caplog.set_level(logging.DEBUG, logger="mailconnector.protocol.smtp")
    conn = smtp_conn(sandbox, "smtp_notls", "starttls")
    with pytest.raises(TLSSecurityError) as ei:
        SmtpSession(conn).connect()
    assert "does not offer STARTTLS" in ei.value.message
    assert "plain text" in ei.value.message
    sent = [r.getMessage() for r in mc_caplog.records if r.name == "mailconnector.protocol.smtp"
            and r.getMessage().startswith("C: ")]
    assert sent, "the wire log should show the client's lines"
    # Nothing but EHLO (and the QUIT that closes) went out in plain text: no AUTH, no MAIL.
    commands = {line[3:].split()[0].upper() for line in sent if line[3:].strip()}
    assert commands <= {"EHLO", "QUIT"}, sent

    report = diagnose(conn)
    failed = report.first_failure()
    assert failed is not None and failed.name == "STARTTLS offered and TLS certificate"
    assert steps_of(report, "smtp")["authentication"].status == "skipped"


def test_imap_starttls_required_but_not_offered(sandbox: Sandbox) -> None:
    if not sandbox.info.ports.get("imap_notls"):
        pytest.skip("127.0.0.2 cannot be bound here")
    conn = imap_conn(sandbox, "imap_notls", "starttls", host="127.0.0.2")
    with pytest.raises(TLSSecurityError) as ei:
        ImapSession(conn).connect()
    assert "does not offer STARTTLS" in ei.value.message
    failed = diagnose(conn).first_failure()
    assert failed is not None and failed.name == "STARTTLS offered and TLS certificate"


def test_imap_plain_login_refused_without_tls(sandbox: Sandbox) -> None:
    if not sandbox.info.ports.get("imap_notls"):
        pytest.skip("127.0.0.2 cannot be bound here")
    conn = imap_conn(sandbox, "imap_notls", "none", host="127.0.0.2")
    with pytest.raises(AuthenticationError) as ei:
        ImapSession(conn).connect()
    assert "LOGINDISABLED" in ei.value.message
    assert "TLS" in (ei.value.hint or "") or "starttls" in (ei.value.hint or "")
    failed = diagnose(conn).first_failure()
    assert failed is not None and failed.name == "authentication"


def test_smtp_without_auth_offered(sandbox: Sandbox) -> None:
    conn = smtp_conn(sandbox, "smtp_notls", "none")
    with pytest.raises(AuthenticationError) as ei:
        SmtpSession(conn).connect()
    assert "offers no authentication" in ei.value.message
    assert "starttls" in (ei.value.hint or "")


# ------------------------------------------------------------------------------------------ network failures
@pytest.mark.parametrize("proto", ["smtp", "imap"])
def test_nothing_listens_on_the_port(sandbox: Sandbox, proto: str) -> None:
    port = free_port()
    timeouts = {"connect": 1, "command": 1}
    if proto == "smtp":
        conn = build(sandbox, smtp={"port": port, "security": "ssl"}, activities="send", timeouts=timeouts)
        session: Any = SmtpSession(conn)
    else:
        conn = build(sandbox, imap={"port": port, "security": "ssl"}, activities="read", timeouts=timeouts)
        session = ImapSession(conn)
    t0 = time.monotonic()
    with pytest.raises(TransportError) as ei:
        session.connect()
    assert time.monotonic() - t0 < timeouts["connect"] + 1
    assert exit_code_for(ei.value) == 5
    assert ei.value.retryable
    assert isinstance(ei.value, ConnectionError)
    assert "refused" in ei.value.message

    t0 = time.monotonic()
    report = diagnose(conn)
    assert time.monotonic() - t0 < timeouts["connect"] + 1
    failed = report.first_failure()
    assert failed is not None and failed.name == "TCP connect"
    assert exit_code_of_test(report) == 5
    assert steps_of(report, proto)["DNS"].status == "passed"
    assert steps_of(report, proto)["greeting"].status == "skipped"


@pytest.mark.parametrize("proto", ["smtp", "imap"])
def test_host_does_not_resolve(sandbox: Sandbox, proto: str) -> None:
    conn = build(sandbox, **{proto: {"host": "no-such-host.invalid"}},  # type: ignore[arg-type]
                 activities="send" if proto == "smtp" else "read")
    session: Any = SmtpSession(conn) if proto == "smtp" else ImapSession(conn)
    with pytest.raises(TransportError) as ei:
        session.connect()
    assert "does not resolve" in ei.value.message
    report = diagnose(conn)
    failed = report.first_failure()
    assert failed is not None and failed.name == "DNS"
    assert "does not resolve" in (failed.error or "")
    assert exit_code_of_test(report) == 5
    assert steps_of(report, proto)["TCP connect"].status == "skipped"


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops further SYNs, so connects hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel does not drop SYNs on a full accept queue")
        except TimeoutError:
            pass
        finally:
            probe.close()
        yield port
    finally:
        for c in fillers:
            c.close()
        server.close()


@pytest.mark.parametrize("proto", ["smtp", "imap"])
def test_connect_timeout_bounds_a_connect_that_hangs(sandbox: Sandbox, proto: str, black_hole: int) -> None:
    """The connect timeout, not the (longer) command timeout, bounds the wait; the error says so."""
    timeouts = {"connect": 0.5, "command": 30}
    server = {"port": black_hole, "security": "none"}
    if proto == "smtp":
        conn = build(sandbox, smtp=server, activities="send", timeouts=timeouts)
        session: Any = SmtpSession(conn)
    else:
        conn = build(sandbox, imap=server, activities="read", timeouts=timeouts)
        session = ImapSession(conn)
    t0 = time.monotonic()
    with pytest.raises(ProtocolTimeoutError) as ei:
        session.connect()
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < timeouts["connect"] + 1, elapsed
    assert isinstance(ei.value, TimeoutError)
    assert "no connection within 0.5 s" in ei.value.message
    assert exit_code_for(ei.value) == 5
    assert ei.value.retryable

    if proto == "smtp":  # the Test's TCP probe is the same for both protocols
        t0 = time.monotonic()
        failed = diagnose(conn).first_failure()
        assert time.monotonic() - t0 < timeouts["connect"] + 1
        assert failed is not None and failed.name == "TCP connect"
        assert failed.error_type == "ProtocolTimeoutError"


# ------------------------------------------------------------------------------------- the wrong protocol
@pytest.mark.parametrize(("proto", "port_name", "security", "answered"), [
    ("imap", "smtp", "none", "SMTP"), ("imap", "smtps", "ssl", "SMTP"), ("imap", "submission", "starttls", "SMTP"),
    ("smtp", "imap", "none", "IMAP"), ("smtp", "imaps", "ssl", "IMAP"), ("smtp", "imap", "starttls", "IMAP"),
])
def test_another_protocol_on_the_port_is_named_at_once(sandbox: Sandbox, proto: str, port_name: str,
                                                       security: str, answered: str) -> None:
    """Once "connection lost during greeting" (IMAP) or a garbled reply that send retried (SMTP)."""
    if proto == "smtp":
        conn = smtp_conn(sandbox, port_name, security)
        session: Any = SmtpSession(conn)
    else:
        conn = imap_conn(sandbox, port_name, security)
        session = ImapSession(conn)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        session.connect()
    assert time.monotonic() - t0 < 1.5  # no wait, no retry: the greeting said it
    assert exit_code_for(ei.value) == 3 and not ei.value.retryable
    assert f"answered as an {answered} server" in ei.value.message
    assert f"this is not an {proto.upper()} port" in ei.value.message
    assert f"{proto}.port" in ei.value.message
    report = diagnose(conn)
    failed = report.first_failure()
    assert failed is not None and failed.name == "greeting" and exit_code_of_test(report) == 3


@pytest.mark.parametrize(("proto", "port_name", "security"), [("smtp", "smtps", "ssl"), ("imap", "imap", "starttls")])
def test_a_renewed_ca_file_is_read_again_without_a_restart(sandbox: Sandbox, tmp_path: Path, proto: str,
                                                          port_name: str, security: str) -> None:
    """A long-running worker must not keep trusting (or distrusting) a CA file that was replaced."""
    import trustme

    ca_file = tmp_path / "company-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # some other CA: the sandbox's certificate fails
    make = smtp_conn if proto == "smtp" else imap_conn
    session_cls: Any = SmtpSession if proto == "smtp" else ImapSession
    conn = make(sandbox, port_name, security, tls={"ca_file": str(ca_file)})
    with pytest.raises(TLSSecurityError):
        session_cls(conn).connect()
    renewed = Path(sandbox.info.ca_file).read_bytes()
    # A file is known by inode, size and mtime; the sizes differ, so the change is seen even where two writes
    # fall in one tick of the file system's clock.
    assert len(renewed) != ca_file.stat().st_size
    ca_file.write_bytes(renewed)  # the CA renewed in place
    session_cls(conn).connect().close()
    with pytest.raises(TLSSecurityError):  # and back: every change is seen
        trustme.CA().cert_pem.write_to_path(str(ca_file))
        session_cls(conn).connect()
