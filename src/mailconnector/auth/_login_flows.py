"""The interactive sign-ins of `mailconnector auth login`, apart from the unattended sources operations use."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import secrets
from ..errors import AuthenticationError, ConfigError
from ._base import Grant, _b64url, _clean, _lifetime, _oauth
from ._generic import _HttpTokenSource
from ._google import GOOGLE_AUTHORIZATION_URL, GOOGLE_TOKEN_URL
from ._microsoft import _MicrosoftSource
from ._refusals import _microsoft_error

if TYPE_CHECKING:
    from ..connection import Connection


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
