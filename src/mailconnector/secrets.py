"""Secret references (``${env:NAME}``, ``${file:PATH}``) and the redaction of known secret values.

Every secret value resolved here is remembered, so that the log handlers can replace it with ``****``
wherever it turns up (also base64-encoded, as in SMTP ``AUTH PLAIN`` payloads): a second line of
defence behind the protocol-aware redaction in ``logs.py``.

The secrets are kept by a ``SecretRegistry``, the one of the process's context (``mailconnector._context``,
which installs it here: this module sits below it and does not import it). ``register_secret`` and
``redact`` use whichever registry is installed.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REDACTED",
    "SecretReferenceError",
    "SecretRegistry",
    "current_registry",
    "install_registry",
    "is_reference",
    "redact",
    "register_secret",
    "resolve",
    "resolve_in_url",
]

REDACTED = "****"
_REF = re.compile(r"^\$\{(env|file):([^}]*)\}$")
# A project has a handful of secrets; what grows in a long-running process is the OAuth2 tokens, a new one
# an hour per connection. Without a bound the registry, and the pattern every log line goes through, would
# grow for as long as the process runs.
MAX_SECRETS = 256


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


def register_secret(secret: str, *, transient: bool = False) -> None:
    """Remember a secret so ``redact`` removes it (and its base64 forms) from any text.

    ``transient``: a value that expires and is replaced (an OAuth2 token); the first to go past the bound.
    """
    _registry.register(secret, transient=transient)


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
    return _registry.redact(text)


@dataclass
class _Entry:
    forms: frozenset[str]  # the secret and its base64 forms
    transient: bool


class SecretRegistry:
    """The known secrets, each with its forms, and the one pattern that finds them all; thread-safe.

    Bounded to ``maxsize`` secrets. Beyond it the oldest registered (registering a secret again makes it
    the newest) goes first, transient ones before the others: an old token has long expired, while a
    password configured at start-up is registered once and must stay redacted for the life of the process.

    The pattern is compiled lazily: registering marks it stale, the next ``redact`` compiles it once (a
    project's start-up registers its secrets one by one, and only the last pattern is ever used).
    """

    def __init__(self, maxsize: int = MAX_SECRETS) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, secret: object) -> bool:
        return secret in self._entries

    def forms(self, secret: str) -> frozenset[str]:
        """What ``redact`` looks for on behalf of ``secret`` (nothing when it is not registered)."""
        entry = self._entries.get(secret)
        return entry.forms if entry is not None else frozenset()

    def register(self, secret: str, *, transient: bool = False) -> None:
        if len(secret) < 4:  # too short to redact without mangling ordinary text
            return
        with self._lock:
            entry = self._entries.get(secret)
            if entry is not None:
                self._entries.move_to_end(secret)
                entry.transient = entry.transient and transient
                return
            self._entries[secret] = _Entry(frozenset({secret, *_base64_forms(secret.encode())}), transient)
            while len(self._entries) > self.maxsize:
                # Never the one just registered (the newest): a fresh token must be redacted at once.
                oldest = next((s for s, e in self._entries.items() if e.transient and s != secret),
                              next(iter(self._entries)))
                del self._entries[oldest]
            self._stale = True

    def redact(self, text: str) -> str:
        if self._stale:
            self._compile()
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)

    def _compile(self) -> None:
        with self._lock:
            if not self._stale:  # another thread compiled it meanwhile
                return
            alternatives = sorted({f for e in self._entries.values() for f in e.forms}, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
            self._stale = False


_registry = SecretRegistry()


def current_registry() -> SecretRegistry:
    """The registry ``register_secret`` and ``redact`` use now."""
    return _registry


def install_registry(registry: SecretRegistry) -> None:
    """Make ``registry`` the one ``register_secret`` and ``redact`` use: for ``mailconnector._context``,
    which keeps it in the process's context (anyone else swaps the whole context instead)."""
    global _registry
    _registry = registry
