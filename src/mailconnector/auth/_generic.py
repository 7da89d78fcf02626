"""Plain OAuth2 token endpoints over httpx: the generic source, and the base the Google ones build on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import AuthenticationError, MailConnectorError, TransportError
from ._base import Grant, _clean, _lifetime, _network_error, _oauth

if TYPE_CHECKING:
    from ..connection import Connection


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
