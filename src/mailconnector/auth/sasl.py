"""SASL payloads for OAuth2 (XOAUTH2, OAUTHBEARER) and the server's error challenge. Pure functions."""

from __future__ import annotations

import base64
import binascii
import json

__all__ = ["decode_oauth_error", "oauthbearer_string", "token_refused", "xoauth2_string"]


def _check(name: str, value: str) -> None:
    if any(c in value for c in "\x01\r\n\0"):
        raise ValueError(f"{name} contains a control character")


def xoauth2_string(user: str, token: str) -> bytes:
    """``user=U^Aauth=Bearer T^A^A`` (Google's and Microsoft's XOAUTH2), not yet base64-encoded."""
    _check("user", user)
    _check("token", token)
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer_string(user: str, token: str, host: str, port: int) -> bytes:
    """RFC 7628 OAUTHBEARER initial client response, not yet base64-encoded."""
    _check("user", user)
    _check("token", token)
    _check("host", host)
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def decode_oauth_error(challenge: str | bytes) -> str | None:
    """Words for a failure challenge: JSON such as ``{"status":"401","schemes":..,"scope":..}``.

    Accepts it base64-encoded (an SMTP ``334`` reply) or already decoded (imaplib decodes the IMAP ``+``
    continuation before it calls the authenticator).
    """
    if isinstance(challenge, bytes):
        challenge = challenge.decode("utf-8", "replace")
    text = challenge.strip()
    if not text:
        return None
    try:
        if text.startswith("{"):
            data = json.loads(text)
        else:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            data = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    parts = [f"{k}={data[k]}" for k in ("status", "error", "scope", "schemes") if k in data]
    return ", ".join(str(p) for p in parts) or None


def token_refused(detail: str | None) -> bool:
    """Does a decoded failure challenge say the token itself was refused, so a fresh one may help?

    XOAUTH2 servers say ``status=401``; OAUTHBEARER ones (RFC 7628) ``status=invalid_token``. A refusal
    for scope (``insufficient_scope``, ``403``) or a malformed request would fail again with a new token.
    """
    if not detail:
        return False
    status = next((p.split("=", 1)[1].strip() for p in detail.split(",") if p.strip().startswith("status=")), "")
    return status.lower() in ("401", "invalid_token")
