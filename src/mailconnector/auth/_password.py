"""Password logins as SASL exchanges (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/-256), in UTF-8, for SMTP and IMAP.

Why our own and not smtplib's or imaplib's: both encode credentials as ASCII, so a password such as
``pä"ss\\wörd`` crashed before it reached the server. PLAIN (RFC 4616), CRAM-MD5 (RFC 2195) and SCRAM
(RFC 5802, through ``scramp``, which also does SASLprep) are all defined on UTF-8.

Which mechanism: over TLS the clear ones first (they work with any password store on the server); in
plain text the challenge-response ones first, so the password itself never crosses the wire when the
server offers a way to avoid it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

__all__ = ["CHALLENGE_RESPONSE", "PasswordExchange", "PasswordRefused", "choose_mechanism"]

CHALLENGE_RESPONSE = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5")
CLEAR = ("PLAIN", "LOGIN")


class PasswordRefused(Exception):
    """The exchange cannot go on: the server's SCRAM proof is wrong, or it sent an error in the exchange."""


def choose_mechanism(offered: Iterable[str], *, encrypted: bool) -> str | None:
    """The mechanism to use among ``offered`` (SASL names), or None when none of ours is offered."""
    order = CLEAR + CHALLENGE_RESPONSE if encrypted else CHALLENGE_RESPONSE + CLEAR
    names = {m.upper() for m in offered}
    return next((m for m in order if m in names), None)


class PasswordExchange:
    """One SASL exchange: call it with each decoded server challenge, send back what it returns.

    The first call (with the empty challenge, or to make an initial response) gives the client's first
    message for PLAIN and SCRAM; LOGIN and CRAM-MD5 answer what the server asked.
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

            self._scram = scramp.ScramClient([self.mechanism], user, password)

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

        assert self._scram is not None
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
            raise PasswordRefused(f"{self.mechanism} exchange failed: {exc}") from exc
        return b""
