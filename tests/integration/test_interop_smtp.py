"""The same SMTP scenarios against two server implementations: Postfix (the sandbox) and aiosmtpd.

aiosmtpd also stands in for the servers the suite cannot start as they are: a relay that takes mail
without AUTH (OpenSMTPD as shipped, an internal smarthost), a plain port that offers only CRAM-MD5 (Exim),
SCRAM, and a server that refuses more than ten messages on one connection (Exim queues after ten).
Copies are counted in the mailbox (Postfix → Dovecot) or in the server's store (aiosmtpd).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_harness.runner import cli
from conftest import received
from services.smtpd import SmtpServer

from mailconnector.activities.send import SendEmail
from mailconnector.cli._exit_codes import exit_code_for, exit_code_of_test
from mailconnector.connection import Connection
from mailconnector.diagnostics import diagnose
from mailconnector.errors import AuthenticationError
from mailconnector.sandbox import Sandbox
from mailconnector.smtp import SmtpSession

PASSWORDS = ['pä"ss\\wörd {5}', "пароль-Ω", "密码 和 空格"]
RECIPIENT = "erin@example.test"  # a sandbox mailbox: Postfix delivers there; aiosmtpd takes any address


@dataclass
class SmtpUnderTest:
    name: str
    connection: Callable[..., Connection]  # (user, security, **top)
    count: Callable[[str, int], int]  # (subject token, copies expected at least) -> copies that arrived
    set_password: Callable[[str, str], None]


def _connection(name: str, host_port: int, security: str, ca_file: str, auth: dict[str, Any],
                **top: Any) -> Connection:
    data: dict[str, Any] = {
        "activities": "send",
        "auth": auth,
        "smtp": {"host": "127.0.0.1", "port": host_port, "security": security},
        "tls": {"ca_file": ca_file} if ca_file else {},
        "timeouts": {"connect": 5, "command": 30},
        "from_address": "hana@example.test",
        **top,
    }
    return Connection.from_dict(data, name=f"{name}-{uuid.uuid4().hex[:6]}")


def postfix(sandbox: Sandbox) -> SmtpUnderTest:
    ports = {"starttls": sandbox.info.ports["submission"], "ssl": sandbox.info.ports["smtps"],
             "none": sandbox.info.ports["smtp"]}

    def connection(user: str = "hana", security: str = "starttls", **top: Any) -> Connection:
        auth = top.pop("auth", {"type": "basic", "username": sandbox.user(user).address,
                                "password": sandbox.user(user).password})
        return _connection("postfix", ports[security], security, sandbox.info.ca_file, auth, **top)

    def count(tok: str, at_least: int) -> int:
        return len(received(sandbox, "erin", tok, at_least))

    return SmtpUnderTest("postfix", connection, count, sandbox.set_password)


def aiosmtpd(server: SmtpServer) -> SmtpUnderTest:
    def connection(user: str = "hana", security: str | None = None, **top: Any) -> Connection:
        auth = top.pop("auth", {"type": "basic", "username": user, "password": server.users.get(user, "")})
        return _connection("aiosmtpd", server.port, security or server.security, server.ca_file, auth, **top)

    def count(tok: str, at_least: int) -> int:
        copies = [m for m in server.messages_to(RECIPIENT) if tok.encode() in m.data]
        assert len(copies) >= at_least  # aiosmtpd stores a message before it answers 250
        return len(copies)

    return SmtpUnderTest("aiosmtpd", connection, count, server.set_password)


@pytest.fixture(scope="module")
def smtpd() -> Iterator[SmtpServer]:
    server = SmtpServer.start(security="starttls", users={"hana": "initial"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["postfix", "aiosmtpd"])
def server(request: pytest.FixtureRequest) -> SmtpUnderTest:
    if request.param == "postfix":
        return postfix(request.getfixturevalue("sandbox"))
    return aiosmtpd(request.getfixturevalue("smtpd"))


@pytest.fixture
def started() -> Iterator[Callable[..., SmtpServer]]:
    """``started(**options)``: an aiosmtpd configured for one test, stopped after it."""
    servers: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        servers.append(SmtpServer.start(**options))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def send(conn: Connection, tok: str, count: int, **settings: Any) -> list[Any]:
    records = [{"id": f"{tok}-{n}", "to": RECIPIENT, "subject": f"interop {tok} {n}", "text": f"body {n} — é"}
               for n in range(count)]
    settings.setdefault("backoff", 0.05)
    return sorted(SendEmail(conn, **settings).send(records), key=lambda r: r.index)


# ------------------------------------------------------------------------------------------------ both
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_the_connection_test_passes(server: SmtpUnderTest, security: str, started: Callable[..., SmtpServer]) -> None:
    if server.name == "aiosmtpd" and security == "ssl":
        server = aiosmtpd(started(security="ssl", users={"hana": "initial"}))
    server.set_password("hana", "initial")
    report = diagnose(server.connection("hana", security))
    assert report.ok, [s.to_dict() for s in report.steps]
    steps = {s.name: s for s in report.steps}
    assert "used: PLAIN" in (steps["authentication"].detail or "")
    if security == "starttls":
        assert (steps["EHLO extensions"].detail or "").startswith("after STARTTLS: ")
        assert "AUTH" in (steps["EHLO extensions"].detail or "")


def test_each_record_is_delivered_once(server: SmtpUnderTest) -> None:
    server.set_password("hana", "initial")
    tok = uuid.uuid4().hex
    responses = send(server.connection(), tok, 6, concurrency=2)
    assert [r.status for r in responses] == ["sent"] * 6, [r.error for r in responses]
    for n in range(6):
        assert server.count(f"interop {tok} {n}", 1) == 1


@pytest.mark.parametrize("password", PASSWORDS)
def test_passwords_in_any_script(server: SmtpUnderTest, password: str) -> None:
    """Once a crash with exit 10 ('ascii' codec) on every server that accepts such passwords."""
    server.set_password("hana", password)
    tok = uuid.uuid4().hex
    [response] = send(server.connection(), tok, 1)
    assert response.status == "sent", response.error
    assert server.count(f"interop {tok} 0", 1) == 1

    wrong = server.connection(auth={"type": "basic", "username": "hana@example.test" if server.name == "postfix"
                                    else "hana", "password": password[::-1] + "ü"})
    with pytest.raises(AuthenticationError) as caught:
        SmtpSession(wrong).connect()
    assert exit_code_for(caught.value) == 4
    assert password[::-1] not in str(caught.value.to_dict())


# ----------------------------------------------------------------------------- what aiosmtpd stands for
@pytest.mark.parametrize("security", ["none", "starttls"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_a_server_that_offers_one_mechanism(started: Callable[..., SmtpServer], mechanism: str,
                                            security: str, caplog: pytest.LogCaptureFixture) -> None:
    """Exim's plain port offers only CRAM-MD5: the Test used to say "fix the credentials" (exit 4). The
    protocol log of the exchange shows no form of the password."""
    smtpd = started(security=security, users={"hana": PASSWORDS[0]}, mechanisms=(mechanism,))
    conn = aiosmtpd(smtpd).connection()
    caplog.set_level(logging.DEBUG, logger="mailconnector.protocol.smtp")
    report = diagnose(conn)
    wire = caplog.text
    assert "AUTH " + mechanism in wire
    for form in (PASSWORDS[0], base64.b64encode(PASSWORDS[0].encode()).decode(), "p\\xc3\\xa4"):
        assert form not in wire
    assert report.ok, [s.to_dict() for s in report.steps]
    tok = uuid.uuid4().hex
    [response] = send(conn, tok, 1)
    assert response.status == "sent", response.error
    [got] = smtpd.messages_to(RECIPIENT)
    assert (got.login, got.mechanism) == ("hana", mechanism)


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_a_clear_mechanism_wins_where_offered(started: Callable[..., SmtpServer], security: str) -> None:
    """PLAIN works with any password store on the server; SCRAM or CRAM-MD5 only with one kept for them."""
    smtpd = started(security=security, users={"hana": "secret"}, mechanisms=("SCRAM-SHA-256", "CRAM-MD5", "PLAIN"))
    with SmtpSession(aiosmtpd(smtpd).connection()) as session:
        assert session.auth_mechanism == "PLAIN"


def test_auth_none_sends_through_an_open_relay(started: Callable[..., SmtpServer]) -> None:
    relay = started(security="none", users=None, auth_required=False)
    conn = aiosmtpd(relay).connection(auth={"type": "none"})
    report = diagnose(conn)
    assert report.ok, [s.to_dict() for s in report.steps]
    steps = {s.name: s for s in report.steps}
    assert steps["authentication"].detail == "no login (auth.type none); the server offers: none"
    assert steps["mail taken without a login"].status == "passed"
    tok = uuid.uuid4().hex
    assert [r.status for r in send(conn, tok, 3)] == ["sent"] * 3
    assert sorted(m.login or "-" for m in relay.messages_to(RECIPIENT)) == ["-"] * 3


def test_auth_none_where_the_server_requires_a_login(started: Callable[..., SmtpServer]) -> None:
    """aiosmtpd answers 530 at MAIL; the Test and a send both say a login is needed (exit 4), nothing sent."""
    smtpd = started(security="starttls", users={"hana": "secret"}, auth_required=True)
    conn = aiosmtpd(smtpd).connection(auth={"type": "none"})
    report = diagnose(conn)
    failed = report.first_failure()
    assert failed is not None and failed.error_type == "AuthenticationError" and exit_code_of_test(report) == 4
    assert "requires a login" in (failed.error or "") and "auth.type basic" in (failed.hint or "")
    [response] = send(conn, uuid.uuid4().hex, 1, retries=0)
    assert response.status == "failed" and response.error.type == "AuthenticationError"
    assert smtpd.received == []


def test_auth_none_against_postfix(sandbox: Sandbox) -> None:
    """Its port 25 takes mail for its own domain without a login; its submission port relays nothing."""
    server = postfix(sandbox)
    open_port = server.connection(security="none", auth={"type": "none"})
    assert diagnose(open_port).ok
    tok = uuid.uuid4().hex
    assert [r.status for r in send(open_port, tok, 1)] == ["sent"]
    assert server.count(f"interop {tok} 0", 1) == 1

    submission = server.connection(security="starttls", auth={"type": "none"})
    report = diagnose(submission)
    failed = report.first_failure()
    assert failed is not None and failed.name == "mail taken without a login" and exit_code_of_test(report) == 4
    assert "554 5.7.1" in (failed.error or "") and "auth.type basic" in (failed.hint or "")


def test_a_server_that_takes_ten_messages_per_connection(started: Callable[..., SmtpServer]) -> None:
    """Exim's default: after ten messages on one connection, 421 and the connection closed. Each message
    after that goes on a new connection; every record is delivered once."""
    smtpd = started(security="starttls", users={"hana": "secret"}, max_messages_per_connection=10)
    tok = uuid.uuid4().hex
    responses = send(aiosmtpd(smtpd).connection(), tok, 25, concurrency=1)
    assert [r.status for r in responses] == ["sent"] * 25, [r.error for r in responses]
    subjects = sorted(m.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in smtpd.received)
    assert subjects == sorted(f"interop {tok} {n}".encode() for n in range(25))


def test_the_command_line_with_a_non_ascii_password(started: Callable[..., SmtpServer], tmp_path: Path) -> None:
    """`mailconnector test` and `send` (the commands that crashed with exit 10), the password from the
    environment as a user writes it."""
    smtpd = started(security="starttls", users={"hana": PASSWORDS[0]})
    (tmp_path / "mailconnector.yaml").write_text(f"""\
connections:
  relay:
    activities: send
    auth: {{type: basic, username: hana, password: "${{env:RELAY_PASSWORD}}"}}
    smtp: {{host: 127.0.0.1, port: {smtpd.port}, security: starttls}}
    tls: {{ca_file: {smtpd.ca_file}}}
    from_address: hana@example.test
""", encoding="utf-8")
    env = {"RELAY_PASSWORD": PASSWORDS[0]}
    tested = cli(["test", "relay", "--json"], tmp_path, env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    (tmp_path / "out.jsonl").write_text(f'{{"to": "{RECIPIENT}", "subject": "cli", "text": "x"}}\n')
    sent = cli(["send", "relay", "--input", "out.jsonl"], tmp_path, env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert len(smtpd.messages_to(RECIPIENT)) == 1
    assert PASSWORDS[0] not in tested.stdout + tested.stderr + sent.stdout + sent.stderr
