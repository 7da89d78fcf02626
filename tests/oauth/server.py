"""A real OAuth2 token endpoint on loopback (HTTPS, in a thread) for the OAuth2 tests.

It speaks the Microsoft identity platform v2.0 protocol as far as msal needs it (OpenID discovery, user
realm discovery, the token endpoint for client_credentials / password / refresh_token / device_code, the
device authorization endpoint, AADSTS error bodies), and a plain RFC 6749 token endpoint (``/token``)
for the generic and Google providers (client_credentials, password, refresh_token, authorization_code with
PKCE, and the JWT bearer grant of Google service accounts, whose RS256 signature it checks).

Access tokens are JWTs signed (HS256) with the sandbox's Dovecot key, so the mail servers accept them.
Every request is counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["ClientApp", "TokenServer"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class ClientApp:
    """A registered application: its secret (None: a public client) and, for app-only tokens, the mailbox
    its tokens name in ``sub`` (what Exchange would check with the mailbox permission)."""

    secret: str | None = None
    mailbox: str | None = None
    # An AADSTS-style error to answer every token request of this client with: (error, code, description).
    fail_with: tuple[str, int, str] | None = None


@dataclass
class Request:
    method: str
    path: str
    grant_type: str | None = None
    form: dict[str, str] = field(default_factory=dict)


class TokenServer:
    """``TokenServer(key, tls_context)``; ``start()`` / ``stop()``; ``url`` is ``https://127.0.0.1:PORT``."""

    def __init__(self, key: bytes, tls: ssl.SSLContext) -> None:
        self.key = key
        self.tls = tls
        self.clients: dict[str, ClientApp] = {}
        self.users: dict[str, str] = {}  # username -> password (for ROPC)
        self.refresh_tokens: dict[str, tuple[str, str]] = {}  # refresh token -> (client_id, user)
        self.device_user: str | None = None  # who approves device codes (at once)
        self.mfa_users: set[str] = set()  # ROPC for these fails with AADSTS50076
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}  # client_email -> public key
        self.auth_codes: dict[str, dict[str, str]] = {}
        self.jwt_lifetime = 3600  # the ``exp`` written into the token
        self.expires_in: int | None = None  # what the response says (default: jwt_lifetime)
        self.token_subject: str | None = None  # force ``sub`` (a token for another user)
        self.rotate_refresh_tokens = False  # /token: hand out a new refresh token with each refresh
        self.requests: list[Request] = []
        self.issued: list[str] = []  # every access and refresh token handed out
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life
    def start(self) -> TokenServer:
        outer = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # TLS handshake in the connection's own thread, not in the accept loop.
                try:
                    tls_sock = outer.tls.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                try:
                    super().finish_request(tls_sock, client_address)
                finally:
                    tls_sock.close()

        self._httpd = Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="oauth-token-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def authorization_url(self) -> str:
        return f"{self.url}/authorize"

    # -------------------------------------------------------------- counting
    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.jwt_lifetime = 3600
        self.expires_in = None
        self.token_subject = None
        self.rotate_refresh_tokens = False

    def token_requests(self, grant_type: str | None = None) -> int:
        """POSTs to a token endpoint (any grant, or the one named)."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == "POST" and r.grant_type is not None
                       and (grant_type is None or r.grant_type == grant_type))

    def register_client(self, client_id: str, *, secret: str | None = None, mailbox: str | None = None,
                        fail_with: tuple[str, int, str] | None = None) -> None:
        self.clients[client_id] = ClientApp(secret, mailbox, fail_with)

    def new_refresh_token(self, client_id: str, user: str) -> str:
        rt = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[rt] = (client_id, user)
        self.issued.append(rt)
        return rt

    # ----------------------------------------------------------------- tokens
    def make_jwt(self, sub: str, *, lifetime: int | None = None, extra: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.url, "aud": "https://outlook.office365.com", "sub": sub,
                                  "iat": now, "exp": now + (self.jwt_lifetime if lifetime is None else lifetime),
                                  "jti": secrets.token_hex(8)}
        claims.update(extra or {})
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "default"}).encode())
        body = b64url(json.dumps(claims).encode())
        sig = hmac.new(self.key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        token = f"{head}.{body}.{b64url(sig)}"
        self.issued.append(token)
        return token

    def _grant(self, sub: str, *, client_id: str | None = None, refresh_for: str | None = None,
               scope: str = "") -> dict[str, Any]:
        token = self.make_jwt(self.token_subject or sub)
        body: dict[str, Any] = {
            "token_type": "Bearer", "access_token": token, "scope": scope,
            "expires_in": self.jwt_lifetime if self.expires_in is None else self.expires_in,
        }
        if refresh_for is not None and client_id is not None:
            body["refresh_token"] = self.new_refresh_token(client_id, refresh_for)
        return body


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _aad_error(status: int, error: str, code: int, description: str) -> _Reply:
    return _Reply(status, {"error": error, "error_description": f"AADSTS{code}: {description} Trace ID: "
                           f"{secrets.token_hex(8)} Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ')}",
                           "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ")})


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # -------------------------------------------------------------- GET
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            with server._lock:
                server.requests.append(Request("GET", url.path))
            if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                tenant = parts[0]
                base = f"{server.url}/{tenant}"
                return self._json(200, {
                    "issuer": f"{server.url}/{tenant}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "response_types_supported": ["code"],
                })
            if len(parts) == 3 and parts[:2] == ["common", "userrealm"]:
                return self._json(200, {"ver": "1.0", "account_type": "Managed", "domain_name": "example.test"})
            if parts == ["authorize"]:
                return self._authorize(dict(urllib.parse.parse_qsl(url.query)))
            self._json(404, {"error": "not_found"})

        def _authorize(self, q: dict[str, str]) -> None:
            """The user signs in and consents at once; the browser is sent to redirect_uri with a code."""
            code = "code-" + secrets.token_urlsafe(16)
            server.auth_codes[code] = {"client_id": q.get("client_id", ""), "redirect_uri": q.get("redirect_uri", ""),
                                       "challenge": q.get("code_challenge", ""), "user": server.device_user or ""}
            sep = "&" if "?" in q.get("redirect_uri", "") else "?"
            location = f"{q.get('redirect_uri', '')}{sep}" + urllib.parse.urlencode(
                {"code": code, "state": q.get("state", ""), "scope": q.get("scope", "")})
            self._json(302, {}, headers={"Location": location})

        # ------------------------------------------------------------- POST
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            form = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                cid, _, csecret = base64.b64decode(auth[6:]).decode().partition(":")
                form.setdefault("client_id", urllib.parse.unquote_plus(cid))
                form.setdefault("client_secret", urllib.parse.unquote_plus(csecret))
            url = urllib.parse.urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            with server._lock:
                server.requests.append(Request("POST", url.path, form.get("grant_type"), form))
            try:
                if parts[-3:] == ["oauth2", "v2.0", "token"]:
                    self._json(200, self._microsoft_token(form))
                elif parts[-3:] == ["oauth2", "v2.0", "devicecode"]:
                    self._json(200, self._device_code(form))
                elif parts == ["token"]:
                    self._json(200, self._generic_token(form))
                else:
                    self._json(404, {"error": "not_found"})
            except _Reply as reply:
                self._json(reply.status, reply.body, headers=reply.headers)

        def _client(self, form: dict[str, str], *, aad: bool) -> ClientApp:
            cid = form.get("client_id", "")
            app = server.clients.get(cid)
            if app is None:
                if aad:
                    raise _aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{cid}' "
                                     "was not found in the directory 'example.test'.")
                raise _Reply(401, {"error": "invalid_client", "error_description": "unknown client"})
            if app.fail_with is not None:
                error, code, desc = app.fail_with
                raise _aad_error(400, error, code, desc)
            if app.secret is not None and form.get("client_secret") != app.secret:
                if aad:
                    raise _aad_error(401, "invalid_client", 7000215,
                                     "Invalid client secret provided. Ensure the secret being sent in the request "
                                     f"is the client secret value, not the client secret ID, for a secret added "
                                     f"to app '{cid}'.")
                raise _Reply(401, {"error": "invalid_client", "error_description": "client authentication failed"})
            return app

        def _microsoft_token(self, form: dict[str, str]) -> dict[str, Any]:
            grant = form.get("grant_type")
            app = self._client(form, aad=True)
            scope = form.get("scope", "")
            cid = form["client_id"]
            if grant == "client_credentials":
                return server._grant(app.mailbox or cid, scope=scope)
            if grant == "password":
                user = form.get("username", "")
                if server.users.get(user) != form.get("password"):
                    raise _aad_error(400, "invalid_grant", 50126,
                                     "Error validating credentials due to invalid username or password.")
                if user in server.mfa_users:
                    raise _aad_error(400, "invalid_grant", 50076, "Due to a configuration change made by your "
                                     "administrator, or because you moved to a new location, you must use "
                                     "multi-factor authentication to access this resource.")
                return server._grant(user, client_id=cid, refresh_for=user, scope=scope)
            if grant == "refresh_token":
                rt = form.get("refresh_token", "")
                holder = server.refresh_tokens.get(rt)
                if holder is None or holder[0] != cid:
                    raise _aad_error(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity.")
                return server._grant(holder[1], client_id=cid, refresh_for=holder[1], scope=scope)
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                if not server.device_user or not form.get("device_code", "").startswith("dc-"):
                    raise _aad_error(400, "authorization_pending", 70016, "OAuth 2.0 device flow error.")
                return server._grant(server.device_user, client_id=cid, refresh_for=server.device_user, scope=scope)
            raise _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")

        def _device_code(self, form: dict[str, str]) -> dict[str, Any]:
            self._client(form, aad=True)
            code = "ABCD-EFGH"
            return {"device_code": "dc-" + secrets.token_urlsafe(12), "user_code": code,
                    "verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 1,
                    "message": f"To sign in, use a web browser to open the page https://microsoft.com/devicelogin "
                               f"and enter the code {code} to authenticate."}

        def _generic_token(self, form: dict[str, str]) -> dict[str, Any]:
            grant = form.get("grant_type")
            scope = form.get("scope", "")
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return self._jwt_bearer(form.get("assertion", ""))
            app = self._client(form, aad=False)
            cid = form["client_id"]
            if grant == "client_credentials":
                return server._grant(app.mailbox or cid, scope=scope)
            if grant == "password":
                user = form.get("username", "")
                if server.users.get(user) != form.get("password"):
                    raise _Reply(400, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
                return server._grant(user, scope=scope)
            if grant == "refresh_token":
                holder = server.refresh_tokens.get(form.get("refresh_token", ""))
                if holder is None or holder[0] != cid:
                    raise _Reply(400, {"error": "invalid_grant", "error_description": "Token has been expired or "
                                       "revoked."})
                if server.rotate_refresh_tokens:
                    return server._grant(holder[1], client_id=cid, refresh_for=holder[1], scope=scope)
                return server._grant(holder[1], scope=scope)
            if grant == "authorization_code":
                entry = server.auth_codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                if (entry is None or entry["client_id"] != cid or entry["redirect_uri"] != form.get("redirect_uri")
                        or b64url(hashlib.sha256(verifier.encode()).digest()) != entry["challenge"]):
                    raise _Reply(400, {"error": "invalid_grant", "error_description": "Bad Request"})
                return server._grant(entry["user"], client_id=cid, refresh_for=entry["user"], scope=scope)
            raise _Reply(400, {"error": "unsupported_grant_type"})

        def _jwt_bearer(self, assertion: str) -> dict[str, Any]:
            """Google's service account grant: check the RS256 signature, the audience and the times."""
            try:
                head_b64, body_b64, sig_b64 = assertion.split(".")
                head = json.loads(b64url_decode(head_b64))
                claims = json.loads(b64url_decode(body_b64))
                key = server.service_accounts[claims["iss"]]
                key.verify(b64url_decode(sig_b64), f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(),
                           hashes.SHA256())
            except Exception as exc:  # any defect: the grant is refused
                raise _Reply(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {type(exc).__name__}"}
                             ) from None
            now = time.time()
            if head.get("alg") != "RS256" or claims.get("aud") != server.token_url:
                raise _Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT audience or alg."})
            if not (claims["iat"] - 60 <= now <= claims["exp"]) or claims["exp"] - claims["iat"] > 3600:
                raise _Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a "
                                   "short-lived token (60 minutes) and in a reasonable timeframe."})
            if "https://mail.google.com/" not in str(claims.get("scope", "")).split():
                raise _Reply(400, {"error": "unauthorized_client", "error_description": "Client is unauthorized "
                                   "to retrieve access tokens using this method, or client not authorized for any "
                                   "of the scopes requested."})
            return server._grant(str(claims.get("sub") or claims["iss"]), scope=str(claims.get("scope")))

        # ------------------------------------------------------------ reply
        def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def tls_for_loopback(workdir: Path, extra_ca: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for 127.0.0.1/localhost from a new test CA, and a CA bundle file
    (the sandbox CA plus this one) that a connection's ``tls.ca_file`` can name to trust both servers."""
    import trustme

    ca = trustme.CA(organization_name="mailconnector token endpoint test CA")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    bundle = workdir / "ca-bundle.pem"
    bundle.write_bytes(extra_ca.read_bytes().rstrip(b"\n") + b"\n" + ca.cert_pem.bytes())
    return ctx, bundle
