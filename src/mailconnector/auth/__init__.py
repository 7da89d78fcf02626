"""Authentication: SASL strings (``sasl``) and OAuth2 token providers (``oauth2``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from .sasl import oauthbearer_string, token_refused, xoauth2_string

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["TokenProvider", "oauth_initial_response", "refresh_refused_token", "token_provider_for"]


class TokenProvider(Protocol):
    """Gives a valid access token, refreshing shortly before it expires (never once per message)."""

    def token(self, *, force_refresh: bool = False) -> str: ...

    def invalidate(self) -> None:
        """Forget the cached token: the server refused it."""


def token_provider_for(connection: Connection) -> TokenProvider:
    """The provider for an OAuth2 connection (cached per connection, so many sessions share one token)."""
    from .oauth2 import provider_for

    return provider_for(connection)


def oauth_initial_response(connection: Connection, provider: TokenProvider, user: str, host: str, port: int,
                           *, force_refresh: bool = False) -> tuple[str, str, bytes]:
    """(mechanism, token, SASL initial response) for an OAuth2 login; SMTP and IMAP differ only in the exchange.

    The token is returned too, so that a refusal can be explained from its claims (``explain_refusal``).
    """
    oauth = connection.auth.oauth2
    assert oauth is not None
    mech = oauth.mechanism.upper()
    token = provider.token(force_refresh=force_refresh)
    payload = xoauth2_string(user, token) if mech == "XOAUTH2" else oauthbearer_string(user, token, host, port)
    return mech, token, payload


def refresh_refused_token(provider: TokenProvider, detail: str | None, *, retried: bool,
                          log: logging.Logger) -> bool:
    """After a refused login: should the caller log in once more? Then the refused token is already dropped.

    Only a first refusal that blames the token itself is worth a retry; ``log`` is the session's own logger.
    """
    if retried or not token_refused(detail):
        return False
    provider.invalidate()
    log.info("OAuth2 token refused (%s); refreshing once", detail)
    return True
