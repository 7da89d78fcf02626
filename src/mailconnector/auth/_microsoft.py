"""The Microsoft 365 token source, apart because msal brings its own authority, cache and errors to handle."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MailConnectorError, TransportError
from ._base import Grant, _clean, _lifetime, _network_error, _oauth
from ._refusals import _microsoft_error

if TYPE_CHECKING:
    from ..connection import Connection

log = logging.getLogger("mailconnector.auth")

MICROSOFT_HOST = "login.microsoftonline.com"
_MSAL_RESERVED = {"openid", "profile", "offline_access"}


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
