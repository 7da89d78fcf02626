"""What the token sources and the cache share (Grant, settings lookup, error wording), so neither imports the other."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .. import secrets
from ..errors import ConfigError, ProtocolTimeoutError, TLSSecurityError, TransportError

if TYPE_CHECKING:
    from ..connection import Connection, OAuth2Settings


@dataclass(frozen=True)
class Grant:
    """What a token endpoint gave: the access token, its lifetime, and a (rotated) refresh token if any."""

    access_token: str = field(repr=False)
    expires_in: float
    refresh_token: str | None = field(default=None, repr=False)


class TokenSource(Protocol):
    """Fetches a new access token from a token endpoint; the caching lives in ``CachingTokenProvider``."""

    description: str
    uses_refresh_token: bool

    def fetch(self, refresh_token: str | None) -> Grant:
        """A new token. ``refresh_token``: the newest rotated one (None: the configured one)."""
        ...

    def forget(self) -> None:
        """Drop whatever the library caches itself, so the next fetch asks the endpoint."""
        ...


def _oauth(connection: Connection) -> OAuth2Settings:
    o = connection.auth.oauth2
    if connection.auth.type != "oauth2" or o is None:
        raise ConfigError("this connection does not use OAuth2 (auth.type is not oauth2)",
                          field=f"connections.{connection.name}.auth.type")
    return o


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (causes, contexts, urllib3's ``reason``, args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 50:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _network_error(exc: BaseException, where: str, conn: Connection) -> TransportError:
    """Words for a token endpoint that cannot be reached (requests and httpx alike)."""
    errors = list(_chain(exc))
    names = {type(e).__name__ for e in errors}
    for e in errors:
        if isinstance(e, ssl.SSLCertVerificationError):
            return TLSSecurityError(
                f"{where}: certificate not trusted: {e.verify_message or e}",
                hint="give the CA that signed the token endpoint's certificate with tls.ca_file "
                     "(it is also used for the mail servers), or fix the endpoint's certificate",
            )
    for e in errors:
        if isinstance(e, ssl.SSLError):
            return TLSSecurityError(f"{where}: TLS failed: {e.reason or e}",
                                    hint="check that the URL is https:// and the port speaks TLS")
    if any(isinstance(e, TimeoutError | socket.timeout) for e in errors) or any(
            "Timeout" in n for n in names):
        return ProtocolTimeoutError(
            f"{where}: no answer within {conn.timeouts.connect:g}/{conn.timeouts.command:g} s",
            hint="a firewall or proxy may drop the traffic (HTTPS_PROXY is honoured); it is retried",
        )
    for e in errors:
        if isinstance(e, socket.gaierror):
            return TransportError(f"{where} is unreachable: the host name does not resolve",
                                  hint="check authority_host / token_url, and this machine's DNS")
        if isinstance(e, ConnectionRefusedError):
            return TransportError(f"{where} is unreachable: connection refused",
                                  hint="check authority_host / token_url (host and port); it is retried")
    return TransportError(f"{where} is unreachable: {type(exc).__name__}",
                          hint="check the network path to the token endpoint (a proxy: HTTPS_PROXY)")


def _clean(text: object, limit: int = 400) -> str:
    """Server text for a message: redacted, one line, bounded."""
    s = " ".join(str(text).split())
    return secrets.redact(s[:limit] + ("…" if len(s) > limit else ""))


def _lifetime(expires_in: object, token: str) -> float:
    """Seconds the token is valid: ``expires_in``, else the JWT's ``exp``, else an hour."""
    if isinstance(expires_in, int | float | str):
        with contextlib.suppress(ValueError):
            return float(expires_in)
    claims = jwt_claims(token)
    if claims and isinstance(claims.get("exp"), int | float):
        return float(claims["exp"]) - time.time()
    return 3600.0


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT access token, unverified (for diagnosis only), or None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
