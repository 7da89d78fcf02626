"""What the library keeps for the life of the process, in one place: ``context()``.

A long-running process (a worker, the web console, a watcher) keeps:

- ``secrets``: the redaction registry (``mailconnector.secrets``). Process-wide because a secret must be
  redacted wherever it turns up: in any log line, error or page, whichever thread or run wrote it.
- ``tls_contexts``: the TLS client contexts by settings and by the identity of their files (``_net``).
  Building one reads the CA bundle; runs in one process share them as a connection pool would.
- ``token_providers``: one OAuth2 token provider per connection settings (``auth.oauth2``), so that every
  session, thread and run of the process reuses a token until shortly before it expires.
- ``token_store``: the store where those providers keep their tokens for other processes
  (``auth.oauth2.use_store``, set by the command line, the worker and the console from the project).

Each is bounded, so that what the process keeps does not grow with the time it runs. ``reset_context()``
replaces the whole with a fresh, empty one: between tests, or when a console reloads its project. It also
forgets every secret: call it when nothing of the old context runs any more (anything still running keeps
its tokens and contexts, but its secrets are no longer redacted until they are registered again).

This module sits in the base layer: it names the classes of the upper layers for annotations only.
"""

from __future__ import annotations

import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

from . import secrets
from .secrets import SecretRegistry

if TYPE_CHECKING:
    from .auth.oauth2 import CachingTokenProvider
    from .state import TokenCache

__all__ = ["BoundedCache", "Context", "context", "reset_context", "swap_context"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_TLS_CONTEXTS = 32  # a long-running worker meets few distinct TLS settings; the cache stays small anyway
MAX_TOKEN_PROVIDERS = 64  # one per distinct OAuth2 identity and settings; a dropped one is made again


class BoundedCache(Generic[K, V]):
    """A thread-safe mapping of at most ``maxsize`` entries; beyond it the least recently used is dropped."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<BoundedCache {len(self)}/{self.maxsize}>"

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._put(key, value)

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The value for ``key``, made by ``factory`` when there is none. The factory runs under the cache's
        lock, so that concurrent callers get one value: keep it quick (no network)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = factory()
            self._put(key, value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)


class Context:
    """The process-wide state of the library (see the module's docstring)."""

    def __init__(self, *, secret_registry: SecretRegistry | None = None) -> None:
        self._secrets = secret_registry if secret_registry is not None else SecretRegistry()
        # Keyed by _net: (verify, identity of the CA file, of the client certificate, of its key).
        self.tls_contexts: BoundedCache[tuple[object, ...], ssl.SSLContext] = BoundedCache(MAX_TLS_CONTEXTS)
        self.token_providers: BoundedCache[str, CachingTokenProvider] = BoundedCache(MAX_TOKEN_PROVIDERS)
        self.token_store: TokenCache | None = None

    @property
    def secrets(self) -> SecretRegistry:
        """The redaction registry; ``swap_context`` installs it for ``secrets.register_secret``/``redact``."""
        return self._secrets

    def __repr__(self) -> str:
        return (f"<Context secrets={len(self._secrets)} tls_contexts={len(self.tls_contexts)} "
                f"token_providers={len(self.token_providers)} token_store={self.token_store is not None}>")


_lock = threading.Lock()
# The first context takes over the registry in use: secrets may have been registered before this module
# was first imported (a connection resolves its secrets as it is loaded).
_current = Context(secret_registry=secrets.current_registry())


def context() -> Context:
    """The process's context."""
    return _current


def swap_context(new: Context) -> Context:
    """Make ``new`` the process's context, and return the one it replaces (a test that runs something as a
    fresh process would, and puts the old context back afterwards)."""
    global _current
    with _lock:
        old, _current = _current, new
        secrets.install_registry(new.secrets)
    return old


def reset_context() -> Context:
    """Replace the process's context with a fresh, empty one, and return it."""
    fresh = Context()
    swap_context(fresh)
    return fresh
