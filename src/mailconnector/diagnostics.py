"""The connection Test: each server the connection serves, step by step, each step timed and explained.

DNS → TCP connect → TLS handshake (implicit TLS) → greeting → capabilities / EHLO → STARTTLS → (OAuth2 token)
→ authentication → IMAP: the folder can be selected / SMTP: the sender is accepted (MAIL FROM, then RSET).
The first failure stops that server's steps; the rest are listed as skipped so the user sees how far it got.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._net import Endpoint, make_ssl_context, transport_error
from ._steps import StepRecorder, StepResult
from .errors import MailConnectorError, ServerResponseError

if TYPE_CHECKING:
    from .connection import Connection, TlsSettings
    from .smtp import SmtpSession

__all__ = ["TestReport", "diagnose"]

_LATER: dict[str, list[str]] = {
    "smtp": ["DNS", "TCP connect", "TLS handshake and certificate", "greeting", "EHLO extensions",
             "STARTTLS offered and TLS certificate", "authentication", "sender accepted",
             "mail taken without a login"],
    "imap": ["DNS", "TCP connect", "TLS handshake and certificate", "greeting", "capabilities",
             "STARTTLS offered and TLS certificate", "authentication", "folder can be selected"],
}


@dataclass
class TestReport:
    connection: str
    steps: list[StepResult] = field(default_factory=list)

    __test__ = False  # not a pytest test class

    @property
    def ok(self) -> bool:
        return all(s.status == "passed" for s in self.steps)

    def first_failure(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def to_dict(self) -> dict[str, Any]:
        return {"connection": self.connection, "ok": self.ok, "steps": [s.to_dict() for s in self.steps]}


def diagnose(conn: Connection, *, folder: str = "INBOX",
             on_step: Callable[[StepResult], None] | None = None) -> TestReport:
    """The connection Test: DNS, TCP, TLS, capabilities, login, folder or sender, step by step on each server.
    ``on_step`` sees each step as it starts and as it ends (a web page showing them live)."""
    report = TestReport(conn.name)
    if conn.auth.type == "oauth2":
        rec = StepRecorder("oauth2", listener=on_step)
        if _token_step(conn, rec):
            report.steps += rec.steps
        else:
            report.steps += rec.steps
            for proto in ("smtp", "imap"):
                if conn.serves("send" if proto == "smtp" else "read"):
                    report.steps.append(StepResult(proto, "connect and log in", detail="skipped: no token"))
            return report
    protocols: tuple[Literal["smtp", "imap"], ...] = ("smtp", "imap")
    for proto in protocols:
        if not conn.serves("send" if proto == "smtp" else "read"):
            continue
        rec = StepRecorder(proto, listener=on_step)
        try:
            _test_server(conn, proto, rec, folder)
        except MailConnectorError:
            done = {s.name for s in rec.steps}
            for name in _LATER[proto]:
                server = conn.smtp if proto == "smtp" else conn.imap
                if name.startswith("STARTTLS") and server is not None and server.security != "starttls":
                    continue
                if name.startswith("TLS handshake") and server is not None and server.security != "ssl":
                    continue
                if name == "mail taken without a login" and conn.auth.type != "none":
                    continue
                if name not in done:
                    rec.steps.append(StepResult(proto, name))
        report.steps += rec.steps
    return report


def _token_step(conn: Connection, rec: StepRecorder) -> bool:
    from .auth import token_provider_for

    try:
        with rec.step("token acquisition") as st:
            provider = token_provider_for(conn)
            provider.token()
            oauth = conn.auth.oauth2
            assert oauth is not None
            st.detail = f"{oauth.provider} {oauth.grant}"
    except MailConnectorError:
        return False
    return True


def _test_server(conn: Connection, proto: Literal["smtp", "imap"], rec: StepRecorder, folder: str) -> None:
    _probe_network(Endpoint.of(conn, proto), conn.tls, rec)
    if proto == "smtp":
        from .smtp import SmtpSession

        smtp = SmtpSession(conn)
        try:
            smtp.connect(recorder=rec)
            sender = conn.from_address or conn.smtp_login()
            with rec.step("sender accepted") as st:
                code, text = smtp.check_sender(sender)
                if code == 530:  # RFC 4954: authentication required
                    raise smtp.login_required_error(f"MAIL FROM:<{sender}> {code} {text}")
                if code != 250:
                    from .errors import SenderRefusedError

                    raise SenderRefusedError(f"MAIL FROM:<{sender}> refused: {code} {text}", code=code, text=text,
                                             hint="the account may not send as this address: check from_address")
                st.detail = f"<{sender}> {code}; RSET, nothing sent"
            if conn.auth.type == "none":
                _relay_step(smtp, rec, sender, conn.from_address)
        finally:
            smtp.close()
    else:
        from .imap import ImapSession

        imap = ImapSession(conn)
        try:
            imap.connect(recorder=rec)
            with rec.step("folder can be selected") as st:
                state = imap.select(folder, readonly=True)
                st.detail = f"{folder}: {state.exists} messages, UIDVALIDITY {state.uidvalidity}"
        finally:
            imap.close()


def _relay_step(smtp: SmtpSession, rec: StepRecorder, sender: str, recipient: str | None) -> None:
    """auth.type none: does the server take mail without a login? RCPT to the sender's own address, then RSET.

    It shows the server takes mail for that address; relaying to other domains may still be refused.
    """
    if not recipient:  # nothing to try RCPT with; the sender step (the last one) says so
        rec.steps[-1].detail += "; mail without a login not tried: no from_address"
        return
    with rec.step("mail taken without a login") as st:
        code, text = smtp.check_sender(sender, recipient)
        if code not in (250, 251):
            from .smtp import needs_login

            if needs_login(code, text):
                raise smtp.login_required_error(f"RCPT TO:<{recipient}> {code} {text}")
            raise ServerResponseError(f"RCPT TO:<{recipient}> refused: {code} {text}", code=code, text=text,
                                      hint="the server does not take mail for from_address from this machine")
        st.detail = f"RCPT TO:<{recipient}> {code}; RSET, nothing sent"


def _probe_network(server: Endpoint, tls_settings: TlsSettings, rec: StepRecorder) -> None:
    """DNS, TCP and (implicit) TLS on a probe connection, so each gets its own time and its own words."""
    with rec.step("DNS") as st:
        try:
            infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            err = exc if isinstance(exc, socket.gaierror) else socket.gaierror(str(exc))
            raise transport_error(err, server) from exc
        st.detail = ", ".join(sorted({str(i[4][0]) for i in infos}))
    with rec.step("TCP connect") as st:
        try:
            sock = socket.create_connection((server.host, server.port), timeout=server.connect_timeout)
        except OSError as exc:
            raise transport_error(exc, server, phase="connect") from exc
        st.detail = f"{sock.getpeername()[0]}:{server.port}"
    try:
        if server.security == "ssl":
            with rec.step("TLS handshake and certificate") as st:
                ctx = make_ssl_context(tls_settings)
                sock.settimeout(server.command_timeout)
                try:
                    tls = ctx.wrap_socket(sock, server_hostname=server.host)
                except (OSError, ssl.SSLError) as exc:
                    raise transport_error(exc, server, phase="TLS handshake") from exc
                sock = tls
                st.detail = _cert_detail(tls)
    finally:
        sock.close()


def _cert_detail(tls: ssl.SSLSocket) -> str:
    cert: dict[str, Any] = dict(tls.getpeercert() or {})
    cn = ""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = str(value)
    sans = [str(v) for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")][:4]
    until = str(cert.get("notAfter", ""))
    parts = [tls.version() or ""]
    if cn or sans:
        parts.append(f"for {cn or ', '.join(sans)}")
    if until:
        parts.append(f"valid until {until}")
    if not cert:
        parts.append("certificate not verified (tls.verify: false)")
    return " ".join(p for p in parts if p)
