"""Authentication: SASL strings (``sasl``) and OAuth2 token providers (``oauth2``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["TokenProvider", "token_provider_for"]


class TokenProvider(Protocol):
    """Gives a valid access token, refreshing shortly before it expires (never once per message)."""

    def token(self, *, force_refresh: bool = False) -> str: ...

    def invalidate(self) -> None:
        """Forget the cached token: the server refused it."""


def token_provider_for(connection: Connection) -> TokenProvider:
    """The provider for an OAuth2 connection (cached per connection, so many sessions share one token)."""
    from .oauth2 import provider_for

    return provider_for(connection)
