"""Who may use the console: a token, as Jupyter does it.

``/?token=T`` (the URL printed at start) sets an HttpOnly, SameSite=Strict cookie and redirects to the same page
without the token, so it does not linger in the address bar, the history or a Referer. Scripts send
``Authorization: Bearer T`` (a token in the URL of an API call is refused: URLs end up in logs). Every
comparison is constant-time. A request that changes something and is
authenticated by the cookie must also carry the page's CSRF value in the ``X-CSRF-Token`` header (htmx sends
it on every request): another site can make a browser send the cookie, not that header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "CSRF_HEADER", "Access", "Guard"]

COOKIE = "mailconnector_console"
CSRF_HEADER = "x-csrf-token"
_SAFE = {"GET", "HEAD", "OPTIONS"}


class Access:
    """The console's credentials. ``token`` None: no token asked (only allowed on a loopback address)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        key = (token or secrets.token_hex(32)).encode()
        self.cookie = hmac.new(key, b"mailconnector console cookie", hashlib.sha256).hexdigest()
        self.csrf = hmac.new(key, b"mailconnector console csrf", hashlib.sha256).hexdigest()

    def token_matches(self, given: str | None) -> bool:
        return self.token is not None and given is not None and hmac.compare_digest(given.encode(),
                                                                                   self.token.encode())

    def cookie_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.cookie.encode())

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Guard:
    """The ASGI middleware that lets a request through only with the token (and, to change anything from a
    page, the CSRF value)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app, access = self.app, self.access
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = _headers(scope)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if "\x00" in scope["path"] or any("\x00" in k or "\x00" in v for k, v in query):
            await _refuse(send, headers, 400, "a NUL character in the request's path or query",
                          "no name, id or filter of the console holds one")
            return
        if access.token is None and not _loopback_host(headers.get("host", "")):
            # Without a token, only the loopback address guards the console: a page of another site whose name
            # was pointed at 127.0.0.1 (DNS rebinding) would otherwise read and drive it from a browser.
            await _refuse(send, headers, 403, "this console answers only to a loopback host name when it runs "
                          "without a token", "open it as http://127.0.0.1:PORT/ or http://localhost:PORT/, or "
                          "start it with a token")
            return
        given = dict(query).get("token")
        method = scope["method"]
        if given is not None and (scope["path"].startswith("/api/") or scope["path"] == "/metrics"):
            await _refuse(send, headers, 401, "the API takes its token in a header, not in the URL (URLs end up in "
                          "logs)", "send the header Authorization: Bearer TOKEN")
            return
        if given is not None and method in _SAFE:
            if not access.token_matches(given):
                await _refuse(send, headers, 401, "the token in the URL is not this console's",
                              "open the URL the console printed when it started")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            await _redirect(send, _same_site_path(scope) + (f"?{rest}" if rest else ""), access.cookie,
                            secure=scope.get("scheme") == "https")
            return
        bearer = headers.get("authorization", "")
        by_bearer = bearer[:7].lower() == "bearer " and access.token_matches(bearer[7:].strip())
        by_cookie = access.cookie_matches(_cookie(headers))
        if access.token is not None and not (by_bearer or by_cookie):
            await _refuse(send, headers, 401, "this console needs its token",
                          "open the URL the console printed when it started (it ends with ?token=...), "
                          "or send the header Authorization: Bearer TOKEN")
            return
        if method not in _SAFE and not by_bearer and (
                not access.csrf_matches(headers.get(CSRF_HEADER)) or not _same_origin(headers)):
            await _refuse(send, headers, 403, "refused: this request did not come from a console page",
                          "use the console's own buttons; scripts send Authorization: Bearer TOKEN")
            return
        await app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _loopback_host(host: str) -> bool:
    """``localhost``, ``127.x.x.x`` or ``[::1]``, with or without a port."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    return name in ("localhost", "::1") or name.endswith(".localhost") or (
        name.startswith("127.") and name.replace(".", "").isdigit() and name.count(".") == 3)


def _same_origin(headers: dict[str, str]) -> bool:
    """A browser names the page a request came from; it must be this console (a missing Origin is allowed:
    the CSRF value already proves the page)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _same_site_path(scope: Scope) -> str:
    """The path as the browser sent it (still percent-encoded, so ``%3F`` stays part of the path), made
    unable to name another site: ``//evil.example/`` or ``/\\evil.example`` would be read as a host."""
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    path = "".join(c if 0x21 <= ord(c) < 0x7F else f"%{ord(c):02X}" for c in path)  # no control or space
    return "/" + path.lstrip("/\\")


async def _redirect(send: Send, location: str, cookie: str, *, secure: bool) -> None:
    flags = "; HttpOnly; SameSite=Strict; Path=/" + ("; Secure" if secure else "")
    await _send(send, 303, [(b"location", location.encode("ascii")),
                            (b"set-cookie", f"{COOKIE}={cookie}{flags}".encode())], b"")


async def _refuse(send: Send, headers: dict[str, str], status: int, message: str, hint: str) -> None:
    error: dict[str, Any] = {"type": "AccessError", "message": message, "hint": hint}
    extra = [(b"www-authenticate", b'Bearer realm="mailconnector console"')] if status == 401 else []
    if "text/html" in headers.get("accept", ""):
        from markupsafe import escape

        body = (f"<!doctype html><title>mailconnector console</title><h1>{status}</h1><p>{escape(message)}</p>"
                f"<p>{escape(hint)}</p>").encode()
        await _send(send, status, [*extra, (b"content-type", b"text/html; charset=utf-8")], body)
        return
    body = json.dumps({"ok": False, "error": error}).encode()
    await _send(send, status, [*extra, (b"content-type", b"application/json")], body)
