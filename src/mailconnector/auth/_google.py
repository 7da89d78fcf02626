"""The Google token sources, apart for their service-account key handling and Workspace-specific hints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MailConnectorError
from ._base import Grant, _b64url, _oauth
from ._generic import _HttpTokenSource

if TYPE_CHECKING:
    from ..connection import Connection

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"


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
