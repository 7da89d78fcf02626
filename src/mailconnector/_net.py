"""What SMTP and IMAP share below the protocol: the TLS context and the words for socket and TLS failures.

``smtp.py`` and ``imap.py`` each translate their library's exceptions in one place; both call
``transport_error`` here for the failures that belong to the network and TLS, not to the protocol.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

from .connection import Connection, TlsSettings
from .errors import ConfigError, ProtocolTimeoutError, TLSSecurityError, TransportError

__all__ = ["make_ssl_context", "transport_error"]

log = logging.getLogger("mailconnector.tls")
_contexts: dict[tuple[bool, str | None, str | None, str | None], ssl.SSLContext] = {}


def make_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying TLS client context (cached per settings: building one reads the CA bundle)."""
    key = (tls.verify, _s(tls.ca_file), _s(tls.client_cert), _s(tls.client_key))
    ctx = _contexts.get(key)
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
    _contexts[key] = ctx
    return ctx


def _s(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def transport_error(exc: BaseException, conn: Connection, proto: str, *, phase: str = "") -> TransportError:
    """Words and a hint for a socket/TLS failure talking to ``proto`` ('smtp' or 'imap') of ``conn``."""
    server = conn.smtp if proto == "smtp" else conn.imap
    assert server is not None
    where = f"{proto.upper()} server {server.host}:{server.port}"
    during = f" during {phase}" if phase else ""
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
            return ProtocolTimeoutError(f"{where}: no connection within {conn.timeouts.connect:g} s",
                                        hint="a firewall may drop the traffic, or the host is wrong")
        hint = "the server is slow or the connection stalled"
        if phase == "greeting" and server.security != "ssl":
            hint = f"no greeting: port {server.port} may expect implicit TLS; try security: ssl"
        return ProtocolTimeoutError(f"{where}: no answer within {conn.timeouts.command:g} s{during}", hint=hint)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        hint = "the server closed the connection"
        if phase == "greeting" and server.security != "ssl":
            hint += f"; port {server.port} may expect implicit TLS (security: ssl)"
        return TransportError(f"{where}: connection lost{during}", hint=hint)
    if isinstance(exc, OSError):
        return TransportError(f"{where}: {exc.strerror or exc}{during}", hint="check the network path to the server")
    return TransportError(f"{where}: {exc}{during}")
