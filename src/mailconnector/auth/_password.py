"""Password logins as SASL exchanges (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/-256), in UTF-8, for SMTP and IMAP.

Why our own and not smtplib's or imaplib's: both encode credentials as ASCII, so a password such as
``pä"ss\\wörd`` crashed before it reached the server. PLAIN (RFC 4616), CRAM-MD5 (RFC 2195) and SCRAM
(RFC 5802, through ``scramp``, which also does SASLprep) are all defined on UTF-8.

Which mechanism: the clear ones first, on every connection (they work with any password store on the
server, and they are what the connector always used); the challenge-response ones where the server offers
no clear one (Exim's plain port offers only CRAM-MD5) or refuses clear logins (IMAP ``LOGINDISABLED``).
A server that advertises SCRAM but keeps hashes unfit for it would refuse a login that PLAIN passes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from ..errors import AuthenticationError

__all__ = ["CHALLENGE_RESPONSE", "ExchangeFailed", "PasswordExchange", "choose_mechanism", "exchange_error",
           "start_exchange"]

CHALLENGE_RESPONSE = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5")
CLEAR = ("PLAIN", "LOGIN")
# Responses each mechanism gives at most (SCRAM: first, final, and the empty answer to the server's proof).
_STEPS = {"PLAIN": 1, "LOGIN": 2, "CRAM-MD5": 1, "SCRAM-SHA-1": 3, "SCRAM-SHA-256": 3}


class ExchangeFailed(Exception):
    """The server broke the exchange: a SCRAM proof that is wrong or missing, an error, too many challenges.

    ``refused``: the server said no in the exchange itself (SCRAM ``e=...``), as a wrong password reads.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def choose_mechanism(offered: Iterable[str]) -> str | None:
    """The mechanism to use among ``offered`` (SASL names), or None when none of ours is offered."""
    names = {m.upper() for m in offered}
    return next((m for m in CLEAR + CHALLENGE_RESPONSE if m in names), None)


class PasswordExchange:
    """One SASL exchange: call it with each decoded server challenge, send back what it returns.

    The first call (with the empty challenge, or to make an initial response) gives the client's first
    message for PLAIN and SCRAM; LOGIN and CRAM-MD5 answer what the server asked. A server that asks more
    often than the mechanism needs gets ``ExchangeFailed``, never the credentials again and again.
    """

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.mechanism = mechanism.upper()
        if self.mechanism not in CLEAR + CHALLENGE_RESPONSE:
            raise ValueError(f"not a password mechanism: {mechanism}")
        if any(c in user + password for c in "\0\r\n") and self.mechanism in CLEAR:
            raise ValueError("the user name or password contains NUL, CR or LF")
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")
        self._step = 0
        self._scram: Any = None
        if self.mechanism.startswith("SCRAM"):
            import scramp  # on use: its import costs every session start tens of milliseconds

            try:
                self._scram = scramp.ScramClient([self.mechanism], user, password)
            except scramp.ScramException as exc:  # SASLprep refuses the password (a tab, an unassigned code point)
                raise ValueError(f"{self.mechanism} cannot carry this user name or password ({exc})") from exc

    @property
    def has_initial_response(self) -> bool:
        """Whether the client speaks first (SMTP sends it with the AUTH command)."""
        return self.mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1")

    @property
    def complete(self) -> bool:
        """SCRAM: the server proved that it knows the password (the other mechanisms prove nothing)."""
        return self._scram is None or self._step >= 3

    def __call__(self, challenge: bytes) -> bytes:
        self._step += 1
        if self._step > _STEPS[self.mechanism]:
            raise ExchangeFailed(f"the server asked for more than {self.mechanism} has to say")
        if self.mechanism == "PLAIN":
            return b"\0" + self._user + b"\0" + self._password
        if self.mechanism == "LOGIN":
            asked = challenge.lower()
            if b"pass" in asked:
                return self._password
            if b"user" in asked:
                return self._user
            return self._user if self._step == 1 else self._password
        if self.mechanism == "CRAM-MD5":
            digest = hmac.new(self._password, challenge, hashlib.md5).hexdigest()
            return self._user + b" " + digest.encode("ascii")
        return self._scram_step(challenge)

    def _scram_step(self, challenge: bytes) -> bytes:
        import scramp

        if challenge.startswith(b"e="):  # RFC 5802: the server's own refusal, e.g. e=invalid-proof
            raise ExchangeFailed(f"{self.mechanism} refused: {challenge.decode('utf-8', 'replace')}", refused=True)
        try:
            if self._step == 1:
                first: str = self._scram.get_client_first()
                return first.encode("utf-8")
            if self._step == 2:
                self._scram.set_server_first(challenge.decode("utf-8"))
                final: str = self._scram.get_client_final()
                return final.encode("utf-8")
            self._scram.set_server_final(challenge.decode("utf-8"))
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise ExchangeFailed(f"{self.mechanism} exchange failed: {exc}") from exc
        return b""


def start_exchange(proto: str, mechanism: str, user: str, password: str) -> PasswordExchange:
    """The exchange, or the authentication error that says why these credentials cannot travel this way."""
    try:
        return PasswordExchange(mechanism, user, password)
    except ValueError as exc:
        raise AuthenticationError(f"{proto} login as {user!r} impossible: {exc}",
                                  hint="check the username and password") from exc


def exchange_error(proto: str, user: str, exc: ExchangeFailed) -> AuthenticationError:
    """A broken exchange in words: a refusal reads as one; a proof that fails points at the server."""
    if exc.refused:
        return AuthenticationError(f"{proto} login as {user!r} refused: {exc}", hint="check the username and password")
    return AuthenticationError(
        f"{proto} login as {user!r} failed: {exc}",
        hint="the server does not know this password, or is not the server it claims to be",
    )
