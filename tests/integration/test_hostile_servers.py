"""Servers that misbehave in ways no real server here can be made to: a SASL exchange that never ends, a SCRAM
server that accepts without proving it knows the password, a greeting that comes while the implicit-TLS
probe runs, a POP3 or SSH greeting, a relay check refused for another reason than a missing login.

Each is a few lines of scripted replies on a loopback socket (like the fault proxy, these are hostile peers,
not stand-ins for a protocol library); everything else in the suite talks to real servers.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import scramp
from conftest import wait_for

from mailconnector._net import NoGreeting, await_greeting
from mailconnector.cli._exit_codes import exit_code_for, exit_code_of_test
from mailconnector.connection import Connection
from mailconnector.diagnostics import diagnose
from mailconnector.errors import AuthenticationError, ConfigError
from mailconnector.imap import ImapSession
from mailconnector.smtp import SmtpSession

Reply = Callable[[bytes], bytes | None]  # a client line -> the server's reply (None: say nothing)


class Scripted:
    """A loopback server: ``greeting`` (after ``delay`` s), then ``reply`` to each line, on every connection, or
    with ``first_only`` on the first alone (later ones, such as the TLS probe, get nothing). ``lines`` is
    everything the clients sent."""

    def __init__(self, greeting: bytes, reply: Reply | None = None, *, delay: float = 0.0,
                 first_only: bool = False) -> None:
        self.greeting, self.reply, self.delay, self.first_only = greeting, reply, delay, first_only
        self.lines: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            if len(self.connections) == 1 or not self.first_only:
                threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        time.sleep(self.delay)
        try:
            conn.sendall(self.greeting)
            for line in conn.makefile("rb"):
                self.lines.append(line)
                answer = self.reply(line) if self.reply else None
                if answer:
                    conn.sendall(answer)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(greeting: bytes, reply: Reply | None = None, **kw: Any) -> Scripted:
        servers.append(Scripted(greeting, reply, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def smtp_connection(port: int, **top: Any) -> Connection:
    data: dict[str, Any] = {"activities": "send", "auth": {"username": "user", "password": "pässword"},
                            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
                            "timeouts": {"connect": 5, "command": 5}, **top}
    return Connection.from_dict(data, name="hostile")


def ehlo(mechanisms: str) -> Callable[[bytes], bytes | None]:
    def first(line: bytes) -> bytes | None:
        if line.upper().startswith((b"EHLO", b"HELO")):
            return f"250-hostile\r\n250 AUTH {mechanisms}\r\n".encode()
        if line.upper().startswith(b"QUIT"):
            return b"221 bye\r\n"
        return None
    return first


def test_a_server_that_asks_for_ever_gets_the_credentials_once(scripted: Callable[..., Scripted]) -> None:
    base = ehlo("PLAIN")

    def reply(line: bytes) -> bytes | None:
        return base(line) or b"334 \r\n"  # every answer, and the "*" that cancels, is asked again

    server = scripted(b"220 hostile ESMTP\r\n", reply)
    with pytest.raises(AuthenticationError, match="asked for more than PLAIN"):
        SmtpSession(smtp_connection(server.port)).connect()
    sent = [line for line in server.lines if not line.upper().startswith((b"EHLO", b"QUIT"))]
    assert sent[0].startswith(b"AUTH PLAIN ")  # the credentials, once, with the command
    assert sent[1:] == [b"*\r\n"]  # then the cancel: never the credentials again


def test_a_scram_server_that_accepts_without_its_proof_is_refused(scripted: Callable[..., Scripted]) -> None:
    """It holds another password, so it cannot compute the proof: it says 235 at once, as an impostor would."""
    mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
    impostor = mechanism.make_server(lambda _user: mechanism.make_auth_info("not the password", iteration_count=4096))
    base = ehlo("SCRAM-SHA-256")

    def reply(line: bytes) -> bytes | None:
        if line.startswith(b"AUTH SCRAM-SHA-256 "):
            impostor.set_client_first(base64.b64decode(line.split()[2]).decode())
            return b"334 " + base64.b64encode(impostor.get_server_first().encode()) + b"\r\n"
        if line.strip() and not line.upper().startswith((b"EHLO", b"QUIT")):
            return b"235 2.7.0 welcome\r\n"  # no server-final message: no proof
        return base(line)

    server = scripted(b"220 hostile ESMTP\r\n", reply)
    with pytest.raises(AuthenticationError, match="sent no proof") as caught:
        SmtpSession(smtp_connection(server.port)).connect()
    assert "is not the server it claims to be" in (caught.value.hint or "")


def test_a_greeting_that_comes_while_the_probe_runs_is_taken(scripted: Callable[..., Scripted]) -> None:
    """The greeting comes at 2 s; the probe (after 1.5 s) meets a silent connection and gives up within its
    budget; the greeting is then read, not reported missing."""
    server = scripted(b"220 slow ESMTP\r\n", delay=2.0, first_only=True)
    sock = socket.create_connection(("127.0.0.1", server.port), 5)
    try:
        started = time.monotonic()
        await_greeting(sock, "127.0.0.1", server.port, 6.0, "SMTP")
        assert time.monotonic() - started < 6.0
        wait_for(lambda: len(server.connections) == 2)  # the session's and the probe's (accepted in a thread)
        assert sock.recv(64) == b"220 slow ESMTP\r\n"  # left unread for the library
    finally:
        sock.close()
    silent = scripted(b"", delay=60, first_only=True)
    sock = socket.create_connection(("127.0.0.1", silent.port), 5)
    try:
        with pytest.raises(NoGreeting):
            await_greeting(sock, "127.0.0.1", silent.port, 2.0, "SMTP")
    finally:
        sock.close()


@pytest.mark.parametrize(("greeting", "named"), [(b"+OK POP3/IMAP4 server ready\r\n", "a POP3 server"),
                                                 (b"SSH-2.0-OpenSSH_9.2\r\n", "an SSH server")])
@pytest.mark.parametrize("proto", ["imap", "smtp"])
def test_a_greeting_of_another_protocol(scripted: Callable[..., Scripted], greeting: bytes, named: str,
                                        proto: str) -> None:
    server = scripted(greeting)
    data: dict[str, Any] = {"activities": "read" if proto == "imap" else "send",
                            "auth": {"username": "user", "password": "pw"},
                            proto: {"host": "127.0.0.1", "port": server.port, "security": "none"}}
    session: Any = (ImapSession if proto == "imap" else SmtpSession)(Connection.from_dict(data, name="x"))
    with pytest.raises(ConfigError) as caught:
        session.connect()
    assert f"answered as {named}" in caught.value.message and exit_code_for(caught.value) == 3


@pytest.mark.parametrize(("rcpt", "error_type", "code"), [
    (b"550 5.1.1 <robot@example.test>: user unknown", "ServerResponseError", 6),
    (b"554 5.7.1 Relay access denied", "AuthenticationError", 4),
])
def test_the_relay_step_tells_a_missing_login_from_another_refusal(
    scripted: Callable[..., Scripted], rcpt: bytes, error_type: str, code: int
) -> None:
    base = ehlo("PLAIN")

    def reply(line: bytes) -> bytes | None:
        if line.upper().startswith((b"MAIL", b"RSET")):
            return b"250 ok\r\n"
        if line.upper().startswith(b"RCPT"):
            return rcpt + b"\r\n"
        return base(line)

    server = scripted(b"220 relay ESMTP\r\n", reply)
    conn = smtp_connection(server.port, auth={"type": "none"}, from_address="robot@example.test")
    report = diagnose(conn)
    failed = report.first_failure()
    assert failed is not None and failed.name == "mail taken without a login"
    assert (failed.error_type, exit_code_of_test(report)) == (error_type, code)


def test_the_relay_step_is_skipped_without_a_from_address(scripted: Callable[..., Scripted]) -> None:
    base = ehlo("PLAIN")
    server = scripted(b"220 relay ESMTP\r\n", lambda line: b"250 ok\r\n" if line[:4].upper() in (b"MAIL", b"RSET")
                      else base(line))
    report = diagnose(smtp_connection(server.port, auth={"type": "none"}))
    steps = {s.name: s for s in report.steps}
    assert report.ok and "mail taken without a login" not in steps
    assert steps["sender accepted"].detail.endswith("mail without a login not tried: no from_address")
