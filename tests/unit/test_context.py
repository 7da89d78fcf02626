"""What the library keeps for the life of the process (``mailconnector._context``): the secret registry, the TLS
contexts, the OAuth2 token providers and their store; each bounded, all replaced at once by ``reset_context``."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailconnector import _context, secrets
from mailconnector._context import BoundedCache, Context, context, reset_context, swap_context
from mailconnector._net import make_ssl_context
from mailconnector.auth.oauth2 import forget_providers, provider_for, use_store
from mailconnector.connection import Connection, TlsSettings
from mailconnector.operations._transform import build_transformation
from mailconnector.project import Project
from mailconnector.secrets import SecretRegistry
from mailconnector.state import Store


@pytest.fixture(autouse=True)
def fresh() -> Iterator[Context]:
    """Each test in a fresh context; the one of the rest of the tests is put back afterwards."""
    new = Context()
    saved = swap_context(new)
    try:
        yield new
    finally:
        swap_context(saved)


def unique_secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------ the secret registry
def test_the_registry_is_bounded_and_drops_the_oldest_registered_first() -> None:
    registry = SecretRegistry(maxsize=3)
    a, b, c, d, e = (unique_secret() for _ in range(5))
    for s in (a, b, c, d):
        registry.register(s)
    assert len(registry) == 3 and a not in registry and all(s in registry for s in (b, c, d))
    assert registry.redact(f"{a} {d}") == f"{a} {secrets.REDACTED}"  # an evicted secret is no longer looked for
    assert registry.forms(a) == frozenset()
    registry.register(b)  # registered again: the newest now
    registry.register(e)
    assert c not in registry and b in registry and d in registry and e in registry


def test_transient_secrets_go_before_the_configured_ones() -> None:
    registry = SecretRegistry(maxsize=3)
    password, tokens = unique_secret(), [unique_secret() for _ in range(4)]
    registry.register(password)
    for token in tokens:
        registry.register(token, transient=True)
    assert password in registry and tokens[0] not in registry and tokens[1] not in registry
    registry.register(tokens[2])  # registered again as a configured secret: no longer transient
    registry.register(unique_secret(), transient=True)
    assert tokens[2] in registry and tokens[3] not in registry and password in registry


def test_a_token_just_registered_is_never_the_one_evicted() -> None:
    """A full registry of configured secrets and one new transient token: the token must be redacted at once,
    so the oldest configured secret goes, not the newest entry."""
    registry = SecretRegistry(maxsize=2)
    first, second, token = unique_secret(), unique_secret(), unique_secret()
    registry.register(first)
    registry.register(second)
    registry.register(token, transient=True)
    assert token in registry and second in registry and first not in registry
    assert registry.redact(token) == secrets.REDACTED


def test_the_pattern_is_compiled_once_and_finds_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = SecretRegistry()
    values = [unique_secret() for _ in range(5)]
    compiled: list[str] = []
    real_compile = re.compile

    def counting(pattern: Any, flags: int = 0) -> re.Pattern[Any]:
        compiled.append(pattern)
        return real_compile(pattern, flags)

    monkeypatch.setattr(re, "compile", counting)
    for value in values:
        registry.register(value)
    assert compiled == []  # registering compiles nothing
    samples = {}
    for value in values:
        raw = value.encode()
        assert {value, base64.b64encode(raw).decode().rstrip("=")} <= registry.forms(value)
        samples.update({
            f"plain {value}": f"PASS {value}",
            f"b64 {value}": base64.b64encode(raw).decode(),
            f"auth plain {value}": base64.b64encode(b"\0alice@example.test\0" + raw).decode(),
            f"other user {value}": base64.b64encode(b"\0bo\0" + raw).decode(),
            f"login {value}": base64.b64encode(b"x" + raw + b"yz").decode(),
        })
    for kind, text in samples.items():
        out = registry.redact(f"C: AUTH PLAIN {text} trailing")
        assert secrets.REDACTED in out and out.endswith(" trailing"), kind
        assert not any(v in out or base64.b64encode(v.encode()).decode().rstrip("=") in out for v in values), kind
    assert len(compiled) == 1
    registry.register(values[0])  # known already: nothing to compile again
    registry.redact("text")
    assert len(compiled) == 1


def test_an_empty_registry_leaves_text_alone() -> None:
    registry = SecretRegistry()
    registry.register("abc")  # too short to redact safely: ignored
    assert len(registry) == 0 and registry.redact("abc def") == "abc def"


def test_the_module_functions_use_the_registry_of_the_context(fresh: Context) -> None:
    value = unique_secret()
    secrets.register_secret(value)
    assert value in fresh.secrets and secrets.current_registry() is fresh.secrets
    assert secrets.redact(value) == secrets.REDACTED


def test_the_first_context_takes_over_the_secrets_registered_before_it() -> None:
    code = (
        "from mailconnector import secrets\n"
        "secrets.register_secret('registered-before-the-context')\n"
        "from mailconnector._context import context\n"
        "assert context().secrets is secrets.current_registry()\n"
        "print(secrets.redact('x registered-before-the-context y'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"x {secrets.REDACTED} y"


# ------------------------------------------------------------------------------------------- the context
def test_reset_context_gives_fresh_empty_caches(fresh: Context, tmp_path: Path) -> None:
    value = unique_secret()
    secrets.register_secret(value)
    make_ssl_context(TlsSettings())
    provider_for(oauth_conn())
    use_store(Store(tmp_path / "s.db"))
    assert value in fresh.secrets and "s3cret-value" in fresh.secrets  # the connection's client secret too
    assert (len(fresh.tls_contexts), len(fresh.token_providers)) == (1, 1)
    assert fresh.token_store is not None

    new = reset_context()
    assert context() is new and new is not fresh
    assert (len(new.secrets), len(new.tls_contexts), len(new.token_providers), new.token_store) == (0, 0, 0, None)
    assert secrets.current_registry() is new.secrets
    assert secrets.redact(value) == value  # a fresh context knows no secret until one is registered again
    assert value in fresh.secrets  # the old context is left as it was


def test_bounded_cache_drops_the_least_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # used: "b" is now the oldest
    cache.put("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c"), len(cache)) == (None, 1, 3, 2)
    made: list[str] = []

    def factory(key: str, value: int) -> Callable[[], int]:
        def make() -> int:
            made.append(key)
            return value
        return make

    assert cache.get_or_create("a", factory("a", 10)) == 1
    assert cache.get_or_create("d", factory("d", 4)) == 4
    assert made == ["d"] and cache.get("c") is None
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        BoundedCache(0)


# ----------------------------------------------------------------------------------- OAuth2 token providers
def oauth_conn(client_id: str = "c") -> Connection:
    return Connection.from_dict({
        "auth": {"type": "oauth2", "username": "alice@example.test",
                 "oauth2": {"provider": "microsoft365", "grant": "client_credentials", "tenant_id": "t",
                            "client_id": client_id, "client_secret": "s3cret-value"}},
        "smtp": {"host": "smtp.example.test", "security": "starttls"},
        "imap": {"host": "imap.example.test"},
    }, name="c")


def test_the_token_providers_are_bounded(fresh: Context) -> None:
    limit = fresh.token_providers.maxsize
    assert limit == _context.MAX_TOKEN_PROVIDERS
    first = provider_for(oauth_conn("client-0"))
    for i in range(1, limit + 1):
        provider_for(oauth_conn(f"client-{i}"))
    assert len(fresh.token_providers) == limit
    assert provider_for(oauth_conn("client-0")) is not first  # dropped, so made again
    last = provider_for(oauth_conn(f"client-{limit}"))
    assert provider_for(oauth_conn(f"client-{limit}")) is last


def test_use_store_and_forget_providers_act_on_the_current_context(fresh: Context, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    use_store(store)
    assert fresh.token_store is store and provider_for(oauth_conn()).store is store
    forget_providers()
    assert len(fresh.token_providers) == 0 and fresh.token_store is store


# ------------------------------------------------------------------------------------------ TLS contexts
def test_a_tls_context_is_cached_until_its_ca_file_changes(fresh: Context, tmp_path: Path) -> None:
    assert fresh.tls_contexts.maxsize == _context.MAX_TLS_CONTEXTS
    ca_file = tmp_path / "ca.pem"
    first_ca, second_ca = trustme.CA(organization_name="First CA"), trustme.CA(organization_name="Second CA")
    first_ca.cert_pem.write_to_path(str(ca_file))
    tls = TlsSettings(ca_file=ca_file)
    ctx = make_ssl_context(tls)
    assert make_ssl_context(tls) is ctx
    second_ca.cert_pem.write_to_path(str(ca_file))
    renewed = make_ssl_context(tls)
    assert renewed is not ctx
    assert "Second CA" in str(renewed.get_ca_certs()) and "First CA" not in str(renewed.get_ca_certs())


# --------------------------------------------------------------------------------- transformation modules
def test_a_transformation_module_is_imported_without_leaving_the_project_on_sys_path(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    main, helper = f"ctx_tx_{tag}", f"ctx_tx_helper_{tag}"
    (tmp_path / f"{helper}.py").write_text("def mark(record):\n    return {**record, 'seen': True}\n")
    (tmp_path / f"{main}.py").write_text(f"import {helper}\n\ndef tx(record):\n    return {helper}.mark(record)\n")
    (tmp_path / "mailconnector.yaml").write_text(
        "activities:\n  in: {type: file, path: in.jsonl}\n  out: {type: file, path: out.jsonl}\n"
        f"operations:\n  op: {{source: in, target: out, transformation: '{main}:tx'}}\n")
    project = Project.load(tmp_path / "mailconnector.yaml")
    before = list(sys.path)
    try:
        transform = build_transformation(project.operation("op").transformation, project, "op")
        assert transform({"n": 1}) == [{"n": 1, "seen": True}]  # the helper beside it was imported too
        assert sys.path == before and str(tmp_path) not in sys.path
    finally:
        sys.modules.pop(main, None)
        sys.modules.pop(helper, None)
