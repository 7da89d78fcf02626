"""What an SMTP and an IMAP session have in common, written once.

Both serve one connection's settings for one protocol, log in with a password or a token from one provider
that lasts as long as the session, explain a refused password with what is known of the provider, and
connect on entering a ``with`` block and close on leaving it. The protocols themselves (and the translation
of their library's exceptions) stay in ``smtp.py`` and ``imap.py``.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal, Self

from ._net import Endpoint, transport_error
from ._steps import StepRecorder, step
from .auth import TokenProvider, oauth_initial_response, refresh_refused_token, token_provider_for
from .auth.oauth2 import explain_refusal
from .errors import AuthenticationError, MailConnectorError, TLSSecurityError, TransportError

if TYPE_CHECKING:  # annotations only: the sessions take a Connection, they need not import its module
    from .connection import Connection, ServerSettings

__all__ = ["Session"]


class Session:
    """The shared part of ``SmtpSession`` and ``ImapSession``; not thread-safe, like them."""

    protocol: Literal["smtp", "imap"]

    def __init__(self, connection: Connection, *, token_provider: TokenProvider | None = None) -> None:
        self.endpoint = Endpoint.of(connection, self.protocol)  # raises when the connection has no such server
        server = connection.smtp if self.protocol == "smtp" else connection.imap
        assert server is not None
        self.connection = connection
        self.server: ServerSettings = server
        self._token_provider = token_provider
        self.auth_mechanism: str | None = None

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def connect(self, *, login: bool = True) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def login(self) -> None:
        raise NotImplementedError

    def _authenticate(self, recorder: StepRecorder | None, offered: Callable[[], str]) -> None:
        """Log in as the Test's "authentication" step, which shows what the server offered and what was used."""
        with step(recorder, "authentication") as st:
            shown = offered()
            self.login()
            if self.connection.auth.type == "none":
                st.detail = f"no login (auth.type none); the server offers: {shown}"
            else:
                st.detail = f"offered: {shown}; used: {self.auth_mechanism}"

    @contextlib.contextmanager
    def _translate(self, phase: str) -> Iterator[None]:
        """The one place per protocol where its library's exceptions become ours (``_translated``), with the
        original as the cause; socket, TLS and timeout errors the same way for both."""
        try:
            yield
        except MailConnectorError:
            raise
        except Exception as exc:
            ours = self._translated(exc, phase)
            if ours is None and isinstance(exc, OSError | EOFError):
                ours = transport_error(exc, self.endpoint, phase=phase)
            if ours is None:
                raise
            raise ours from exc

    def _translated(self, exc: Exception, phase: str) -> MailConnectorError | None:
        """Ours for an exception of the protocol's library, or None for one it does not know."""
        raise NotImplementedError

    def _dropped(self, what: str, hint: str) -> TransportError:
        return TransportError(f"{self.endpoint.shown} {what}", hint=hint)

    def _cannot_check_login(self, reply: str) -> TransportError:
        """The server cannot check credentials now (IMAP [UNAVAILABLE], SMTP 454): not a refusal."""
        return self._dropped(f"could not check the login now: {reply}",
                             "a temporary failure on the server's side; it is retried")

    def _starttls(self, recorder: StepRecorder | None, *, offered: bool, tls_port: int,
                  upgrade: Callable[[], object]) -> None:
        """STARTTLS where the mode asks for it: a server that does not offer it is refused, never talked to in
        plain text. ``upgrade`` switches to TLS and returns the socket, whose TLS version the Test shows."""
        with step(recorder, "STARTTLS offered and TLS certificate") as st:
            if not offered:
                raise TLSSecurityError(
                    f"{self.endpoint.shown} does not offer STARTTLS, and security is starttls: refusing to "
                    "continue in plain text",
                    hint=f"use the server's TLS port (security: ssl, port {tls_port}), or fix the server's TLS",
                )
            sock = upgrade()
            if isinstance(sock, ssl.SSLSocket):
                cipher = sock.cipher()
                st.detail = f"{sock.version()} {cipher[0] if cipher else ''}".strip()

    def _initial_oauth_response(self, user: str, *, retried: bool) -> tuple[TokenProvider, str, str, bytes]:
        """The token provider (one per session, shared by a retry) and the first SASL response:
        (provider, mechanism, token, payload)."""
        provider = self._token_provider or token_provider_for(self.connection)
        self._token_provider = provider
        mech, token, payload = oauth_initial_response(self.connection, provider, user, self.server.host,
                                                      self.server.port, force_refresh=retried)
        self.auth_mechanism = mech
        return provider, mech, token, payload

    def _token_is_worth_a_retry(self, provider: TokenProvider, detail: str | None, *, retried: bool) -> bool:
        """After a refused token: True when it was dropped and one more login (with a new token) may pass."""
        return refresh_refused_token(provider, detail, retried=retried,
                                     log=logging.getLogger(f"mailconnector.{self.protocol}"))

    def _token_refused(self, message: str, *, reply: str, token: str, user: str,
                       detail: str | None = None) -> AuthenticationError:
        """The refusal of a token, explained from its claims (wrong user, audience, scope, expiry)."""
        why, hint = explain_refusal(self.connection, token, reply, login=user)
        shown = "" if detail is None else f" ({detail or 'no detail'})"
        return AuthenticationError(f"{message}{shown}{why}", hint=hint)

    def _password_refused_hint(self) -> str:
        """What to check when the server refused the password, from what is known of its provider."""
        provider = self.connection.known_provider()
        if provider is None:
            return "check the username and password"
        extra = provider.smtp_password_refused if self.protocol == "smtp" else ""
        return provider.password_refused + extra

    def __enter__(self) -> Self:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
