"""OAuth2 access tokens for SMTP and IMAP: Microsoft 365 (msal), Google, and any OAuth2 token endpoint.

One provider per connection settings, shared by every session and thread of the process, so a token is
fetched once and reused until shortly before it expires (5 minutes, or a tenth of its lifetime when that
is shorter) — never once per message or per poll. In front: memory; behind it: the project's store (so a
second process, or the next scheduled run, reuses the token too). ``invalidate()`` drops both, after a
server refused the token.

Nothing secret is ever put in a message, a log line or a ``repr``: every token obtained is registered
with ``mailconnector.secrets`` so the log handlers redact it, and cache keys are hashes.

Heavy libraries (msal, requests, httpx, cryptography) are imported only when a token is first needed.

The token sources live in ``_microsoft``, ``_google`` and ``_generic``, the interactive sign-ins of
``mailconnector auth login`` in ``_login_flows``, and the words for refusals in ``_refusals``; this module
keeps the cache and the registry, and is the one other code imports from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import secrets
from .._context import context
from ..errors import AuthenticationError, ConfigError, MailConnectorError
from ._base import Grant, TokenSource, _oauth, jwt_claims
from ._generic import _GenericSource
from ._google import (
    GOOGLE_AUTHORIZATION_URL,
    GOOGLE_TOKEN_URL,
    _GoogleRefreshSource,
    _GoogleServiceAccountSource,
    sign_rs256,
)
from ._login_flows import LoginRequest, google_authorization_request, google_exchange_code, microsoft_device_login
from ._microsoft import MICROSOFT_HOST, _MicrosoftSource, requests_session
from ._refusals import _microsoft_error as _microsoft_error, explain_refusal

if TYPE_CHECKING:
    from ..connection import Connection
    from ..state import TokenCache

__all__ = [
    "GOOGLE_AUTHORIZATION_URL",
    "GOOGLE_TOKEN_URL",
    "MICROSOFT_HOST",
    "CachingTokenProvider",
    "Grant",
    "LoginRequest",
    "TokenSource",
    "cache_key",
    "explain_refusal",
    "forget_providers",
    "google_authorization_request",
    "google_exchange_code",
    "jwt_claims",
    "microsoft_device_login",
    "provider_for",
    "requests_session",
    "sign_rs256",
    "use_store",
]

log = logging.getLogger("mailconnector.auth")

REFRESH_MARGIN = 300.0  # seconds before expiry at which a token is replaced...
REFRESH_FRACTION = 0.1  # ...or this fraction of its lifetime, when that is shorter
ROTATED_RT_DAYS = 90  # how long a rotated refresh token is kept in the store


@dataclass
class _Cached:
    value: str = field(repr=False)
    obtained_at: float
    expires_at: float
    generation: int = 0

    def fresh(self, now: float) -> bool:
        lifetime = max(self.expires_at - self.obtained_at, 0.0)
        margin = min(REFRESH_MARGIN, lifetime * REFRESH_FRACTION)
        return self.expires_at - now > margin


class CachingTokenProvider:
    """A ``TokenProvider``: memory, then the store, then the token endpoint; thread-safe.

    Concurrent callers wait for one fetch and share its token. After ``invalidate()``, a caller's
    ``token(force_refresh=True)`` reuses a token another thread fetched since, instead of fetching again.
    """

    def __init__(self, key: str, source: TokenSource, *, store: TokenCache | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.source = source
        self.store = store
        self.fetches = 0
        self._clock = clock
        self._lock = threading.RLock()
        self._cached: _Cached | None = None
        self._generation = 0
        self._rotated_rt: str | None = None
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<CachingTokenProvider {self.source.description} key={self.key[:16]}…>"

    # ------------------------------------------------------------------- API
    def token(self, *, force_refresh: bool = False) -> str:
        with self._lock:
            now = self._clock()
            cached = self._cached
            if force_refresh:
                seen = getattr(self._local, "invalidated_generation", None)
                if seen is not None and cached is not None and cached.generation > seen and cached.fresh(now):
                    self._local.invalidated_generation = None
                    return cached.value
            else:
                if cached is not None and cached.fresh(now):
                    return cached.value
                stored = self._load(now)
                if stored is not None:
                    self._cached = stored
                    return stored.value
            self._local.invalidated_generation = None
            return self._fetch().value

    def invalidate(self) -> None:
        with self._lock:
            self._local.invalidated_generation = self._generation
            self._cached = None
            self.source.forget()
            self._store_call("delete_token", self.key)

    # --------------------------------------------------------------- helpers
    def _fetch(self) -> _Cached:
        rotated = self._current_refresh_token() if self.source.uses_refresh_token else None
        started = time.perf_counter()
        try:
            grant = self.source.fetch(rotated)
        except AuthenticationError:
            if rotated is None:
                raise
            # The newest refresh token was refused (revoked?): fall back to the configured one, once.
            log.info("the stored refresh token was refused; trying the configured one")
            self._forget_refresh_token()
            grant = self.source.fetch(None)
        finally:
            self.fetches += 1
        secrets.register_secret(grant.access_token, transient=True)
        now = self._clock()
        self._generation += 1
        cached = _Cached(grant.access_token, now, now + grant.expires_in, self._generation)
        self._cached = cached
        log.debug("OAuth2 token obtained (%s) in %.0f ms, valid %.0f s", self.source.description,
                  (time.perf_counter() - started) * 1000, grant.expires_in)
        self._store_call("put_token", self.key,
                         json.dumps({"access_token": cached.value, "obtained_at": cached.obtained_at}),
                         cached.expires_at)
        if grant.refresh_token and self.source.uses_refresh_token and grant.refresh_token != rotated:
            secrets.register_secret(grant.refresh_token, transient=True)
            self._rotated_rt = grant.refresh_token
            self._store_call("put_token", self.key + ":rt", grant.refresh_token,
                             now + ROTATED_RT_DAYS * 86400)
        return cached

    def _load(self, now: float) -> _Cached | None:
        row = self._store_call("get_token", self.key)
        if not row:
            return None
        value, expires_at = row
        try:
            data = json.loads(value)
            cached = _Cached(str(data["access_token"]), float(data["obtained_at"]), float(expires_at),
                             self._generation)
        except (ValueError, KeyError, TypeError):
            return None
        if not cached.fresh(now):
            return None
        secrets.register_secret(cached.value, transient=True)
        return cached

    def _current_refresh_token(self) -> str | None:
        if self._rotated_rt is None:
            row = self._store_call("get_token", self.key + ":rt")
            if row:
                self._rotated_rt = str(row[0])
                secrets.register_secret(self._rotated_rt, transient=True)
        return self._rotated_rt

    def _forget_refresh_token(self) -> None:
        self._rotated_rt = None
        self._store_call("delete_token", self.key + ":rt")

    def _store_call(self, method: str, *args: Any) -> Any:
        """The store is a cache: when it fails, say so once and carry on with memory only."""
        if self.store is None:
            return None
        try:
            return getattr(self.store, method)(*args)
        except MailConnectorError as exc:
            log.warning("token cache in the store is unusable (%s); keeping tokens in memory only", exc)
            self.store = None
            return None


# ------------------------------------------------------------ provider registry
# The providers and the store live in the process's context (``mailconnector._context``), bounded there.


def use_store(store: TokenCache | None) -> None:
    """The store that ``provider_for`` uses when it is given none (a project's, set once by the CLI)."""
    context().token_store = store


def forget_providers() -> None:
    """Drop every provider and its tokens from memory (tests; a reloaded project)."""
    context().token_providers.clear()


def _sha(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value is not None else None


def cache_key(connection: Connection) -> str:
    """The token cache key: who asks, for what, from where — hashed, secrets included only as hashes.

    Two connections with the same identity and grant share their token; changing a secret starts afresh.
    """
    o = _oauth(connection)
    material = {
        "v": 1,
        "provider": o.provider,
        "grant": o.grant,
        "tenant": o.tenant_id,
        "client_id": o.client_id,
        "authority_host": o.authority_host,
        "token_url": o.token_url,
        "scopes": sorted(o.effective_scopes()),
        "user": connection.auth.username.lower(),
        "service_account": str(o.service_account_file) if o.service_account_file else None,
        "client_secret": _sha(o.client_secret.get_secret_value() if o.client_secret else None),
        "refresh_token": _sha(o.refresh_token.get_secret_value() if o.refresh_token else None),
        "password": _sha(connection.auth.password.get_secret_value()
                         if o.grant == "password" and connection.auth.password else None),
    }
    return "oauth2:" + hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def provider_for(connection: Connection, *, store: TokenCache | None = None) -> CachingTokenProvider:
    """The one provider for this connection's OAuth2 settings (created on first use, then shared)."""
    o = _oauth(connection)
    key = cache_key(connection)
    tls = connection.tls
    registry_key = hashlib.sha256(json.dumps(
        [key, tls.verify, str(tls.ca_file), str(tls.client_cert), connection.timeouts.connect,
         connection.timeouts.command, o.client_auth, o.token_cache]).encode()).hexdigest()
    ctx = context()
    provider = ctx.token_providers.get_or_create(
        registry_key, lambda: CachingTokenProvider(key, _source_for(connection)))
    if provider.store is None and o.token_cache:
        provider.store = store or ctx.token_store
    return provider


def _source_for(connection: Connection) -> TokenSource:
    o = _oauth(connection)
    if o.provider == "microsoft365":
        return _MicrosoftSource(connection)
    if o.provider == "google":
        if o.grant == "client_credentials":
            return _GoogleServiceAccountSource(connection)
        if o.grant == "refresh_token":
            return _GoogleRefreshSource(connection)
        raise ConfigError("Google does not offer the password grant; use refresh_token (from "
                          "`mailconnector auth login`) or client_credentials with a service account",
                          field=f"connections.{connection.name}.auth.oauth2.grant")
    return _GenericSource(connection)
