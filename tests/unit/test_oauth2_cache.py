"""The token cache: when a token is reused, when it is refreshed, what the store keeps, and that no secret
leaks into keys, reprs or messages. The token endpoint is replaced by a scripted ``TokenSource`` (the cache's
own interface, not a protocol): the protocol side is tested end to end in tests/integration/test_oauth2.py."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailconnector import secrets
from mailconnector.auth.oauth2 import (
    CachingTokenProvider,
    Grant,
    _microsoft_error,
    cache_key,
    explain_refusal,
    forget_providers,
    jwt_claims,
    provider_for,
    use_store,
)
from mailconnector.connection import Connection
from mailconnector.errors import AuthenticationError, ConfigError
from mailconnector.state import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Hands out numbered tokens with a given lifetime; can refuse refresh tokens; counts its calls."""

    description = "scripted"

    def __init__(self, lifetime: float = 3600, *, delay: float = 0.0, rotate: bool = False) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.uses_refresh_token = rotate
        self.calls: list[str | None] = []
        self.forgotten = 0
        self.refused: set[str] = set()
        self._lock = threading.Lock()

    def fetch(self, refresh_token: str | None) -> Grant:
        with self._lock:
            self.calls.append(refresh_token)
            n = len(self.calls)
        if self.delay:
            time.sleep(self.delay)
        if refresh_token in self.refused:
            raise AuthenticationError("refresh token refused")
        rt = f"rotated-{n}-{uuid.uuid4().hex}" if self.uses_refresh_token else None
        return Grant(f"access-{n}-{uuid.uuid4().hex}", self.lifetime, rt)

    def forget(self) -> None:
        self.forgotten += 1


def make(source: Source, clock: Clock, store: Store | None = None, key: str = "k") -> CachingTokenProvider:
    return CachingTokenProvider(key, source, store=store, clock=clock)


# ------------------------------------------------------------------- reuse
def test_one_fetch_for_many_calls() -> None:
    source, clock = Source(), Clock()
    p = make(source, clock)
    tokens = {p.token() for _ in range(1000)}
    assert len(tokens) == 1 and len(source.calls) == 1 and p.fetches == 1


def test_an_hour_token_is_refreshed_five_minutes_before_it_expires() -> None:
    source, clock = Source(3600), Clock()
    p = make(source, clock)
    first = p.token()
    clock.now += 3600 - 301
    assert p.token() == first
    clock.now += 2  # 299 s left
    second = p.token()
    assert second != first and len(source.calls) == 2


def test_a_short_token_is_refreshed_at_a_tenth_of_its_lifetime() -> None:
    source, clock = Source(60), Clock()
    p = make(source, clock)
    first = p.token()
    clock.now += 53.9  # 6.1 s left: still fresh (a tenth is 6 s)
    assert p.token() == first
    clock.now += 0.2
    assert p.token() != first


def test_concurrent_callers_wait_for_one_fetch() -> None:
    source, clock = Source(delay=0.05), Clock()
    p = make(source, clock)
    barrier = threading.Barrier(16)
    seen: list[str] = []

    def call() -> None:
        barrier.wait()
        seen.append(p.token())

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 16 and len(set(seen)) == 1 and len(source.calls) == 1


# --------------------------------------------------------- refusal, refresh
def test_invalidate_then_force_refresh_fetches_a_new_token() -> None:
    source, clock = Source(), Clock()
    p = make(source, clock)
    first = p.token()
    p.invalidate()
    assert source.forgotten == 1
    assert p.token(force_refresh=True) != first and len(source.calls) == 2


def test_force_refresh_without_invalidate_always_fetches() -> None:
    source, clock = Source(), Clock()
    p = make(source, clock)
    p.token()
    p.token(force_refresh=True)
    p.token(force_refresh=True)
    assert len(source.calls) == 3


def test_many_sessions_refused_at_once_cause_one_refresh() -> None:
    """Eight sessions were refused the same stale token; each invalidates, then asks for a fresh one."""
    source, clock = Source(delay=0.02), Clock()
    p = make(source, clock)
    p.token()
    invalidated = threading.Barrier(8)
    seen: list[str] = []

    def session() -> None:
        p.invalidate()
        invalidated.wait()
        seen.append(p.token(force_refresh=True))

    threads = [threading.Thread(target=session) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(seen)) == 1
    assert len(source.calls) == 2  # the first token, and one refresh for all eight


# -------------------------------------------------------------------- store
def test_the_store_serves_the_next_provider(tmp_path: Path) -> None:
    store, clock = Store(tmp_path / "s.db"), Clock()
    a = make(Source(), clock, store)
    token = a.token()
    second_source = Source()
    b = make(second_source, clock, Store(tmp_path / "s.db"))  # another process
    assert b.token() == token and second_source.calls == []


def test_a_stale_token_in_the_store_is_not_used(tmp_path: Path) -> None:
    store, clock = Store(tmp_path / "s.db"), Clock()
    token = make(Source(3600), clock, store).token()
    clock.now += 3400
    source = Source()
    assert make(source, clock, store).token() != token and len(source.calls) == 1


def test_invalidate_removes_the_token_from_the_store(tmp_path: Path) -> None:
    store, clock = Store(tmp_path / "s.db"), Clock()
    p = make(Source(), clock, store)
    p.token()
    assert store.get_token("k") is not None
    p.invalidate()
    assert store.get_token("k") is None


def test_a_rotated_refresh_token_is_kept_and_a_refused_one_falls_back(tmp_path: Path) -> None:
    store, clock = Store(tmp_path / "s.db"), Clock()
    source = Source(rotate=True)
    p = make(source, clock, store)
    p.token()
    assert source.calls == [None]  # the configured refresh token
    rotated = store.get_token("k:rt")
    assert rotated is not None
    other = Source(rotate=True)
    q = make(other, clock, Store(tmp_path / "s.db"))
    q.invalidate()
    q.token(force_refresh=True)
    assert other.calls == [rotated[0]]
    # Revoked: the configured one is tried once, and the new rotation stored.
    newest = store.get_token("k:rt")
    assert newest is not None
    other.refused.add(newest[0])
    q.invalidate()
    q.token(force_refresh=True)
    assert other.calls[-2:] == [newest[0], None]


def test_tokens_are_registered_for_redaction() -> None:
    p = make(Source(), Clock())
    token = p.token()
    assert secrets.redact(f"header {token} trailer") == "header **** trailer"
    assert token not in repr(p)


# ----------------------------------------------------------- keys, registry
def conn(password: str | None = None, **oauth: Any) -> Connection:
    o = {"provider": "microsoft365", "grant": "client_credentials", "tenant_id": "t", "client_id": "c",
         "client_secret": "s3cret-value", **oauth}
    auth: dict[str, Any] = {"type": "oauth2", "username": "alice@example.test", "oauth2": o}
    if password is not None:
        auth["password"] = password
    return Connection.from_dict({
        "auth": auth,
        "smtp": {"host": "smtp.example.test", "security": "starttls"},
        "imap": {"host": "imap.example.test"},
    }, name="c")


def test_cache_key_is_a_hash_without_secrets() -> None:
    key = cache_key(conn())
    assert key.startswith("oauth2:") and len(key) == len("oauth2:") + 64
    assert "s3cret" not in key and "alice" not in key
    assert cache_key(conn()) == key
    assert cache_key(conn(client_secret="another-client-secret-9f2")) != key
    assert cache_key(conn(scopes=["https://outlook.office365.com/IMAP.AccessAsUser.All"])) != key
    ropc = conn(grant="password", password="pw-one-1234")
    assert cache_key(ropc) != key and cache_key(ropc) != cache_key(conn(grant="password", password="pw-two-1234"))
    with_user = conn().model_copy(update={"auth": conn().auth.model_copy(update={"username": "bob@example.test"})})
    assert cache_key(with_user) != key


def test_provider_for_shares_one_provider_per_settings(tmp_path: Path) -> None:
    forget_providers()
    try:
        a, b = provider_for(conn()), provider_for(conn())
        assert a is b
        assert provider_for(conn(client_id="other")) is not a
        store = Store(tmp_path / "s.db")
        use_store(store)
        assert provider_for(conn(client_id="third")).store is store
        assert provider_for(conn(client_id="fourth", token_cache=False)).store is None
    finally:
        use_store(None)
        forget_providers()


def test_basic_auth_connections_have_no_provider() -> None:
    basic = Connection.from_dict({"auth": {"username": "a@example.test", "password": "pw-12345"},
                                  "imap": {"host": "imap.example.test"}, "activities": "read"}, name="b")
    with pytest.raises(ConfigError, match="does not use OAuth2"):
        provider_for(basic)


# ------------------------------------------------------------------ words
def jwt(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


def test_jwt_claims() -> None:
    assert jwt_claims(jwt({"sub": "x", "exp": 5})) == {"sub": "x", "exp": 5}
    assert jwt_claims("opaque-token") is None
    assert jwt_claims("a.%%%.c") is None
    assert jwt_claims(f"a.{base64.urlsafe_b64encode(b'[1]').decode()}.c") is None


def test_explain_an_expired_token() -> None:
    token = jwt({"sub": "alice@example.test", "exp": int(time.time()) - 90})
    why, hint = explain_refusal(conn(), token, "NO [AUTHENTICATIONFAILED]")
    assert "the token expired 9" in why and "clock" in hint and token not in why + hint


def test_explain_a_token_for_someone_else() -> None:
    token = jwt({"upn": "bob@example.test", "exp": int(time.time()) + 600})
    why, hint = explain_refusal(conn(), token, "", login="Alice@example.test")
    assert why == "; the token was issued for bob@example.test, not for alice@example.test"
    assert "alice@example.test" in hint


def test_explain_a_graph_token() -> None:
    token = jwt({"aud": "https://graph.microsoft.com", "exp": int(time.time()) + 600})
    why, hint = explain_refusal(conn(), token)
    assert "Microsoft Graph" in why and "outlook.office365.com/.default" in hint


def test_explain_exchange_online_refusals() -> None:
    why, hint = explain_refusal(conn(), "opaque", "535 5.7.3 Authentication unsuccessful")
    assert why == "" and "New-ServicePrincipal" in hint and "Add-MailboxPermission" in hint and "SMTP AUTH" in hint
    why, hint = explain_refusal(conn(), "opaque", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication "
                                "is disabled for the Mailbox")
    assert "SMTP AUTH is disabled" in why and "Set-CASMailbox" in hint
    _, hint = explain_refusal(conn(grant="refresh_token", refresh_token="rt-value-1234"), "opaque", "NO")
    assert "IMAP.AccessAsUser.All" in hint


def test_explain_google_and_others() -> None:
    google = conn(provider="google", grant="refresh_token", refresh_token="rt-value-1234", tenant_id=None)
    assert "https://mail.google.com/" in explain_refusal(google, "opaque")[1]
    generic = conn(provider="generic", token_url="https://idp.example.test/token")
    assert "unexpired" in explain_refusal(generic, "opaque")[1]


@pytest.mark.parametrize(("code", "words"), [
    (7000215, "wrong client secret"), (7000222, "expired"), (65001, "consent"), (700016, "not found in this tenant"),
    (50126, "wrong username or password"), (50076, "multi-factor"), (50079, "multi-factor"),
    (700082, "refresh token has expired"),
])
def test_aadsts_codes_are_explained(code: int, words: str) -> None:
    err = _microsoft_error({"error": "invalid_grant", "error_codes": [code],
                            "error_description": f"AADSTS{code}: words. Trace ID: abc Timestamp: now"}, "password")
    assert isinstance(err, AuthenticationError)
    assert f"AADSTS{code}" in err.message and words in err.message and "Trace ID" not in err.message
    assert err.hint


def test_an_unknown_aadsts_code_still_says_what_it_can() -> None:
    err = _microsoft_error({"error": "invalid_request", "error_description": "AADSTS999999: something new"},
                           "client_credentials")
    assert "AADSTS999999" in err.message and "something new" in err.message
    assert err.hint and "sign-in" in err.hint
