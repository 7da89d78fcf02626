"""A second SMTP server implementation for tests, on aiosmtpd: in this process, on a free loopback port, with the
accepted messages kept in memory, gone after ``stop()``.

Why a second implementation: Postfix (the sandbox) is one; aiosmtpd answers differently in ways a client notices
(below), and a test can choose its TLS mode, AUTH mechanisms and a per-connection message limit in one call, where
a real MTA needs a configuration file and a restart. Why this shape:

* aiosmtpd's ``Controller`` runs an asyncio loop in a daemon thread and returns from ``start()`` once a first
  connection has been greeted. It cannot take ``port=0`` (that readiness check connects to the port it was given),
  so the socket is bound here and handed to the loop: no window in which another process could take the port.
* aiosmtpd makes one ``SMTP`` object per connection (``_Connection``, which counts that connection's messages) and
  shares one handler (``_Handler``: passwords, the extra AUTH mechanisms, the message store).
* PLAIN and LOGIN are aiosmtpd's own. They do not decode anything: the authenticator gets the base64-decoded
  credentials as raw bytes (``LoginPassword``), decoded here as UTF-8 and compared as ``str`` (undecodable: 535).
  CRAM-MD5 and SCRAM-SHA-1/-256 are handler methods named with ``@auth_mechanism`` (aiosmtpd would name
  ``auth_CRAM_MD5`` "CRAM_MD5": only ``__`` becomes ``-``); ``auth_exclude_mechanism`` hides the built-ins not asked
  for, so EHLO lists exactly ``mechanisms``.
* aiosmtpd counts only STARTTLS as TLS and would refuse AUTH on the implicit-TLS port (538), so ``ssl`` and ``none``
  set ``auth_require_tls=False``. Together with ``auth_required`` that makes aiosmtpd's constructor warn, once per
  connection and from the loop thread (into whichever test runs then), so ``_Connection`` sets the flag afterwards.
* aiosmtpd logs to "mail.log", set to WARNING here; the warning it logs itself on every successful AUTH
  ("Session.login_data is deprecated") is filtered out.

What a client sees (aiosmtpd 1.4.6):

* Greeting ``220 mail.interop.test ESMTP aiosmtpd 1.4.6``. EHLO: ``SIZE 10485760``, ``8BITMIME``, ``SMTPUTF8``,
  ``STARTTLS`` (``starttls``, before it), ``AUTH`` with the mechanisms sorted (``starttls``: only after it), ``HELP``.
* ``starttls``: any command but NOOP, EHLO, STARTTLS and QUIT before STARTTLS gets
  ``530 Must issue a STARTTLS command first``.
* No login and ``auth_required``: MAIL, RCPT and DATA get ``530 5.7.0 Authentication required``. Wrong credentials:
  ``535 5.7.8 Authentication credentials invalid``; a mechanism not offered: ``504 5.5.4``.
* The LOGIN challenges are ``User Name\\0`` and ``Password\\0`` (base64), not ``Username:`` and ``Password:``.
* CRAM-MD5 always sends its challenge (an initial response is ignored). SCRAM takes an initial response or asks
  with an empty 334; the server-final message comes in a 334 challenge, the client answers with an empty line, then
  235. The SCRAM user name is the one scramp parses (``=2C``/``=3D`` unescaped, SASLprep applied); an unknown one
  gets 535 right after the client-first message.
* ``max_messages_per_connection=N``: the MAIL after N accepted messages gets
  ``421 4.7.0 Too many messages on this connection, try again later`` and the connection is closed (as Exim does).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import aiosmtpd
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, auth_mechanism, syntax
from scramp import ScramException, ScramMechanism

HOST = "127.0.0.1"
HOSTNAME = "mail.interop.test"
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")
SECURITY = ("starttls", "ssl", "none")
SIZE_LIMIT = 10 * 1024 * 1024
TOO_MANY = "421 4.7.0 Too many messages on this connection, try again later"

_LOG = logging.getLogger("mail.log")
_LOG.setLevel(logging.WARNING)
_LOG.addFilter(lambda record: not str(record.msg).startswith("Session.login_data is deprecated"))

_INVALID = AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8
_ANSWERED = AuthResult(success=False, handled=True)  # the client aborted or sent bad base64: aiosmtpd answered 501

ScramInfo = tuple[bytes, bytes, bytes, int]


@dataclass
class Received:
    """One accepted message: the envelope, the data as received (dot-unstuffed, CRLF) and who sent it how."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    mechanism: str | None


class _Identity(NamedTuple):
    """``session.auth_data`` after a successful AUTH (aiosmtpd copies ``login`` to ``session.login_data``)."""

    login: str
    mechanism: str


def _success(login: str, mechanism: str) -> AuthResult:
    return AuthResult(success=True, auth_data=_Identity(login, mechanism))


async def _initial_response(server: SMTP, args: list[str]) -> bytes | None:
    """The client's first SASL message: given with AUTH, or asked for with an empty 334; None when answered 501."""
    if len(args) == 1:
        response = await server.challenge_auth("")
        return response if isinstance(response, bytes) else None
    try:
        return base64.b64decode(args[1], validate=True)
    except binascii.Error:
        await server.push("501 5.5.2 Can't decode base64")
        return None


class _Handler:
    """What all connections share. aiosmtpd takes every ``auth_*`` attribute as a mechanism, ``handle_*`` as a hook."""

    def __init__(self, users: dict[str, str], mechanisms: tuple[str, ...]) -> None:
        self.users = users
        self.scram: dict[str, dict[str, ScramInfo]] = {
            name: {login: ScramMechanism(name).make_auth_info(password, iteration_count=4096)
                   for login, password in users.items()}
            for name in mechanisms if name.startswith("SCRAM-")}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.throttle = 0  # this many MAIL commands (from now on, any connection) get a 451 "slow down"
        self.throttled_at: list[float] = []  # when each of those was answered (time.monotonic())
        self.connections: set[_Connection] = set()  # touched only in the loop thread

    def drop_connections(self) -> None:
        """Abort, not close: a TLS close waits for the client's close_notify, which may never come."""
        for connection in list(self.connections):
            assert isinstance(connection.transport, asyncio.Transport)
            connection.transport.abort()

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # with this hook present aiosmtpd leaves it to the hook
        if self.users:
            return responses
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_DATA(self, server: _Connection, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None and envelope.original_content is not None
        identity: _Identity | None = session.auth_data if session.authenticated else None
        message = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                           identity.login if identity else None, identity.mechanism if identity else None)
        with self.lock:
            self.received.append(message)
        server.accepted += 1
        return "250 OK"

    def check_login(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                    credentials: LoginPassword) -> AuthResult:
        """aiosmtpd's ``authenticator``, called by its PLAIN and LOGIN with the credentials as raw bytes."""
        try:
            login, password = credentials.login.decode(), credentials.password.decode()
        except UnicodeDecodeError:
            return _INVALID
        return _success(login, mechanism) if self.users.get(login) == password else _INVALID

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        challenge = f"<{secrets.randbelow(10**10)}.{time.time_ns()}@localhost>".encode()
        response = await server.challenge_auth(challenge)
        if not isinstance(response, bytes):
            return _ANSWERED
        login_bytes, _, digest = response.rpartition(b" ")
        try:
            login = login_bytes.decode()
        except UnicodeDecodeError:
            return _INVALID
        password = self.users.get(login)
        if password is None:
            return _INVALID
        expected = hmac.new(password.encode(), challenge, "md5").hexdigest().encode()
        return _success(login, "CRAM-MD5") if hmac.compare_digest(expected, digest) else _INVALID

    @auth_mechanism("SCRAM-SHA-1")
    async def auth_SCRAM_SHA_1(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._scram("SCRAM-SHA-1", server, args)

    @auth_mechanism("SCRAM-SHA-256")
    async def auth_SCRAM_SHA_256(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._scram("SCRAM-SHA-256", server, args)

    async def _scram(self, name: str, server: SMTP, args: list[str]) -> AuthResult:
        infos = self.scram[name]
        logins: list[str] = []

        def lookup(login: str) -> ScramInfo | None:
            logins.append(login)
            return infos.get(login)

        scram = ScramMechanism(name).make_server(lookup)
        client_first = await _initial_response(server, args)
        if client_first is None:
            return _ANSWERED
        try:
            scram.set_client_first(client_first.decode())
            client_final = await server.challenge_auth(scram.get_server_first())
            if not isinstance(client_final, bytes):
                return _ANSWERED
            scram.set_client_final(client_final.decode())
        except (ScramException, UnicodeDecodeError):
            return _INVALID
        if not isinstance(await server.challenge_auth(scram.get_server_final()), bytes):
            return _ANSWERED
        return _success(logins[0], name)


class _Connection(SMTP):
    """aiosmtpd's protocol object for one connection, plus its message count and limit."""

    def __init__(self, handler: _Handler, *, auth_required: bool, max_messages: int | None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._auth_required = auth_required  # set after the constructor, so it does not warn (module docstring)
        self.max_messages = max_messages
        self.accepted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # called again with the TLS transport after STARTTLS
        self.event_handler.connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.connections.discard(self)
        super().connection_lost(error)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        handler = self.event_handler
        with handler.lock:
            throttle, handler.throttle = handler.throttle > 0, max(0, handler.throttle - 1)
            if throttle:
                handler.throttled_at.append(time.monotonic())
        if throttle:  # as Exchange Online and Gmail ask a sender to slow down
            await self.push("451 4.7.0 Rate limit exceeded, slow down and try again later")
            return
        if self.max_messages is not None and self.accepted >= self.max_messages:
            await self.push(TOO_MANY)
            assert self.transport is not None
            self.transport.close()  # what aiosmtpd itself does after its own 421 (command_call_limit)
            return
        await super().smtp_MAIL(arg)


class _Controller(Controller):
    """aiosmtpd's threaded controller, serving on a socket bound beforehand and making ``_Connection``s."""

    def __init__(self, handler: _Handler, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, port=sock.getsockname()[1], **kwargs)
        self.sock = sock

    def factory(self) -> _Connection:
        return _Connection(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)

    def stop(self, no_assert: bool = False) -> None:
        """Close the open connections first: aiosmtpd would leave them to the garbage collector (ResourceWarning)."""
        self.loop.call_soon_threadsafe(self.handler.drop_connections)
        super().stop(no_assert)
        self.sock.close()  # already closed, unless the loop never got to serve it


class SmtpServer:
    """One aiosmtpd server on 127.0.0.1:``port``, served from a thread of this process."""

    host: str
    port: int
    security: str
    ca_file: str
    received: list[Received]

    def __init__(self, security: str, handler: _Handler) -> None:
        self.host = HOST
        self.port = 0
        self.security = security
        self.ca_file = ""
        self.received = handler.received
        self._handler = handler
        self._directory: Path | None = None
        self._controller: _Controller | None = None

    @classmethod
    def start(cls, *, security: str = "starttls", users: dict[str, str] | None = None,
              mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"), auth_required: bool = True,
              max_messages_per_connection: int | None = None) -> SmtpServer:
        """Start a server and return once it has greeted a first connection.

        ``users`` (login → password) empty or None: no AUTH at all, an open relay (``auth_required`` must be False).
        """
        if security not in SECURITY:
            raise ValueError(f"security must be one of {SECURITY}, not {security!r}")
        if unknown := sorted(set(mechanisms) - set(MECHANISMS)):
            raise ValueError(f"unknown mechanisms {unknown}; known: {MECHANISMS}")
        if users and not mechanisms:
            raise ValueError("users need at least one mechanism to log in with")
        if not users and auth_required:
            raise ValueError("auth_required needs users: without users there is no AUTH")
        server = cls(security, _Handler(users or {}, mechanisms))
        try:
            server._launch(users or {}, mechanisms, auth_required, max_messages_per_connection)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop the loop thread (dropping open connections) and remove the certificate directory; safe to repeat."""
        try:
            if self._controller is not None:
                self._controller.stop(no_assert=True)
                self._controller = None
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def users(self) -> dict[str, str]:
        return dict(self._handler.users)

    def throttle(self, count: int) -> None:
        """Answer the next ``count`` MAIL commands with ``451 4.7.0 Rate limit exceeded``."""
        with self._handler.lock:
            self._handler.throttle = count

    @property
    def throttled_at(self) -> list[float]:
        with self._handler.lock:
            return list(self._handler.throttled_at)

    def set_password(self, login: str, password: str) -> None:
        """Give ``login`` another password (or add the user), for the next logins."""
        with self._handler.lock:
            self._handler.users[login] = password
            for name, infos in self._handler.scram.items():
                infos[login] = ScramMechanism(name).make_auth_info(password, iteration_count=4096)

    def messages_to(self, address: str) -> list[Received]:
        with self._handler.lock:
            return [message for message in self.received if address in message.rcpt_tos]

    def _launch(self, users: dict[str, str], mechanisms: tuple[str, ...], auth_required: bool,
                max_messages: int | None) -> None:
        context = None
        if self.security != "none":
            self._directory = Path(tempfile.mkdtemp(prefix="mc-smtpd-"))
            ca = trustme.CA()
            self.ca_file = str(self._directory / "ca.pem")
            ca.cert_pem.write_to_path(self.ca_file)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost", HOST).configure_cert(context)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, 0))
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        starttls = self.security == "starttls"
        self._controller = _Controller(
            self._handler, sock, server_hostname=HOSTNAME, ident=f"ESMTP aiosmtpd {aiosmtpd.__version__}",
            ssl_context=context if self.security == "ssl" else None,
            tls_context=context if starttls else None, require_starttls=starttls, auth_require_tls=starttls,
            auth_required=auth_required, authenticator=self._handler.check_login,
            auth_exclude_mechanism=[name for name in MECHANISMS if not users or name not in mechanisms],
            data_size_limit=SIZE_LIMIT, enable_SMTPUTF8=True, max_messages=max_messages)
        self._controller.start()
