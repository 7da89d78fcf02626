"""SmtpSession: one SMTP connection over ``smtplib`` — connect, TLS, login, send one message at a time.

This is the one place where ``smtplib``, ``ssl`` and ``socket`` exceptions become ours (``_translate``).
A transaction is driven phase by phase (MAIL, RCPT, DATA, the final dot) so that a failure can be told
apart: before the data was accepted it is safe to retry; after the final dot it may have been delivered.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import smtplib
from collections.abc import Callable
from dataclasses import dataclass, field

from ._net import NoGreeting, WrongProtocol, greeting_protocol, make_ssl_context, transport_error, wrong_protocol
from ._session import Session
from ._smtp_lib import Client
from ._steps import StepRecorder, shorten, step
from .auth._password import ExchangeFailed, choose_mechanism, exchange_error, start_exchange
from .auth.sasl import decode_oauth_error
from .errors import AuthenticationError, MailConnectorError, SenderRefusedError, ServerResponseError, TransportError
from .logs import redact_smtp_line

__all__ = ["MayHaveBeenDelivered", "NotCommitted", "SmtpSession", "TransactionResult"]

wire = logging.getLogger("mailconnector.protocol.smtp")

CRLF = b"\r\n"
_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_DOT = re.compile(rb"(?m)^\.")


@dataclass
class TransactionResult:
    """What one MAIL/RCPT/DATA transaction achieved."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    data_reply: tuple[int, str] | None = None


class MayHaveBeenDelivered(TransportError):
    """The connection failed after the final dot was sent: the server may have queued the message."""

    retryable = False


# smtplib's reply code for a line that does not start with three digits: the reply was garbled on the way.
_GARBLED = -1


class NotCommitted(TransportError):
    """The caller's ``commit`` refused the transaction before any data was sent: nothing was submitted."""


class SmtpSession(Session):
    """One authenticated SMTP connection. Not thread-safe: the send activity gives each worker its own."""

    protocol = "smtp"
    _smtp: Client | None = None
    _in_auth = False  # inside an AUTH exchange: the wire log hides what goes back and forth

    def _wire_line(self, direction: str, line: str) -> None:
        """One line of the conversation into the protocol log (--verbose-protocol), credentials redacted."""
        if direction == "C":
            shown = redact_smtp_line(line, in_auth=self._in_auth)
            if re.match(r"\s*AUTH\s", line, re.IGNORECASE):
                self._in_auth = True
            wire.debug("C: %s", shown if len(shown) < 2000 else f"{shown[:200]}... ({len(shown)} chars)")
            return
        if self._in_auth and not line.startswith("334"):
            self._in_auth = False
        wire.debug("S: %s", line)

    # -------------------------------------------------------------- translate
    def _translated(self, exc: Exception, phase: str) -> MailConnectorError | None:
        if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == _GARBLED:
            return self._garbled(phase)  # not the server's answer: the reply could not be read
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            if 400 <= exc.smtp_code < 500:  # 454: the server cannot check credentials now (its auth is down)
                return self._cannot_check_login(f"{exc.smtp_code} {_text(exc.smtp_error)}")
            return self._auth_error(exc.smtp_code, _text(exc.smtp_error))
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return self._dropped(f"closed the connection during {phase}",
                                 "the server may limit connections or idle time; it is retried")
        if isinstance(exc, smtplib.SMTPResponseException):
            return ServerResponseError(f"SMTP server refused {phase}: {exc.smtp_code} {_text(exc.smtp_error)}",
                                       code=exc.smtp_code, text=_text(exc.smtp_error))
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ServerResponseError(f"SMTP server does not support {phase}: {exc}", code=502)
        return None

    def _garbled(self, phase: str) -> TransportError:
        """A reply without a reply code: the connection is corrupt, not the server's answer. The connection
        is closed (a command may be half-understood) and the error is retryable, like a drop."""
        self.close(quit=False)
        return TransportError(
            f"{self.endpoint.shown} sent a garbled reply during {phase}",
            hint="the connection was corrupted on the way; it is retried on a new connection",
        )

    def _auth_error(self, code: int, text: str) -> AuthenticationError:
        hint = self._password_refused_hint()
        oauth_detail = decode_oauth_error(text) if self.auth_mechanism in ("XOAUTH2", "OAUTHBEARER") else None
        msg = f"SMTP login as {self.connection.smtp_login()!r} refused: {code} {text}"
        if oauth_detail:
            msg += f" ({oauth_detail})"
            hint = "the token was refused: check it is for this user, unexpired, and has the mail scope"
        return AuthenticationError(msg, hint=hint)

    # ---------------------------------------------------------------- connect
    def connect(self, *, login: bool = True, recorder: StepRecorder | None = None) -> SmtpSession:
        """Connect, greet, secure (STARTTLS is required when the mode says so) and log in."""
        ctx = make_ssl_context(self.connection.tls) if self.server.security != "none" else None
        smtp = Client(
            host=self.server.host,
            connect_timeout=self.connection.timeouts.connect,
            command_timeout=self.connection.timeouts.command,
            implicit_tls=ctx if self.server.security == "ssl" else None,
            on_line=self._wire_line if wire.isEnabledFor(logging.DEBUG) else None,
        )
        self._smtp = smtp
        try:
            with step(recorder, "greeting") as st, self._translate("connect"):
                try:
                    code, msg = smtp.connect(self.server.host, self.server.port)
                except TimeoutError as exc:
                    # connect() covers both the TCP connect and the greeting; tell them apart.
                    phase = "greeting" if smtp.sock is not None or isinstance(exc, NoGreeting) else "connect"
                    raise transport_error(exc, self.endpoint, phase=phase) from exc
                except WrongProtocol as exc:
                    raise wrong_protocol(self.endpoint, exc.protocol, exc.greeting) from exc
                except smtplib.SMTPServerDisconnected as exc:
                    # smtplib turns a timeout or EOF while reading the greeting into this; keep the cause so the
                    # hint can say "this port may expect implicit TLS".
                    ctx_exc = exc.__context__
                    cause = ctx_exc if isinstance(ctx_exc, OSError) else EOFError(str(exc))
                    raise transport_error(cause, self.endpoint, phase="greeting") from exc
                if code == _GARBLED:
                    other = greeting_protocol(msg)  # over TLS: what smtplib kept after the first four characters
                    if other is not None:
                        self.close(quit=False)
                        raise wrong_protocol(self.endpoint, other, msg)
                    raise self._garbled("the greeting")
                if code != 220:
                    raise ServerResponseError(f"SMTP greeting refused: {code} {_text(msg)}", code=code,
                                              text=_text(msg))
                st.detail = shorten(f"{code} {_text(msg)}")
            with step(recorder, "EHLO extensions") as ehlo_step, self._translate("EHLO"):
                if smtp.ehlo()[0] == _GARBLED:
                    raise self._garbled("EHLO")
                ehlo_step.detail = _extensions(smtp)
            if self.server.security == "starttls":
                assert ctx is not None
                tls_context = ctx

                def upgrade() -> object:
                    with self._translate("STARTTLS"):
                        smtp.starttls(context=tls_context)
                        if smtp.ehlo()[0] == _GARBLED:
                            raise self._garbled("EHLO")
                    return smtp.sock

                self._starttls(recorder, offered=smtp.has_extn("starttls"), tls_port=465, upgrade=upgrade)
                ehlo_step.detail = "after STARTTLS: " + _extensions(smtp)
            if login:
                self._authenticate(recorder, lambda: " ".join(smtp.esmtp_features.get("auth", "").upper().split())
                                   or "none")
        except BaseException:
            self.close()
            raise
        return self

    def login(self) -> None:
        smtp = self._require()
        auth = self.connection.auth
        if auth.type == "none":
            return
        if not smtp.has_extn("auth"):
            if self.server.security == "none":
                hint = "the server offers no AUTH in plain text; use security: starttls or ssl"
            else:
                hint = "this server does not accept logins on this port; use the submission port (587 or 465)"
            raise AuthenticationError(
                f"{self.endpoint.shown} offers no authentication", hint=hint
            )
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        user = self.connection.smtp_login()
        if auth.type == "basic":
            assert auth.password is not None
            mechanism = choose_mechanism(offered)
            if mechanism is None:
                hint = "ask for a login mechanism the connector speaks, or use OAuth2 where the server offers it"
                if self.server.security == "none" and smtp.has_extn("starttls"):
                    hint = "servers often offer PLAIN and LOGIN only after STARTTLS: use security: starttls"
                raise AuthenticationError(
                    f"SMTP server offers only {', '.join(offered) or 'no'} login mechanisms; a password login "
                    "needs PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1 or SCRAM-SHA-256", hint=hint,
                )
            self.auth_mechanism = mechanism
            self._password_login(mechanism, user, auth.password.get_secret_value())
            return
        self._oauth_login(user, offered)

    def _password_login(self, mechanism: str, user: str, password: str) -> None:
        """A SASL exchange whose every response is built from UTF-8 bytes (smtplib's ``auth`` encodes ASCII)."""
        smtp = self._require()
        exchange = start_exchange("SMTP", mechanism, user, password)
        with self._translate("AUTH"):
            self._in_auth = True
            try:
                first = f" {_b64(exchange(b''))}" if exchange.has_initial_response else ""
                code, resp = smtp.docmd("AUTH", mechanism + first)
                while code == 334:
                    try:
                        answer = exchange(base64.b64decode(resp, validate=True))
                    except binascii.Error:
                        raise self._garbled("AUTH") from None
                    except ExchangeFailed as exc:
                        smtp.docmd("*")  # RFC 4954: cancel the exchange
                        raise exchange_error("SMTP", user, exc) from exc
                    code, resp = smtp.docmd(_b64(answer))
            finally:
                self._in_auth = False
            if code != 235:
                raise smtplib.SMTPAuthenticationError(code, resp)
            if not exchange.complete:  # SCRAM: accepted, yet the server never proved it knows the password
                self.close(quit=False)
                raise exchange_error("SMTP", user, ExchangeFailed(f"{mechanism}: the server sent no proof"))

    def _oauth_login(self, user: str, offered: list[str], *, retried: bool = False) -> None:
        smtp = self._require()
        oauth = self.connection.auth.oauth2
        assert oauth is not None
        mech = oauth.mechanism.upper()
        if mech not in offered:
            raise AuthenticationError(
                f"SMTP server does not offer {mech} (offers: {', '.join(offered) or 'none'})",
                hint="choose auth.oauth2.mechanism from what the server offers",
            )
        provider, mech, token, payload = self._initial_oauth_response(user, retried=retried)
        with self._translate("AUTH"):
            self._in_auth = True
            code, resp = smtp.docmd("AUTH", f"{mech} {_b64(payload)}")
            if code == 334:
                # A failure challenge (base64 JSON); answer empty to get the final reply.
                detail = decode_oauth_error(_text(resp))
                code, resp = smtp.docmd("")
                if code not in (235, 503):
                    self._in_auth = False
                    if self._token_is_worth_a_retry(provider, detail, retried=retried):
                        return self._oauth_login(user, offered, retried=True)
                    reply = f"{code} {_text(resp)}"
                    raise self._token_refused(f"SMTP login as {user!r} refused: {reply}", reply=reply, token=token,
                                              user=user, detail=detail or "")
            self._in_auth = False
            if code != 235:
                # No challenge (Exchange Online answers 535 at once): the provider's usual causes.
                reply = f"{code} {_text(resp)}"
                raise self._token_refused(f"SMTP login as {user!r} refused: {reply}", reply=reply, token=token,
                                          user=user)
            smtp.does_esmtp = True

    # ------------------------------------------------------------ properties
    def _require(self) -> Client:
        if self._smtp is None or self._smtp.sock is None:
            raise TransportError("SMTP session is not connected")
        return self._smtp

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.sock is not None

    @property
    def extensions(self) -> dict[str, str]:
        return dict(self._smtp.esmtp_features) if self._smtp else {}

    @property
    def max_size(self) -> int | None:
        size = self.extensions.get("size", "").strip()
        return int(size) if size.isdigit() and int(size) > 0 else None

    @property
    def supports_smtputf8(self) -> bool:
        return "smtputf8" in self.extensions

    @property
    def supports_pipelining(self) -> bool:
        return "pipelining" in self.extensions

    # ------------------------------------------------------------------ send
    def send(self, envelope_from: str, recipients: list[str], data: bytes, *,
             smtputf8: bool = False, crlf: bool = False,
             commit: Callable[[], bool] | None = None) -> TransactionResult:
        """Send one message. Raises on failure; a ``MayHaveBeenDelivered`` after the final dot.

        ``crlf=True`` says every line of ``data`` already ends in CRLF and no CR or LF stands alone (what
        ``ComposedMessage.as_bytes`` gives): the check that would otherwise scan a large message three
        times is skipped. Dot-stuffing is always done here.

        Partial refusals are returned (``refused``), not raised. Every recipient refused raises
        ``RecipientsRefusedError`` (from ``ServerResponseError``) after resetting the transaction.

        ``commit`` is called before any of the message data is written: with PIPELINING, right after MAIL,
        RCPT and DATA went out (the send ledger's durable claim then overlaps the server's work on them),
        otherwise right before DATA. So a killed process leaves a claim only for a message in flight. When
        it returns False (another sender holds the Message-ID) or raises, the connection is dropped -- the
        one way to leave a transaction that may be in DATA without submitting -- and ``NotCommitted`` (or
        its exception) is raised. A refusal after a granted commit is raised as usual: nothing was sent.
        """
        smtp = self._require()
        self._check_fits(len(data), smtputf8=smtputf8)
        payload = _wire_payload(data, crlf=crlf)
        # Commands carry a non-ASCII address only with SMTPUTF8 (smtplib's non-pipelined path encodes them).
        smtp.command_encoding = "utf-8" if smtputf8 else "ascii"
        opts = [f"SIZE={len(data)}", *(["BODY=8BITMIME"] if "8bitmime" in self.extensions else []),
                *(["SMTPUTF8"] if smtputf8 else [])]
        mail_reply, rcpt_replies, data_reply = self._envelope(
            f"MAIL FROM:<{envelope_from}> {' '.join(opts)}", [f"RCPT TO:<{r}>" for r in recipients], commit)
        result = self._settle_envelope(envelope_from, recipients, mail_reply, rcpt_replies, data_reply)
        result.data_reply = self._data(payload)
        return result

    def _check_fits(self, size: int, *, smtputf8: bool) -> None:
        """Refuse before anything is sent what the server said it cannot take (EHLO: SMTPUTF8, SIZE)."""
        if smtputf8 and not self.supports_smtputf8:
            raise ServerResponseError(
                "the message needs SMTPUTF8 (an internationalised address) and the server does not offer it",
                code=553, hint="use ASCII addresses, or a server that supports SMTPUTF8",
            )
        limit = self.max_size
        if limit is not None and size > limit:  # checked before any copy of a message that big is made
            raise ServerResponseError(
                f"message is {size:,} bytes; the server accepts at most {limit:,} (SIZE)", code=552,
                hint="make the attachments smaller or send them as links",
            )

    def _envelope(self, mail_cmd: str, rcpt_cmds: list[str], commit: Callable[[], bool] | None
                  ) -> tuple[tuple[int, bytes], list[tuple[int, bytes]], tuple[int, bytes]]:
        """MAIL, RCPT and DATA (pipelined where offered), with ``commit`` before any data: their replies."""
        smtp = self._require()
        with self._translate("MAIL/RCPT"):
            if self.supports_pipelining:
                smtp.send("".join(c + "\r\n" for c in (mail_cmd, *rcpt_cmds, "DATA")).encode("utf-8"))
                self._commit(commit)
                mail_reply = smtp.getreply()
                rcpt_replies = [smtp.getreply() for _ in rcpt_cmds]
                return mail_reply, rcpt_replies, smtp.getreply()
            mail_reply = smtp.docmd(mail_cmd)
            if mail_reply[0] != 250:
                return mail_reply, [], (503, b"not sent")
            rcpt_replies = [smtp.docmd(c) for c in rcpt_cmds]
            if not any(c in (250, 251) for c, _ in rcpt_replies):
                return mail_reply, rcpt_replies, (503, b"not sent")
            self._commit(commit)
            return mail_reply, rcpt_replies, smtp.docmd("DATA")

    def _settle_envelope(self, envelope_from: str, recipients: list[str], mail_reply: tuple[int, bytes],
                         rcpt_replies: list[tuple[int, bytes]], data_reply: tuple[int, bytes]) -> TransactionResult:
        """Which recipients were taken; raise (after leaving DATA) when the message cannot go out at all."""
        from .errors import RecipientsRefusedError

        if _GARBLED in (mail_reply[0], data_reply[0], *(c for c, _ in rcpt_replies)):
            # Which command the server took is unknown; DATA may even be open. Dropping the connection is
            # the one way out that cannot submit anything, and nothing of the message was sent: retryable.
            raise self._garbled("MAIL/RCPT/DATA")
        if mail_reply[0] == 530:  # RFC 4954: authentication required
            self._abort(data_reply)
            raise self.login_required_error(f"MAIL FROM: {mail_reply[0]} {_text(mail_reply[1])}")
        if mail_reply[0] != 250:
            self._abort(data_reply)
            raise SenderRefusedError(
                f"sender <{envelope_from}> refused: {mail_reply[0]} {_text(mail_reply[1])}",
                code=mail_reply[0], text=_text(mail_reply[1]),
            )
        result = TransactionResult()
        for rcpt, (code, text) in zip(recipients, rcpt_replies, strict=False):
            if code in (250, 251):
                result.accepted.append(rcpt)
            else:
                result.refused[rcpt] = (code, _text(text))
        if not result.accepted:
            self._abort(data_reply)
            replies = list(result.refused.values())
            if any(needs_login(c, t) for c, t in replies) and (
                    self.connection.auth.type == "none" or any(c == 530 for c, _ in replies)):
                raise self.login_required_error(f"RCPT TO: {replies[0][0]} {replies[0][1]}")
            raise RecipientsRefusedError(
                "every recipient was refused: "
                + "; ".join(f"<{a}> {c} {t}" for a, (c, t) in result.refused.items()),
                refused=result.refused,
            )
        if data_reply[0] != 354:
            self._abort(data_reply)
            raise ServerResponseError(f"DATA refused: {data_reply[0]} {_text(data_reply[1])}",
                                      code=data_reply[0], text=_text(data_reply[1]))
        return result

    def _data(self, payload: bytes) -> tuple[int, str]:
        """The message and its final dot, then the server's verdict. From the dot on, the server may have the
        whole message: a failure is never reported as safe to retry."""
        smtp = self._require()
        trailer = (b"" if payload.endswith(CRLF) else CRLF) + b"." + CRLF
        with self._translate("DATA"):
            if len(payload) < 65536:
                smtp.send(payload + trailer)
            else:  # no copy of a large message just to append three bytes
                smtp.send(payload)
                smtp.send(trailer)
        try:
            code, text = smtp.getreply()
        except (OSError, EOFError, smtplib.SMTPServerDisconnected) as exc:
            self.close(quit=False)
            raise MayHaveBeenDelivered(
                "connection lost after the message data was sent: it may have been delivered",
                hint="check the recipient's mailbox before sending again; it is not retried automatically",
            ) from exc
        if code == _GARBLED:  # the server answered, but what? It may have queued the message.
            self.close(quit=False)
            raise MayHaveBeenDelivered(
                "garbled reply after the message data was sent: it may have been delivered",
                hint="check the recipient's mailbox before sending again; it is not retried automatically",
            )
        if code != 250:
            raise ServerResponseError(f"message refused after DATA: {code} {_text(text)}", code=code,
                                      text=_text(text))
        return code, _text(text)

    def login_required_error(self, reply: str) -> AuthenticationError:
        """The error for a refusal that asks for a login (auth.type none, or a login that did not take)."""
        offered = " ".join(self.extensions.get("auth", "").upper().split())
        if self.connection.auth.type == "none":
            hint = ("auth.type none sends without logging in, and this server takes mail only after a login: "
                    + (f"use auth.type basic (it offers {offered})" if offered else "use its submission port"))
        else:
            hint = "the login did not take effect on this connection; check the account's sending rights"
        return AuthenticationError(
            f"{self.endpoint.shown} requires a login to take this mail ({reply})",
            hint=hint)

    def _commit(self, commit: Callable[[], bool] | None) -> None:
        if commit is None:
            return
        try:
            taken = commit()
        except BaseException:
            self.close(quit=False)
            raise
        if not taken:
            self.close(quit=False)
            raise NotCommitted("another sender holds this Message-ID; the transaction was abandoned")

    def _abort(self, data_reply: tuple[int, bytes]) -> None:
        """Leave the transaction cleanly after a refusal.

        A server that said 354 to a pipelined DATA is waiting for the message: ending it with a lone dot
        would submit an empty message to the recipients it accepted, so the connection is closed instead
        (the one way to abandon the DATA phase); the next message opens a new one.
        """
        if data_reply[0] == 354:
            self.close(quit=False)
            return
        smtp = self._require()
        with self._translate("RSET"):
            smtp.rset()

    def rset(self) -> None:
        with self._translate("RSET"):
            self._require().rset()

    def check_sender(self, address: str, recipient: str | None = None) -> tuple[int, str]:
        """``MAIL FROM`` (and ``RCPT TO`` when ``recipient`` is given and the sender was accepted), then ``RSET``:
        would the server take this mail? The last reply; nothing is sent."""
        smtp = self._require()
        with self._translate("RCPT TO" if recipient else "MAIL FROM"):
            code, text = smtp.mail(address)
            if recipient is not None and code == 250:
                code, text = smtp.rcpt(recipient)
            smtp.rset()
        return code, _text(text)

    def noop(self) -> bool:
        if not self.connected:
            return False
        try:
            code, _ = self._require().noop()
            return code == 250
        except (OSError, smtplib.SMTPException):
            return False

    def close(self, *, quit: bool = True) -> None:
        """QUIT and close; ``quit=False`` only closes (the server may be reading message data, where a QUIT
        would be taken as data and never answered)."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None and quit:
                smtp.sock.settimeout(2)
                smtp.quit()
        except (OSError, smtplib.SMTPException, EOFError):
            pass
        finally:
            with contextlib.suppress(OSError):
                smtp.close()


def _wire_payload(data: bytes, *, crlf: bool = False) -> bytes:
    """CRLF line ends and dot-stuffing (RFC 5321 4.5.2); copies the message only when something changes.

    A composed message already has CRLF line ends and rarely a line starting with a dot, so the common
    case costs a few scans instead of two regex passes that each copy the whole message.
    """
    if not crlf:
        pairs = data.count(CRLF)
        if data.count(b"\n") != pairs or data.count(b"\r") != pairs:
            data = _EOL.sub(CRLF, data)
    if data.startswith(b".") or b"\n." in data:
        data = _DOT.sub(b"..", data)
    return data


def needs_login(code: int, text: str) -> bool:
    """A refusal that means "log in first": 530 (RFC 4954), or a relay refusal (5.7.1 / "relay access denied")."""
    return code == 530 or (code >= 500 and ("5.7.1" in text or "relay" in text.lower()))


def _extensions(smtp: smtplib.SMTP) -> str:
    return " ".join(sorted(k.upper() for k in smtp.esmtp_features))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
