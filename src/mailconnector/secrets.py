"""Secret references (``${env:NAME}``, ``${file:PATH}``) and the redaction of known secret values.

Every secret value resolved here is remembered, so that the log handlers can replace it with ``****``
wherever it turns up (also base64-encoded, as in SMTP ``AUTH PLAIN`` payloads): a second line of
defence behind the protocol-aware redaction in ``logs.py``.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from pathlib import Path

__all__ = [
    "REDACTED",
    "SecretReferenceError",
    "is_reference",
    "redact",
    "register_secret",
    "resolve",
    "resolve_in_url",
]

REDACTED = "****"
_REF = re.compile(r"^\$\{(env|file):([^}]*)\}$")
_known: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


class SecretReferenceError(ValueError):
    """A reference that cannot be resolved; the message names the reference, never a value."""


def is_reference(value: str) -> bool:
    return bool(_REF.match(value.strip()))


def resolve(value: str, *, base_dir: Path | None = None) -> str:
    """Resolve a ``${env:...}`` / ``${file:...}`` reference, or return a literal value as it is."""
    m = _REF.match(value.strip())
    if not m:
        if "${" in value:
            raise SecretReferenceError(
                "looks like a secret reference but is not one; write ${env:NAME} or ${file:PATH}"
            )
        register_secret(value)
        return value
    kind, arg = m.group(1), m.group(2).strip()
    if not arg:
        raise SecretReferenceError(f"${{{kind}:}} needs a {'variable name' if kind == 'env' else 'path'}")
    if kind == "env":
        if arg not in os.environ:
            raise SecretReferenceError(f"environment variable {arg} is not set")
        secret = os.environ[arg]
    else:
        path = Path(arg).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            secret = path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            raise SecretReferenceError(f"secret file {path} does not exist") from None
        except OSError as exc:
            raise SecretReferenceError(f"secret file {path} cannot be read: {exc.strerror}") from None
    register_secret(secret)
    return secret


_EMBEDDED = re.compile(r"\$\{(?:env|file):[^}]*\}")


def resolve_in_url(value: str, *, base_dir: Path | None = None) -> str:
    """A URL whose parts may be references (``postgresql://mc:${env:PG_PASSWORD}@db/mc``): each is
    resolved and percent-encoded, so a password with ``@`` or ``/`` keeps the URL whole. A value that is one
    reference is resolved as it is (it holds the whole URL)."""
    if is_reference(value):
        return resolve(value, base_dir=base_dir)
    from urllib.parse import quote

    def one(match: re.Match[str]) -> str:
        secret = resolve(match.group(0), base_dir=base_dir)
        encoded = quote(secret, safe="")
        register_secret(encoded)
        return encoded

    resolved = _EMBEDDED.sub(one, value)
    if "${" in resolved:
        raise SecretReferenceError("looks like a secret reference but is not one; write ${env:NAME} or ${file:PATH}")
    return resolved


def register_secret(secret: str) -> None:
    """Remember a secret so ``redact`` removes it (and its base64 forms) from any text."""
    global _pattern
    if len(secret) < 4:  # too short to redact without mangling ordinary text
        return
    forms = {secret, *_base64_forms(secret.encode())}
    with _lock:
        if forms <= _known:
            return
        _known.update(forms)
        alternatives = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(a) for a in alternatives))


def _base64_forms(raw: bytes) -> set[str]:
    """The secret's base64 alone, and the part of it that shows inside a longer base64 payload.

    Inside ``base64("\\0user\\0password")`` the secret may start at any offset modulo 3, so its encoding
    differs; for each offset keep only the characters that depend on the secret alone.
    """
    forms = {base64.b64encode(raw).decode().rstrip("=")}
    for offset in (0, 1, 2):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = 4 if offset else 0  # the first group mixes in bytes before the secret
        end = len(encoded) - (4 if (offset + len(raw)) % 3 else 0)  # the last group may mix in bytes after it
        inner = encoded[start:end]
        if len(inner) >= 8:  # long enough not to match ordinary text by chance
            forms.add(inner)
    return forms


def redact(text: str) -> str:
    pat = _pattern
    if pat is None or not text:
        return text
    return pat.sub(REDACTED, text)
