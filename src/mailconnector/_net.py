"""What SMTP and IMAP share below the protocol: the TLS context and the words for socket and TLS failures.

``smtp.py`` and ``imap.py`` each translate their library's exceptions in one place; both call
``transport_error`` here for the failures that belong to the network and TLS, not to the protocol.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._context import context
from .errors import ConfigError, ProtocolTimeoutError, TLSSecurityError, TransportError

if TYPE_CHECKING:  # annotations only: what lies below the protocols does not import the connection model
    from .connection import Connection, TlsSettings

__all__ = ["Endpoint", "NoGreeting", "SpeaksTls", "WrongProtocol", "await_greeting", "greeting_protocol",
           "make_ssl_context", "transport_error", "wrong_protocol"]

log = logging.getLogger("mailconnector.tls")
_FileId = tuple[str, int, int, int] | None


def make_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying TLS client context, cached: building one reads the CA bundle.

    The cache knows each file by its path, inode, size and modification time, so a renewed CA file or client
    certificate is read again by a long-running process (a worker, a watcher) without a restart. The cache
    is the process context's ``tls_contexts`` (bounded, least recently used first out).
    """
    key = (tls.verify, _file_id(tls.ca_file), _file_id(tls.client_cert), _file_id(tls.client_key))
    cache = context().tls_contexts
    ctx = cache.get(key)
    if ctx is not None:
        return ctx
    try:
        if tls.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        else:
            ctx = ssl.create_default_context()
        if tls.client_cert is not None:
            ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key) if tls.client_key else None)
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {exc.filename}", field="tls") from exc
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load certificate file: {exc.reason or exc}", field="tls") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        log.warning("TLS certificate verification is OFF (tls.verify: false): the connection can be intercepted")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cache.put(key, ctx)
    return ctx


def _file_id(path: Path | None) -> _FileId:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return (str(path), 0, 0, 0)  # loading it says what is wrong
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


# Seconds of silence after which a plain connection's port is checked for TLS: real servers greet at once,
# and one that delays its greeting on purpose (Postfix's postscreen) still gets it waited for in full.
PROBE_AFTER = 1.5
PROBE_BUDGET = 2.0  # seconds the probe may take, connect and handshake together


class NoGreeting(TimeoutError):
    """The server accepted the connection and said nothing within ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no greeting within {seconds:g} s")
        self.seconds = seconds


class SpeaksTls(OSError):
    """A plain connection met a port that waits for a TLS handshake (implicit TLS)."""


class WrongProtocol(OSError):
    """The port greeted in another protocol (``protocol``); ``greeting`` is what it said."""

    def __init__(self, protocol: str, greeting: bytes) -> None:
        super().__init__(f"the port answered as {protocol}")
        self.protocol = protocol
        self.greeting = greeting


def await_greeting(sock: socket.socket, host: str, port: int, timeout: float, expect: str) -> None:
    """Wait for a plain connection's greeting, leaving it unread for the library; a greeting of another
    protocol than ``expect`` ('SMTP' or 'IMAP') raises ``WrongProtocol``.

    A port of implicit TLS says nothing until the client starts TLS, so ``starttls`` or ``none`` pointed at
    it would wait the whole timeout and then only guess. After ``PROBE_AFTER`` seconds of silence a second
    connection tries a TLS handshake; a server that answers it raises ``SpeaksTls`` at once.
    """
    deadline = time.monotonic() + timeout
    probe_after = min(PROBE_AFTER, timeout / 2)
    probed = False
    with selectors.DefaultSelector() as selector:  # not select(): a busy process may hold fds past 1024
        selector.register(sock, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if selector.select(max(0.0, left if probed else min(left, probe_after))):
                first = sock.recv(256, socket.MSG_PEEK)
                other = greeting_protocol(first)
                if other is not None and other != expect:
                    raise WrongProtocol(other, first)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoGreeting(timeout)
            if not probed:
                probed = True
                # Bounded by what is left of the wait, so a greeting that comes meanwhile is still taken.
                if _speaks_tls(host, port, time.monotonic() + min(PROBE_BUDGET, left)):
                    raise SpeaksTls(f"port {port} waits for a TLS handshake")


def _speaks_tls(host: str, port: int, deadline: float) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only whether the port answers in TLS, not whom it belongs to
    try:
        with socket.create_connection((host, port), max(0.01, deadline - time.monotonic())) as raw:
            raw.settimeout(max(0.01, deadline - time.monotonic()))
            with ctx.wrap_socket(raw):
                return True
    except ssl.SSLError as exc:
        return "ALERT" in (exc.reason or "")  # a TLS server refusing this handshake still speaks TLS
    except OSError:
        return False


# Servers that speak first. The IMAP line also takes what smtplib keeps of "* OK ..." (the text after four
# characters) when the greeting came over TLS, where it cannot be peeked at.
_GREETINGS = (
    ("POP3", re.compile(rb"^\+OK\b")),
    ("SMTP", re.compile(rb"^(220|421|554)[ -]")),
    ("IMAP", re.compile(rb"^\* (OK|PREAUTH|BYE)\b|^\[CAPABILITY |\bIMAP4(rev[12])?\b", re.IGNORECASE)),
    ("SSH", re.compile(rb"^SSH-\d")),
)

_PORTS = {"smtp": "465 (ssl), 587 (starttls) or 25", "imap": "993 (ssl) or 143 (starttls)"}


def greeting_protocol(first: bytes | str) -> str | None:
    """The protocol whose greeting ``first`` looks like, or None."""
    data = first.encode("utf-8", "replace") if isinstance(first, str) else first
    return next((name for name, pattern in _GREETINGS if pattern.search(data.lstrip()[:200])), None)


@dataclass(frozen=True)
class Endpoint:
    """One server of a connection, as the network's words need it: where it is, how it is secured, how long
    it is waited for, and which connection it belongs to (the field an error points at)."""

    connection: str
    protocol: Literal["smtp", "imap"]
    host: str
    port: int
    security: str
    connect_timeout: float
    command_timeout: float

    @classmethod
    def of(cls, conn: Connection, protocol: Literal["smtp", "imap"]) -> Endpoint:
        server = conn.smtp if protocol == "smtp" else conn.imap
        if server is None:
            raise ConfigError(f"this connection has no {protocol} settings",
                              field=f"connections.{conn.name}.{protocol}")
        return cls(conn.name, protocol, server.host, server.port, server.security, conn.timeouts.connect,
                   conn.timeouts.command)

    @property
    def shown(self) -> str:
        """How messages name it: ``SMTP server mail.example.com:587``."""
        return f"{self.protocol.upper()} server {self.host}:{self.port}"


def wrong_protocol(server: Endpoint, other: str, greeting: bytes | str) -> ConfigError:
    """The error for a port that answered in another protocol: a wrong port, never worth a retry."""
    proto = server.protocol
    text = greeting.decode("utf-8", "replace") if isinstance(greeting, bytes) else greeting
    shown = f" ({' '.join(text.split())[:80]!r})"
    if other in ("SMTP", "IMAP"):
        hint = f"{other} answers on this port; {proto.upper()} usually listens on {_PORTS[proto]}"
    else:
        hint = f"{proto.upper()} usually listens on {_PORTS[proto]}"
    return ConfigError(
        f"{server.shown} answered as {'a' if other == 'POP3' else 'an'} "
        f"{other} server{shown}: this is not an {proto.upper()} port",
        field=f"connections.{server.connection}.{proto}.port", hint=hint,
    )


def transport_error(exc: BaseException, server: Endpoint, *, phase: str = "",
                    waited: float | None = None) -> TransportError:
    """Words and a hint for a socket/TLS failure talking to ``server``.

    ``waited``: the timeout that fired, when it is not the command timeout (the IMAP greeting is read
    within the connect timeout).
    """
    proto = server.protocol
    where = server.shown
    during = f" during {phase}" if phase else ""
    if isinstance(exc, SpeaksTls):
        return TLSSecurityError(
            f"{where} waits for a TLS handshake (implicit TLS), and security is {server.security}",
            hint=f"set security: ssl for port {server.port}, or use the server's "
            f"{'STARTTLS port (587)' if proto == 'smtp' else 'STARTTLS port (143)'}",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if "self-signed" in reason or "self signed" in reason or "unable to get local issuer" in reason:
            hint = ("the server's certificate is not signed by a CA this machine trusts; give its CA with "
                    "tls.ca_file (a self-signed test server: its own certificate or CA)")
        elif "Hostname mismatch" in reason or "IP address mismatch" in reason:
            hint = f"the certificate is not for {server.host!r}; connect with the host name it was issued for"
        elif "expired" in reason:
            hint = "the server's certificate has expired; the server's administrator must renew it"
        else:
            hint = "check tls.ca_file, or the server's certificate"
        return TLSSecurityError(f"{where}: certificate not trusted: {reason}", hint=hint)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or (
        isinstance(exc, ssl.SSLError) and exc.reason == "UNEXPECTED_EOF_WHILE_READING"
    ):
        # The peer (or something between) closed the connection mid-TLS: a drop, not a refusal.
        return TransportError(f"{where}: connection lost during the TLS exchange{during}",
                              hint="the server or the network closed the connection; it is retried")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_RECORD") or "wrong version" in str(
            exc
        ):
            hint = (f"port {server.port} does not speak TLS at once; use security: starttls (or none), "
                    f"or the implicit-TLS port {'465' if proto == 'smtp' else '993'}")
            return TLSSecurityError(f"{where}: TLS handshake failed ({reason})", hint=hint)
        return TLSSecurityError(f"{where}: TLS failed{during}: {reason}",
                                hint="check the security mode and port, and tls settings")
    if isinstance(exc, socket.gaierror):
        return TransportError(f"{where}: host {server.host!r} does not resolve ({exc.strerror})",
                              hint="check the host name for typos, and this machine's DNS")
    if isinstance(exc, ConnectionRefusedError):
        return TransportError(f"{where}: connection refused: nothing listens on that port",
                              hint=f"check the host and port (the usual {proto.upper()} ports: "
                              f"{'465 ssl, 587 starttls, 25 none' if proto == 'smtp' else '993 ssl, 143 starttls'})")
    if isinstance(exc, TimeoutError | socket.timeout):
        if phase in ("connect", ""):
            return ProtocolTimeoutError(f"{where}: no connection within {server.connect_timeout:g} s",
                                        hint="a firewall may drop the traffic, or the host is wrong")
        hint = "the server is slow or the connection stalled"
        if phase == "greeting":
            hint = "the server accepted the connection but said nothing: it may be overloaded, or not a mail server"
        seconds = exc.seconds if isinstance(exc, NoGreeting) else waited or server.command_timeout
        return ProtocolTimeoutError(f"{where}: no answer within {seconds:g} s{during}", hint=hint)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        hint = "the server closed the connection"
        if phase == "greeting" and server.security != "ssl":
            hint += f"; port {server.port} may expect implicit TLS (security: ssl)"
        return TransportError(f"{where}: connection lost{during}", hint=hint)
    if isinstance(exc, OSError):
        return TransportError(f"{where}: {exc.strerror or exc}{during}", hint="check the network path to the server")
    return TransportError(f"{where}: {exc}{during}")
