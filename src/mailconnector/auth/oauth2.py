"""OAuth2 access tokens for SMTP and IMAP: Microsoft 365 (msal), Google, and any OAuth2 token endpoint.

One provider per connection settings, shared by every session and thread of the process, so a token is
fetched once and reused until shortly before it expires (5 minutes, or a tenth of its lifetime when that
is shorter) — never once per message or per poll. In front: memory; behind it: the project's store (so a
second process, or the next scheduled run, reuses the token too). ``invalidate()`` drops both, after a
server refused the token.

Nothing secret is ever put in a message, a log line or a ``repr``: every token obtained is registered
with ``mailconnector.secrets`` so the log handlers redact it, and cache keys are hashes.

Heavy libraries (msal, requests, httpx, cryptography) are imported only when a token is first needed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import secrets
from ..errors import (
    AuthenticationError,
    ConfigError,
    MailConnectorError,
    ProtocolTimeoutError,
    TLSSecurityError,
    TransportError,
)

if TYPE_CHECKING:
    from ..connection import Connection, OAuth2Settings
    from ..store import Store

__all__ = [
    "GOOGLE_AUTHORIZATION_URL",
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
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
MICROSOFT_HOST = "login.microsoftonline.com"
_MSAL_RESERVED = {"openid", "profile", "offline_access"}


# ----------------------------------------------------------------------- model
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

    def __init__(self, key: str, source: TokenSource, *, store: Store | None = None,
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
        secrets.register_secret(grant.access_token)
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
            secrets.register_secret(grant.refresh_token)
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
        secrets.register_secret(cached.value)
        return cached

    def _current_refresh_token(self) -> str | None:
        if self._rotated_rt is None:
            row = self._store_call("get_token", self.key + ":rt")
            if row:
                self._rotated_rt = str(row[0])
                secrets.register_secret(self._rotated_rt)
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
_providers: dict[str, CachingTokenProvider] = {}
_registry_lock = threading.Lock()
_default_store: Store | None = None


def use_store(store: Store | None) -> None:
    """The store that ``provider_for`` uses when it is given none (a project's, set once by the CLI)."""
    global _default_store
    _default_store = store


def forget_providers() -> None:
    """Drop every provider and its tokens from memory (tests; a reloaded project)."""
    with _registry_lock:
        _providers.clear()


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


def provider_for(connection: Connection, *, store: Store | None = None) -> CachingTokenProvider:
    """The one provider for this connection's OAuth2 settings (created on first use, then shared)."""
    o = _oauth(connection)
    key = cache_key(connection)
    tls = connection.tls
    registry_key = hashlib.sha256(json.dumps(
        [key, tls.verify, str(tls.ca_file), str(tls.client_cert), connection.timeouts.connect,
         connection.timeouts.command, o.client_auth, o.token_cache]).encode()).hexdigest()
    with _registry_lock:
        provider = _providers.get(registry_key)
        if provider is None:
            provider = CachingTokenProvider(key, _source_for(connection))
            _providers[registry_key] = provider
        if provider.store is None and o.token_cache:
            provider.store = store or _default_store
        return provider


def _oauth(connection: Connection) -> OAuth2Settings:
    o = connection.auth.oauth2
    if connection.auth.type != "oauth2" or o is None:
        raise ConfigError("this connection does not use OAuth2 (auth.type is not oauth2)",
                          field=f"connections.{connection.name}.auth.type")
    return o


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


# ------------------------------------------------------------ network errors
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


# ------------------------------------------------------------------- Microsoft
# AADSTS codes: what they mean for a mail connector, and what to do.
_AADSTS: dict[int, tuple[str, str]] = {
    7000215: ("wrong client secret",
              "copy the secret's Value (not its Secret ID) from the app registration's Certificates & secrets "
              "into auth.oauth2.client_secret, or create a new secret"),
    7000222: ("the client secret has expired",
              "create a new client secret in the app registration (Certificates & secrets) and update the project"),
    7000218: ("the application needs a client secret for this grant",
              "set auth.oauth2.client_secret, or allow public client flows in the app registration (Authentication)"),
    65001: ("consent is missing for the requested permissions",
            "in the app registration, API permissions: add IMAP.AccessAsApp / SMTP.SendAsApp (application) or "
            "IMAP.AccessAsUser.All / SMTP.Send (delegated), then 'Grant admin consent' for the tenant"),
    700016: ("the application was not found in this tenant",
             "check auth.oauth2.client_id (the Application (client) ID) and tenant_id (the Directory (tenant) ID); "
             "a single-tenant app only exists in its home tenant"),
    90002: ("the tenant was not found", "check auth.oauth2.tenant_id (the Directory (tenant) ID or a verified domain)"),
    900023: ("the tenant id is malformed", "check auth.oauth2.tenant_id"),
    50126: ("wrong username or password", "check auth.username and auth.password (the account's own password)"),
    50034: ("the user account does not exist in this tenant", "check auth.username (the user principal name)"),
    50053: ("the account is locked", "wait, or ask the administrator to unlock it"),
    50055: ("the password has expired", "change the account's password"),
    50057: ("the account is disabled", "ask the administrator to enable it"),
    50076: ("multi-factor authentication is required",
            "the password grant (ROPC) cannot do MFA: use the client_credentials grant (app-only access), or a "
            "refresh token obtained with `mailconnector auth login`, or exempt this account from MFA"),
    50079: ("multi-factor authentication registration is required",
            "the password grant (ROPC) cannot do MFA: use the client_credentials grant (app-only access), or a "
            "refresh token obtained with `mailconnector auth login`"),
    50158: ("an external security challenge is required", "use the client_credentials grant or `mailconnector "
            "auth login`; the password grant cannot answer interactive challenges"),
    53003: ("blocked by a Conditional Access policy", "ask the administrator to allow this app and location"),
    70011: ("the scope is not valid for this grant",
            "for client_credentials use the scope https://outlook.office365.com/.default; for delegated grants "
            "https://outlook.office365.com/IMAP.AccessAsUser.All and https://outlook.office365.com/SMTP.Send"),
    700082: ("the refresh token has expired (unused for too long)",
             "run `mailconnector auth login CONNECTION` again to get a new refresh token"),
    70008: ("the refresh token has expired or was revoked",
            "run `mailconnector auth login CONNECTION` again to get a new refresh token"),
    50173: ("the refresh token was revoked (the password changed?)",
            "run `mailconnector auth login CONNECTION` again to get a new refresh token"),
    500011: ("Exchange Online is not available in this tenant (resource principal not found)",
             "check the tenant has Exchange Online licences, and the scope https://outlook.office365.com/.default"),
    7000112: ("the application is disabled", "enable the application (enterprise application properties)"),
}


def _aadsts(result: dict[str, Any]) -> int | None:
    codes = result.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return codes[0]
    desc = str(result.get("error_description", ""))
    if desc.startswith("AADSTS"):
        digits = "".join(c for c in desc[6:16] if c.isdigit())
        return int(digits) if digits else None
    return None


def _microsoft_error(result: dict[str, Any], grant: str) -> MailConnectorError:
    code = _aadsts(result)
    error = str(result.get("error", "error"))
    desc = str(result.get("error_description", "")).split(" Trace ID:")[0]
    meaning, hint = _AADSTS.get(code or 0, ("", ""))
    if not hint:
        if error == "invalid_client":
            meaning, hint = "the client was not accepted", "check client_id and client_secret"
        elif error == "invalid_grant" and grant == "refresh_token":
            meaning, hint = ("the refresh token was not accepted",
                             "run `mailconnector auth login CONNECTION` again to get a new refresh token")
        elif error == "invalid_scope":
            meaning, hint = "the scope is not valid", _AADSTS[70011][1]
        else:
            hint = "see the AADSTS code in Microsoft's sign-in error lookup, or the tenant's sign-in logs"
    label = f"AADSTS{code}" if code else error
    msg = f"Microsoft 365 refused the token request ({grant}): {label}"
    if meaning:
        msg += f": {meaning}"
    if desc:
        msg += f" — {_clean(desc, 300)}"
    return AuthenticationError(msg, hint=hint)


class _MicrosoftSource:
    uses_refresh_token: bool

    def __init__(self, conn: Connection) -> None:
        o = _oauth(conn)
        self.conn = conn
        self.o = o
        host = (o.authority_host or MICROSOFT_HOST).strip()
        for prefix in ("https://", "http://"):
            if host.lower().startswith(prefix):
                host = host[len(prefix):]
        self.host = host.rstrip("/")
        self.authority = f"https://{self.host}/{o.tenant_id or 'organizations'}"
        self.description = f"microsoft365 {o.grant}"
        self.uses_refresh_token = o.grant == "refresh_token"
        self.scopes = [s for s in o.effective_scopes() if s.lower() not in _MSAL_RESERVED]
        self._app: Any = None

    def _where(self) -> str:
        return f"Microsoft 365 token endpoint {self.authority}"

    def _application(self) -> Any:
        if self._app is not None:
            return self._app
        import msal
        from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

        kwargs: dict[str, Any] = {
            "authority": self.authority,
            "http_client": requests_session(self.conn),
            "token_cache": msal.TokenCache(),
        }
        if self.host.lower() not in WELL_KNOWN_AUTHORITY_HOSTS:
            # A private or test authority: msal must not ask Microsoft to vouch for it. Nor look up the
            # user's realm (federation) before ROPC there: msal builds that URL without the authority's
            # port, and federation is a feature of Microsoft's own cloud.
            kwargs.update(instance_discovery=False, validate_authority=False)
            from msal.authority import Authority

            no_realm = getattr(Authority, "_domains_without_user_realm_discovery", None)
            if isinstance(no_realm, set):
                no_realm.add(self.host.rsplit(":", 1)[0].lower() if not self.host.endswith("]") else self.host)
        secret = self.o.client_secret.get_secret_value() if self.o.client_secret else None
        with self._translate():
            if secret is not None:
                self._app = msal.ConfidentialClientApplication(self.o.client_id, client_credential=secret, **kwargs)
            else:
                self._app = msal.PublicClientApplication(self.o.client_id, **kwargs)
        return self._app

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        import requests
        from msal.exceptions import MsalError

        try:
            yield
        except MailConnectorError:
            raise
        except requests.exceptions.HTTPError as exc:
            status = getattr(exc.response, "status_code", "?")
            raise TransportError(f"{self._where()} answered HTTP {status}",
                                 hint="the identity platform may be having trouble; it is retried") from exc
        except requests.exceptions.RequestException as exc:
            raise _network_error(exc, self._where(), self.conn) from exc
        except MsalError as exc:
            raise TransportError(f"{self._where()} answered with an error: {_clean(exc, 200)}",
                                 hint="it is retried; if it persists, check authority_host") from exc
        except ValueError as exc:
            # msal's authority checks: a tenant that does not exist, an authority it cannot read.
            raise ConfigError(
                f"cannot use the Microsoft 365 authority {self.authority}: {_clean(exc, 300)}",
                field="auth.oauth2.tenant_id",
                hint="check tenant_id (the Directory (tenant) ID or a verified domain) and authority_host",
            ) from exc

    def forget(self) -> None:
        app = self._app
        if app is None:
            return
        import msal

        cache = app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)

    def fetch(self, refresh_token: str | None) -> Grant:
        app = self._application()
        self.forget()  # our cache decides when to fetch; msal's own must not answer for the endpoint
        o = self.o
        with self._translate():
            if o.grant == "client_credentials":
                result = app.acquire_token_for_client(scopes=self.scopes)
            elif o.grant == "password":
                password = self.conn.auth.password
                assert password is not None  # the model requires it
                with warnings.catch_warnings():
                    # msal marks ROPC deprecated for public clients; the docs explain when to use it.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    result = app.acquire_token_by_username_password(
                        self.conn.auth.username, password.get_secret_value(), scopes=self.scopes)
            else:
                rt = refresh_token or (o.refresh_token.get_secret_value() if o.refresh_token else "")
                result = app.acquire_token_by_refresh_token(rt, scopes=self.scopes)
        if not isinstance(result, dict) or "access_token" not in result:
            raise _microsoft_error(result if isinstance(result, dict) else {}, o.grant)
        token = str(result["access_token"])
        return Grant(token, _lifetime(result.get("expires_in"), token), result.get("refresh_token"))


def requests_session(conn: Connection) -> Any:
    """A ``requests`` session for msal that trusts ``tls.ca_file`` even where REQUESTS_CA_BUNDLE is set.

    requests lets that variable override a session's ``verify`` whenever ``trust_env`` is on; turning
    ``trust_env`` off would also drop the proxy settings, so only the verify decision is pinned here.
    """
    import requests

    tls = conn.tls
    pinned: bool | str | None = None
    if not tls.verify:
        log.warning("TLS certificate verification is OFF for the token endpoint (tls.verify: false)")
        pinned = False
    elif tls.ca_file is not None:
        pinned = str(tls.ca_file)
    timeout = (conn.timeouts.connect, conn.timeouts.command)

    class _Session(requests.Session):
        def request(  # only fills in a default timeout
            self, method: str, url: str | bytes, *args: Any, **kwargs: Any
        ) -> requests.Response:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(method, url, *args, **kwargs)

        def merge_environment_settings(self, url: str, proxies: Any, stream: Any, verify: Any,
                                       cert: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if pinned is not None:
                settings["verify"] = pinned
            return settings

    session = _Session()
    if pinned is not None:
        session.verify = pinned
    if tls.client_cert is not None:
        session.cert = (str(tls.client_cert), str(tls.client_key)) if tls.client_key else str(tls.client_cert)
    return session


# ------------------------------------------------------- plain token endpoints
def _lifetime(expires_in: object, token: str) -> float:
    """Seconds the token is valid: ``expires_in``, else the JWT's ``exp``, else an hour."""
    if isinstance(expires_in, int | float | str):
        with contextlib.suppress(ValueError):
            return float(expires_in)
    claims = jwt_claims(token)
    if claims and isinstance(claims.get("exp"), int | float):
        return float(claims["exp"]) - time.time()
    return 3600.0


_ENDPOINT_HINTS: dict[str, str] = {
    "invalid_client": "the token endpoint did not accept the client: check client_id and client_secret "
                      "(and auth.oauth2.client_auth: post or basic)",
    "unauthorized_client": "this client may not use this grant or scope: check the client's settings at the "
                           "identity provider",
    "invalid_scope": "check auth.oauth2.scopes",
    "unsupported_grant_type": "this token endpoint does not offer this grant; choose another auth.oauth2.grant",
}


class _HttpTokenSource:
    """A token endpoint spoken to with httpx: one client per source, kept for connection reuse."""

    uses_refresh_token = False
    description = "token endpoint"

    def __init__(self, conn: Connection, url: str, *, grant_label: str | None = None) -> None:
        self.conn = conn
        self.o = _oauth(conn)
        self.url = url
        self.grant_label = grant_label or self.o.grant
        self._client: Any = None

    def _where(self) -> str:
        return f"token endpoint {self.url}"

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            from .._net import make_ssl_context

            t = self.conn.timeouts
            self._client = httpx.Client(verify=make_ssl_context(self.conn.tls),
                                        timeout=httpx.Timeout(t.command, connect=t.connect))
        return self._client

    def forget(self) -> None:
        pass

    def _post(self, data: dict[str, str], *, basic: tuple[str, str] | None = None) -> dict[str, Any]:
        import httpx

        try:
            resp = self._http().post(self.url, data=data, auth=basic, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _network_error(exc, self._where(), self.conn) from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 500 or (resp.status_code >= 400 and not isinstance(body, dict)):
            raise TransportError(f"{self._where()} answered HTTP {resp.status_code}",
                                 hint="check token_url; a server error is retried")
        if not isinstance(body, dict):
            raise TransportError(f"{self._where()} did not answer with JSON (HTTP {resp.status_code})",
                                 hint="check token_url: it must be the token endpoint itself")
        if "error" in body or "access_token" not in body:
            raise self._error(body, resp.status_code)
        return body

    def _error(self, body: dict[str, Any], status: int) -> MailConnectorError:
        error = str(body.get("error", "no access_token in the answer"))
        desc = body.get("error_description")
        msg = f"{self._where()} refused the {self.grant_label} request: {error}"
        if desc:
            msg += f" — {_clean(desc, 300)}"
        hint = _ENDPOINT_HINTS.get(error, "check the OAuth2 settings of this connection")
        if error == "invalid_grant":
            hint = {
                "refresh_token": "the refresh token has expired or was revoked: run `mailconnector auth login "
                                 "CONNECTION` again",
                "password": "check auth.username and auth.password",
                "authorization_code": "the code was not accepted (used already, expired, or copied incompletely): "
                                      "run `mailconnector auth login` again",
            }.get(self.grant_label, "check the grant's credentials")
        return AuthenticationError(msg, hint=hint)

    def _grant(self, body: dict[str, Any]) -> Grant:
        token = str(body["access_token"])
        rt = body.get("refresh_token")
        return Grant(token, _lifetime(body.get("expires_in"), token), str(rt) if rt else None)


class _GenericSource(_HttpTokenSource):
    def __init__(self, conn: Connection) -> None:
        o = _oauth(conn)
        assert o.token_url is not None  # the model requires it
        super().__init__(conn, o.token_url)
        self.description = f"generic {o.grant}"
        self.uses_refresh_token = o.grant == "refresh_token"

    def fetch(self, refresh_token: str | None) -> Grant:
        o = self.o
        data: dict[str, str] = {"grant_type": o.grant}
        scopes = o.effective_scopes()
        if scopes:
            data["scope"] = " ".join(scopes)
        if o.grant == "password":
            assert self.conn.auth.password is not None
            data["username"] = self.conn.auth.username
            data["password"] = self.conn.auth.password.get_secret_value()
        elif o.grant == "refresh_token":
            data["refresh_token"] = refresh_token or (o.refresh_token.get_secret_value() if o.refresh_token else "")
        basic: tuple[str, str] | None = None
        secret = o.client_secret.get_secret_value() if o.client_secret else None
        if secret is not None and o.client_auth == "basic":
            from urllib.parse import quote

            basic = (quote(o.client_id or "", safe=""), quote(secret, safe=""))  # RFC 6749 2.3.1
        else:
            if o.client_id:
                data["client_id"] = o.client_id
            if secret is not None:
                data["client_secret"] = secret
        return self._grant(self._post(data, basic=basic))


class _GoogleRefreshSource(_HttpTokenSource):
    """An installed-app client's refresh token (from ``mailconnector auth login``)."""

    def __init__(self, conn: Connection) -> None:
        o = _oauth(conn)
        super().__init__(conn, o.token_url or GOOGLE_TOKEN_URL)
        self.description = "google refresh_token"
        self.uses_refresh_token = True
        if o.client_secret is None:
            raise ConfigError("Google's refresh_token grant needs the OAuth client's client_secret",
                              field=f"connections.{conn.name}.auth.oauth2.client_secret",
                              hint="copy it from the OAuth client (Desktop app) in the Google Cloud console")

    def _where(self) -> str:
        return f"Google token endpoint {self.url}"

    def fetch(self, refresh_token: str | None) -> Grant:
        o = self.o
        assert o.client_secret is not None and o.refresh_token is not None
        return self._grant(self._post({
            "grant_type": "refresh_token",
            "client_id": o.client_id or "",
            "client_secret": o.client_secret.get_secret_value(),
            "refresh_token": refresh_token or o.refresh_token.get_secret_value(),
        }))

    def _error(self, body: dict[str, Any], status: int) -> MailConnectorError:
        err = super()._error(body, status)
        if body.get("error") == "invalid_client":
            err.hint = "check client_id and client_secret: copy both from the same OAuth client (Desktop app)"
        return err


class _GoogleServiceAccountSource(_HttpTokenSource):
    """A service account with domain-wide delegation acting as the mailbox (JWT bearer grant, RS256)."""

    def __init__(self, conn: Connection) -> None:
        o = _oauth(conn)
        assert o.service_account_file is not None  # the model requires it
        info = _load_service_account(o.service_account_file, conn)
        super().__init__(conn, o.token_url or str(info.get("token_uri") or GOOGLE_TOKEN_URL))
        self.info = info
        self.description = "google service account"

    def _where(self) -> str:
        return f"Google token endpoint {self.url}"

    def fetch(self, refresh_token: str | None) -> Grant:
        now = int(time.time())
        claims = {
            "iss": self.info["client_email"],
            "sub": self.conn.auth.username,
            "scope": " ".join(self.o.effective_scopes()),
            "aud": self.url,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = sign_rs256(claims, str(self.info["private_key"]), kid=self.info.get("private_key_id"))
        return self._grant(self._post({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                       "assertion": assertion}))

    def _error(self, body: dict[str, Any], status: int) -> MailConnectorError:
        err = super()._error(body, status)
        error = body.get("error")
        if error == "unauthorized_client":
            err.hint = ("domain-wide delegation is not set up for this service account: in the Google Admin "
                        "console, Security > API controls > Domain-wide delegation, add the service account's "
                        "client ID with the scope https://mail.google.com/")
        elif error == "invalid_grant":
            err.hint = ("check that auth.username is an existing mailbox of the Workspace domain, that the key "
                        "is still valid, and that this machine's clock is right")
        return err


def _load_service_account(path: Path, conn: Connection) -> dict[str, Any]:
    where = f"connections.{conn.name}.auth.oauth2.service_account_file"
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"service account key file {path} does not exist", field=where) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"service account key file {path} cannot be read as JSON: {type(exc).__name__}",
                          field=where) from None
    if not isinstance(info, dict) or not info.get("client_email") or not info.get("private_key"):
        raise ConfigError(f"{path} is not a service account key (no client_email / private_key)", field=where,
                          hint="download a JSON key for the service account in the Google Cloud console")
    return info


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_rs256(claims: dict[str, Any], private_key_pem: str, *, kid: str | None = None) -> str:
    """A compact JWT signed with RS256 (``cryptography``, which msal already brings)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("the service account's private_key cannot be loaded (not an unencrypted PEM key)",
                          field="auth.oauth2.service_account_file") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("the service account's private_key is not an RSA key",
                          field="auth.oauth2.service_account_file")
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = (f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}."
                     f"{_b64url(json.dumps(claims, separators=(',', ':')).encode())}")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


# ------------------------------------------------ interactive sign-in (auth login)
def microsoft_device_login(connection: Connection, *, show: Callable[[str], None]) -> Grant:
    """The device code flow: ``show`` gets the instructions (a URL and a code); blocks until signed in."""
    source = _MicrosoftSource(connection)
    app = source._application()
    with source._translate():
        flow = app.initiate_device_flow(scopes=source.scopes)
    if not isinstance(flow, dict) or "user_code" not in flow:
        raise _microsoft_error(flow if isinstance(flow, dict) else {}, "device_code")
    show(str(flow.get("message") or f"open {flow.get('verification_uri')} and enter the code {flow['user_code']}"))
    with source._translate():
        result = app.acquire_token_by_device_flow(flow)
    if not isinstance(result, dict) or "access_token" not in result:
        raise _microsoft_error(result if isinstance(result, dict) else {}, "device_code")
    return _interactive_grant(result)


@dataclass(frozen=True)
class LoginRequest:
    """An authorization request to open in a browser; ``verifier`` and ``state`` stay here (PKCE, RFC 7636)."""

    url: str
    redirect_uri: str
    verifier: str = field(repr=False)
    state: str


def google_authorization_request(connection: Connection, *, authorization_url: str = GOOGLE_AUTHORIZATION_URL,
                                 redirect_uri: str = "http://localhost") -> LoginRequest:
    """The installed-app flow's first step: the URL where the user signs in and consents (offline access)."""
    import secrets as random
    from urllib.parse import urlencode

    o = _oauth(connection)
    verifier = random.token_urlsafe(48)
    state = random.token_urlsafe(12)
    challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
    query = urlencode({
        "client_id": o.client_id or "",
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(o.effective_scopes()),
        "access_type": "offline",
        "prompt": "consent",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "login_hint": connection.auth.username,
    })
    sep = "&" if "?" in authorization_url else "?"
    return LoginRequest(f"{authorization_url}{sep}{query}", redirect_uri, verifier, state)


def google_exchange_code(connection: Connection, request: LoginRequest, answer: str) -> Grant:
    """The installed-app flow's second step: ``answer`` is the code, or the whole address the browser was
    sent to (its ``state`` must match)."""
    from urllib.parse import parse_qs, urlsplit

    o = _oauth(connection)
    answer = answer.strip()
    code = answer
    if "code=" in answer:
        query = parse_qs(urlsplit(answer).query or answer.split("?", 1)[-1])
        if "error" in query:
            raise AuthenticationError(f"the sign-in was not completed: {_clean(query['error'][0], 100)}",
                                      hint="run `mailconnector auth login` again and accept the consent screen")
        if query.get("state", [request.state])[0] != request.state:
            raise AuthenticationError("the address pasted belongs to another sign-in (state does not match)",
                                      hint="paste the address from this sign-in, or run the command again")
        code = query.get("code", [""])[0]
    if not code:
        raise ConfigError("no authorization code given", hint="paste the code, or the whole address from the browser")
    source = _HttpTokenSource(connection, o.token_url or GOOGLE_TOKEN_URL, grant_label="authorization_code")
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri,
            "client_id": o.client_id or "", "code_verifier": request.verifier}
    if o.client_secret is not None:
        data["client_secret"] = o.client_secret.get_secret_value()
    return _interactive_grant(source._post(data))


def _interactive_grant(result: dict[str, Any]) -> Grant:
    token = str(result["access_token"])
    secrets.register_secret(token)
    rt = result.get("refresh_token")
    if not rt:
        raise AuthenticationError(
            "signed in, but the identity provider gave no refresh token",
            hint="the client must be allowed offline access (Microsoft: the offline_access permission; Google: "
                 "a Desktop app client, with access_type=offline and prompt=consent)",
        )
    secrets.register_secret(str(rt))
    return Grant(token, _lifetime(result.get("expires_in"), token), str(rt))


# -------------------------------------------------------- why a token was refused
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


_USER_CLAIMS = ("upn", "preferred_username", "unique_name", "email", "sub")


def explain_refusal(connection: Connection, token: str | None, reply: str = "",
                    *, login: str | None = None) -> tuple[str, str]:
    """Why a mail server refused an OAuth2 login, as (words to add to the message, hint).

    Looks at the token's own claims when it is a JWT (expired? issued for someone else? for another
    resource?) and at the provider's usual causes (Exchange Online: service principal, mailbox permission,
    SMTP AUTH; Google: scope, IMAP access). Never repeats the token.
    """
    o = connection.auth.oauth2
    user = (login or connection.auth.username).lower()
    words: list[str] = []
    claims = jwt_claims(token) if token else None
    if claims:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= time.time():
            when = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            words.append(f"the token expired {time.time() - exp:.0f} s ago (at {when})")
            return ("; " + "; ".join(words),
                    "the token endpoint handed out an expired token, or a clock is wrong: check the time on this "
                    "machine and on the token server")
        named = next((str(claims[c]) for c in _USER_CLAIMS if isinstance(claims.get(c), str) and "@" in claims[c]),
                     None)
        if named and named.lower() != user:
            return (f"; the token was issued for {named}, not for {user}",
                    f"get a token for {user} (sign in as that user with `mailconnector auth login`), or log in "
                    f"as {named}; for app-only tokens the mailbox is auth.username")
        aud = str(claims.get("aud", ""))
        if o is not None and o.provider == "microsoft365" and "graph.microsoft.com" in aud:
            return ("; the token is for Microsoft Graph, not Exchange Online",
                    "use the scope https://outlook.office365.com/.default (or the IMAP/SMTP delegated scopes)")
    host = " ".join(s.host.lower() for s in (connection.smtp, connection.imap) if s is not None)
    microsoft = (o is not None and o.provider == "microsoft365") or "office365" in host or "outlook" in host
    google = (o is not None and o.provider == "google") or "gmail" in host or "google" in host
    text = reply.lower()
    if microsoft:
        if "5.7.139" in text or "smtpclientauthentication" in text or "smtp auth" in text:
            return ("; SMTP AUTH is disabled for this mailbox or tenant",
                    "enable SMTP AUTH for the mailbox (Exchange admin center > the mailbox > Email apps > "
                    "Authenticated SMTP, or Set-CASMailbox -SmtpClientAuthenticationDisabled $false)")
        if o is not None and o.grant == "client_credentials":
            return ("", "Exchange Online refused the app-only token: register the app's service principal in "
                        "Exchange Online (New-ServicePrincipal -AppId <client id> -ObjectId <enterprise app object "
                        "id>), give it the mailbox (Add-MailboxPermission -Identity <mailbox> -User <service "
                        "principal id> -AccessRights FullAccess), check the IMAP.AccessAsApp / SMTP.SendAsApp "
                        "permissions have admin consent, and for SMTP that SMTP AUTH is enabled for the mailbox")
        return ("", "Exchange Online refused the token: check the delegated permissions IMAP.AccessAsUser.All / "
                    "SMTP.Send have consent, that IMAP (or SMTP AUTH) is enabled for the mailbox, and that the "
                    "token's user is auth.username")
    if google:
        return ("", "Google refused the token: check the scope https://mail.google.com/, that IMAP is enabled for "
                    "the account, and (service account) that domain-wide delegation lists that scope")
    return ("", "the token was refused: check it is for this user, unexpired, and has the mail scope")
