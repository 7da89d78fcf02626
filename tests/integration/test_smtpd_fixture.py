"""The aiosmtpd fixture behaves as its docstring says, seen through plain ``smtplib`` (not the project's code):
each TLS mode takes a logged-in message, PLAIN, LOGIN, CRAM-MD5 and SCRAM take non-ASCII passwords as UTF-8,
wrong passwords get 535, ``auth_required`` gets 530, an open relay has no AUTH, and the per-connection limit
answers 421 and hangs up."""

from __future__ import annotations

import base64
import hmac
import re
import smtplib
import socket
import ssl

import pytest
from scramp import ScramClient
from services.smtpd import SmtpServer

AWKWARD = 'pä"ss\\wörd {5}'
USERS = {"alice": AWKWARD, "bob": "пароль", "carol": "密码"}
MESSAGE = b"Subject: hello\r\n\r\n.a line starting with a dot\r\nbody\r\n"


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _decoded(reply: bytes) -> bytes:
    return base64.b64decode(reply)


def _connect(server: SmtpServer) -> smtplib.SMTP:
    """A connection in the server's security mode, after EHLO (and STARTTLS, verified against its CA)."""
    context = ssl.create_default_context(cafile=server.ca_file) if server.ca_file else None
    if server.security == "ssl":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, local_hostname="client.test", timeout=10,
                                              context=context)
    else:
        smtp = smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=10)
    if server.security == "starttls":
        smtp.ehlo()
        smtp.starttls(context=context)
    smtp.ehlo()
    return smtp


@pytest.mark.parametrize("security", ["starttls", "ssl", "none"])
def test_each_security_mode_takes_a_logged_in_message(security: str) -> None:
    with SmtpServer.start(security=security, users={"alice": "secret"}) as server:
        assert bool(server.ca_file) == (security != "none")
        smtp = _connect(server)
        try:
            assert smtp.esmtp_features["size"] == "10485760"
            assert smtp.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
            smtp.login("alice", "secret")
            smtp.sendmail("alice@interop.test", ["x@example.test", "y@example.test"], MESSAGE)
        finally:
            smtp.quit()
        [received] = server.received
        assert (received.mail_from, received.rcpt_tos) == ("alice@interop.test", ["x@example.test", "y@example.test"])
        assert received.data == MESSAGE  # dot-unstuffed, CRLF kept
        assert (received.login, received.mechanism) in {("alice", "PLAIN"), ("alice", "LOGIN")}
        assert server.messages_to("y@example.test") == [received]
        assert server.messages_to("z@example.test") == []


def test_greeting_and_starttls_required() -> None:
    with SmtpServer.start(users={"alice": "secret"}) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            assert sock.recv(200) == b"220 mail.interop.test ESMTP aiosmtpd 1.4.6\r\n"
        smtp = smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=10)
        try:
            smtp.ehlo()
            assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
            assert smtp.mail("alice@interop.test") == (530, b"Must issue a STARTTLS command first")
            assert smtp.docmd("AUTH", "PLAIN " + _b64("\0alice\0secret"))[0] == 530
        finally:
            smtp.quit()


def test_plain_and_login_decode_utf8() -> None:
    with SmtpServer.start(security="ssl", users=USERS) as server:
        smtp = _connect(server)  # smtplib's own login() would encode the password as ASCII
        try:
            assert smtp.docmd("AUTH", "PLAIN " + _b64(f"\0alice\0{AWKWARD}"))[0] == 235
            smtp.sendmail("alice@interop.test", ["x@example.test"], MESSAGE)
        finally:
            smtp.quit()
        smtp = _connect(server)
        try:
            code, challenge = smtp.docmd("AUTH", "LOGIN " + _b64("bob"))
            assert (code, _decoded(challenge)) == (334, b"Password\0")
            assert smtp.docmd(_b64(USERS["bob"]))[0] == 235
            smtp.sendmail("bob@interop.test", ["x@example.test"], MESSAGE)
        finally:
            smtp.quit()
        assert [(m.login, m.mechanism) for m in server.received] == [("alice", "PLAIN"), ("bob", "LOGIN")]


def test_cram_md5_with_a_utf8_password() -> None:
    with SmtpServer.start(security="ssl", users=USERS, mechanisms=("CRAM-MD5",)) as server:
        smtp = _connect(server)
        try:
            assert smtp.esmtp_features["auth"].split() == ["CRAM-MD5"]
            code, reply = smtp.docmd("AUTH", "CRAM-MD5")
            challenge = _decoded(reply)
            assert code == 334 and re.fullmatch(rb"<\d+\.\d+@localhost>", challenge)
            digest = hmac.new(USERS["carol"].encode(), challenge, "md5").hexdigest()
            assert smtp.docmd(_b64(f"carol {digest}"))[0] == 235
            smtp.sendmail("carol@interop.test", ["x@example.test"], MESSAGE)
        finally:
            smtp.quit()
        assert (server.received[0].login, server.received[0].mechanism) == ("carol", "CRAM-MD5")


def _scram(smtp: smtplib.SMTP, mechanism: str, user: str, password: str) -> int:
    """A SCRAM exchange with the client-first message as initial response; the code of the last reply."""
    scram = ScramClient([mechanism], user, password)
    code, reply = smtp.docmd("AUTH", f"{mechanism} {_b64(scram.get_client_first())}")
    assert code == 334
    scram.set_server_first(_decoded(reply).decode())
    code, reply = smtp.docmd(_b64(scram.get_client_final()))
    if code != 334:
        return code
    scram.set_server_final(_decoded(reply).decode())  # checks the server's signature
    return smtp.docmd("")[0]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_with_a_utf8_password(mechanism: str) -> None:
    with SmtpServer.start(users=USERS, mechanisms=("SCRAM-SHA-1", "SCRAM-SHA-256")) as server:
        smtp = _connect(server)
        try:
            assert smtp.esmtp_features["auth"].split() == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
            assert _scram(smtp, mechanism, "alice", AWKWARD) == 235
            smtp.sendmail("alice@interop.test", ["x@example.test"], MESSAGE)
        finally:
            smtp.quit()
        assert (server.received[0].login, server.received[0].mechanism) == ("alice", mechanism)


def test_wrong_credentials_get_535() -> None:
    mechanisms = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")
    with SmtpServer.start(security="none", users=USERS, mechanisms=mechanisms) as server:
        smtp = _connect(server)
        try:
            smtp.user, smtp.password = "alice", "wrong"
            for mechanism, method in (("PLAIN", smtp.auth_plain), ("LOGIN", smtp.auth_login),
                                      ("CRAM-MD5", smtp.auth_cram_md5)):
                with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                    smtp.auth(mechanism, method)
                assert failed.value.smtp_code == 535, mechanism
                assert failed.value.smtp_error == b"5.7.8 Authentication credentials invalid"
            assert _scram(smtp, "SCRAM-SHA-256", "alice", "wrong") == 535
            code, reply = smtp.docmd("AUTH", "SCRAM-SHA-256 " + _b64(ScramClient(["SCRAM-SHA-256"], "nobody", "x")
                                                                        .get_client_first()))
            assert (code, reply) == (535, b"5.7.8 Authentication credentials invalid")
            assert smtp.docmd("AUTH", "PLAIN " + _b64(b"\0alice\0\xff"))[0] == 535  # not UTF-8
            assert smtp.mail("alice@interop.test")[0] == 530
        finally:
            smtp.quit()
    assert server.received == []


def test_auth_required_without_login_gets_530() -> None:
    with SmtpServer.start(users=USERS) as server:
        smtp = _connect(server)
        try:
            assert smtp.mail("alice@interop.test") == (530, b"5.7.0 Authentication required")
        finally:
            smtp.quit()


def test_open_relay_has_no_auth() -> None:
    with pytest.raises(ValueError, match="auth_required"):
        SmtpServer.start(security="none")
    with SmtpServer.start(security="none", auth_required=False) as server:
        assert server.ca_file == ""
        smtp = _connect(server)
        try:
            assert not smtp.has_extn("auth")
            smtp.sendmail("anyone@example.test", ["x@example.test"], MESSAGE)
        finally:
            smtp.quit()
        assert [(m.mail_from, m.login, m.mechanism) for m in server.received] == [("anyone@example.test", None, None)]


def test_message_limit_per_connection_answers_421_and_hangs_up() -> None:
    with SmtpServer.start(users={"alice": "secret"}, max_messages_per_connection=2) as server:
        smtp = _connect(server)
        smtp.login("alice", "secret")
        for n in range(2):
            smtp.sendmail("alice@interop.test", [f"x{n}@example.test"], MESSAGE)
        assert smtp.mail("alice@interop.test") == (421, b"4.7.0 Too many messages on this connection, try again later")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
        smtp.close()
        smtp = _connect(server)  # a new connection starts counting again
        try:
            smtp.login("alice", "secret")
            smtp.sendmail("alice@interop.test", ["x2@example.test"], MESSAGE)
        finally:
            smtp.quit()
        assert len(server.received) == 3


def test_stop_drops_open_connections() -> None:
    server = SmtpServer.start(security="ssl", users={"alice": "secret"})
    smtp = _connect(server)
    try:
        server.stop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
    finally:
        smtp.close()
        server.stop()
