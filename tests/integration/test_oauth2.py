"""OAuth2 end to end: a real token endpoint on loopback (HTTPS, tests/oauth/server.py), msal and httpx as
the clients, and the sandbox's Dovecot (IMAP) and Postfix (SMTP submission, STARTTLS) checking the JWTs.
Nothing here mocks a protocol: every login is a real XOAUTH2 / OAUTHBEARER exchange."""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauth.server import TokenServer, tls_for_loopback
from pydantic import SecretStr
from typer.testing import CliRunner

from mailconnector.auth import token_provider_for
from mailconnector.auth.oauth2 import forget_providers, jwt_claims, provider_for
from mailconnector.auth.sasl import xoauth2_string
from mailconnector.cli import app
from mailconnector.cli._exit_codes import exit_code_for
from mailconnector.connection import Connection
from mailconnector.errors import AuthenticationError, ConfigError, TLSSecurityError, TransportError
from mailconnector.imap import ImapSession
from mailconnector.project import Project
from mailconnector.sandbox import Sandbox
from mailconnector.smtp import SmtpSession
from mailconnector.state import Store

TENANT = "contoso"


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def ca_bundle_and_server(sandbox: Sandbox,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TokenServer]]:
    key = base64.b64decode(Path(sandbox.info.oauth_key_file).read_text())
    ctx, bundle = tls_for_loopback(tmp_path_factory.mktemp("oauth"), Path(sandbox.info.ca_file))
    server = TokenServer(key, ctx).start()
    for u in sandbox.info.users:
        server.users[u["address"]] = u["password"]
    try:
        yield bundle, server
    finally:
        server.stop()


@pytest.fixture
def idp(ca_bundle_and_server: tuple[Path, TokenServer]) -> Iterator[TokenServer]:
    """The token endpoint, with its counters and lifetimes reset, and no provider remembered."""
    server = ca_bundle_and_server[1]
    server.reset()
    forget_providers()
    yield server
    server.reset()
    forget_providers()


@pytest.fixture
def bundle(ca_bundle_and_server: tuple[Path, TokenServer]) -> Path:
    return ca_bundle_and_server[0]


def address(user: str) -> str:
    return f"{user}@example.test"


@pytest.fixture
def oauth_conn(sandbox: Sandbox, idp: TokenServer, bundle: Path) -> Callable[..., Connection]:
    """``oauth_conn(user, provider=, grant=, mechanism=, **oauth2)`` → a Connection to the sandbox that logs in
    with tokens from ``idp``."""

    def make(user: str = "alice", *, provider: str = "microsoft365", grant: str = "client_credentials",
             mechanism: str = "xoauth2", smtp: str = "submission", imap: str = "imaps",
             **oauth: Any) -> Connection:
        data = sandbox.connection_dict(user, smtp=smtp, imap=imap)
        o: dict[str, Any] = {"provider": provider, "grant": grant, "mechanism": mechanism, **oauth}
        if provider == "microsoft365":
            o.setdefault("tenant_id", TENANT)
            o.setdefault("authority_host", idp.authority_host)
        else:
            o.setdefault("token_url", idp.token_url)
        auth: dict[str, Any] = {"type": "oauth2", "username": address(user), "oauth2": o}
        if grant == "password":
            auth["password"] = sandbox.user(user).password
        data["auth"] = auth
        data["tls"] = {"ca_file": str(bundle)}
        return Connection.from_dict(data, name=f"oauth-{uuid.uuid4().hex[:6]}")

    return make


def new_client(idp: TokenServer, *, mailbox: str | None = "alice", public: bool = False,
               fail_with: tuple[str, int, str] | None = None) -> tuple[str, str | None]:
    cid = f"app-{uuid.uuid4().hex[:8]}"
    secret = None if public else "cs-" + secrets.token_urlsafe(18)
    idp.register_client(cid, secret=secret, mailbox=address(mailbox) if mailbox else None, fail_with=fail_with)
    return cid, secret


def imap_login(conn: Connection) -> str:
    with ImapSession(conn) as imap:
        state = imap.select("INBOX", readonly=True)
        assert state.uidvalidity > 0
        return imap.auth_mechanism or ""


def smtp_login_and_send(conn: Connection, subject: str | None = None) -> str:
    with SmtpSession(conn) as smtp:
        if subject is not None:
            msg = EmailMessage()
            msg["From"] = msg["To"] = conn.auth.username
            msg["Subject"] = subject
            msg.set_content("sent after an OAuth2 login\n")
            # The submission port relays only for authenticated clients: an accepted RCPT proves the login.
            result = smtp.send(conn.auth.username, [conn.auth.username], msg.as_bytes())
            assert result.accepted == [conn.auth.username]
        else:
            code, _ = smtp.check_sender(conn.auth.username)
            assert code == 250
        return smtp.auth_mechanism or ""


def in_maildir(sandbox: Sandbox, user: str, text: str) -> bool:
    root = sandbox.maildir(user)
    return any(text.encode() in f.read_bytes() for sub in ("new", "cur") if (root / sub).is_dir()
               for f in (root / sub).iterdir())


# ------------------------------------------------------------------ happy paths
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("grant", ["client_credentials", "password", "refresh_token"])
def test_microsoft365_grants_log_in_to_imap_and_smtp(sandbox: Sandbox, idp: TokenServer,
                                                    oauth_conn: Callable[..., Connection], grant: str,
                                                    mechanism: str) -> None:
    cid, secret = new_client(idp)
    extra: dict[str, Any] = {"client_id": cid, "client_secret": secret}
    if grant == "refresh_token":
        extra["refresh_token"] = idp.new_refresh_token(cid, address("alice"))
    conn = oauth_conn(grant=grant, mechanism=mechanism, **extra)
    subject = f"oauth-{grant}-{mechanism}-{uuid.uuid4().hex[:8]}"

    assert imap_login(conn) == mechanism.upper()
    assert smtp_login_and_send(conn, subject) == mechanism.upper()

    wait_for(lambda: in_maildir(sandbox, "alice", subject))
    # One token for both servers; ROPC also asks the user realm (a GET), never a second token.
    assert idp.token_requests() == 1
    assert idp.token_requests(grant) == 1


def test_microsoft365_public_client_password_grant(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, _ = new_client(idp, public=True)
    conn = oauth_conn(grant="password", client_id=cid)
    assert imap_login(conn) == "XOAUTH2"
    form = next(r.form for r in idp.requests if r.grant_type == "password")
    assert "client_secret" not in form and form["username"] == address("alice")


@pytest.mark.parametrize("client_auth", ["post", "basic"])
@pytest.mark.parametrize("grant", ["client_credentials", "password", "refresh_token"])
def test_generic_token_endpoint_grants(idp: TokenServer, oauth_conn: Callable[..., Connection], grant: str,
                                       client_auth: str) -> None:
    cid, secret = new_client(idp)
    extra: dict[str, Any] = {"client_id": cid, "client_secret": secret, "client_auth": client_auth,
                             "scopes": ["mail.read", "mail.send"]}
    if grant == "refresh_token":
        extra["refresh_token"] = idp.new_refresh_token(cid, address("alice"))
    conn = oauth_conn(provider="generic", grant=grant, mechanism="oauthbearer", **extra)
    assert imap_login(conn) == "OAUTHBEARER"
    assert smtp_login_and_send(conn) == "OAUTHBEARER"
    assert idp.token_requests() == 1
    form = next(r.form for r in idp.requests if r.grant_type == grant)
    assert form["scope"] == "mail.read mail.send"


def test_google_refresh_token_grant(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, secret = new_client(idp)
    configured = idp.new_refresh_token(cid, address("alice"))
    conn = oauth_conn(provider="google", grant="refresh_token", client_id=cid, client_secret=secret,
                      refresh_token=configured)
    assert imap_login(conn) == "XOAUTH2"
    assert smtp_login_and_send(conn) == "XOAUTH2"
    form = next(r.form for r in idp.requests if r.grant_type == "refresh_token")
    assert form == {"grant_type": "refresh_token", "client_id": cid, "client_secret": secret,
                    "refresh_token": configured}
    assert idp.token_requests() == 1


def test_a_rotated_refresh_token_is_kept_and_used(idp: TokenServer, oauth_conn: Callable[..., Connection],
                                                  tmp_path: Path) -> None:
    """Endpoints that rotate refresh tokens (and may revoke the old one) get the newest one back."""
    idp.rotate_refresh_tokens = True
    cid, secret = new_client(idp)
    configured = idp.new_refresh_token(cid, address("alice"))
    conn = oauth_conn(provider="generic", grant="refresh_token", client_id=cid, client_secret=secret,
                      refresh_token=configured)
    db = tmp_path / "state.db"
    provider = provider_for(conn, store=Store(db))
    provider.token()
    provider.invalidate()
    forget_providers()  # a new process: the rotated token comes from the store
    provider_for(conn, store=Store(db))
    assert imap_login(conn) == "XOAUTH2"
    forms = [r.form for r in idp.requests if r.grant_type == "refresh_token"]
    assert len(forms) == 2 and forms[0]["refresh_token"] == configured
    assert forms[1]["refresh_token"] != configured and forms[1]["refresh_token"] in idp.refresh_tokens
    # Revoked meanwhile: the provider falls back to the configured refresh token once.
    for rt in [r for r in idp.refresh_tokens if r != configured]:
        del idp.refresh_tokens[rt]
    provider = provider_for(conn)
    provider.invalidate()
    provider.token(force_refresh=True)
    forms = [r.form for r in idp.requests if r.grant_type == "refresh_token"]
    assert [f["refresh_token"] == configured for f in forms[2:]] == [False, True]


def test_google_service_account_with_domain_wide_delegation(idp: TokenServer, oauth_conn: Callable[..., Connection],
                                                            tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = f"sa-{uuid.uuid4().hex[:6]}@project.iam.gserviceaccount.com"
    idp.service_accounts[email] = key.public_key()
    sa_file = tmp_path / "sa.json"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sa_file.write_text(json.dumps({"type": "service_account", "client_email": email, "private_key": pem,
                                   "private_key_id": "k1", "token_uri": idp.token_url}))
    conn = oauth_conn("bob", provider="google", grant="client_credentials", service_account_file=str(sa_file),
                      token_url=None)
    # The endpoint checked the RS256 signature, the audience and the lifetime; `sub` is the mailbox.
    assert imap_login(conn) == "XOAUTH2"
    assert idp.token_requests("urn:ietf:params:oauth:grant-type:jwt-bearer") == 1


# ----------------------------------------------------------- one token, many logins
def test_twenty_smtp_logins_cost_one_token_request(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, secret = new_client(idp)
    conn = oauth_conn(client_id=cid, client_secret=secret)
    t0 = time.perf_counter()
    for _ in range(20):
        smtp = SmtpSession(conn).connect()
        smtp.close()
    elapsed = time.perf_counter() - t0
    assert idp.token_requests() == 1
    assert elapsed < 10, f"20 logins took {elapsed:.1f} s"


def test_concurrent_sessions_share_one_token(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, secret = new_client(idp)
    conn = oauth_conn(grant="password", client_id=cid, client_secret=secret)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait()
            imap_login(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert idp.token_requests() == 1


def test_the_store_keeps_the_token_for_the_next_process(idp: TokenServer, oauth_conn: Callable[..., Connection],
                                                        tmp_path: Path) -> None:
    cid, secret = new_client(idp)
    conn = oauth_conn(client_id=cid, client_secret=secret)
    db = tmp_path / "state.db"
    provider_for(conn, store=Store(db)).token()
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    forget_providers()  # as if this were a new process
    provider = provider_for(conn, store=Store(db))
    assert imap_login(conn) == "XOAUTH2"
    assert idp.token_requests() == 1
    # The store holds the token under a hashed key, never the secret.
    raw = db.read_bytes() + (tmp_path / "state.db-wal").read_bytes() if (tmp_path / "state.db-wal").exists() \
        else db.read_bytes()
    assert secret is not None and secret.encode() not in raw
    provider.invalidate()
    assert Store(db).get_token(provider.key) is None


# ------------------------------------------------------------ refresh mid-session
def test_a_token_that_expires_is_refused_once_refreshed_and_the_work_goes_on(
        idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    """The endpoint says the token lasts an hour, but the JWT says 2 s (a revoked or clock-skewed token looks
    like this): the cached token is used, refused (XOAUTH2: status 401; OAUTHBEARER: invalid_token), refreshed
    once, and the login succeeds.
    Dovecot checks ``exp`` at login only, so the session opened before keeps working."""
    cid_i, secret_i = new_client(idp)
    cid_s, secret_s = new_client(idp)
    imap_conn = oauth_conn(client_id=cid_i, client_secret=secret_i)
    smtp_conn = oauth_conn(client_id=cid_s, client_secret=secret_s, mechanism="oauthbearer")
    idp.jwt_lifetime, idp.expires_in = 1, 3600
    long_session = ImapSession(imap_conn).connect()
    try:
        smtp_login_and_send(smtp_conn)
        assert idp.token_requests() == 2
        # Dovecot compares ``exp`` with the current whole second: wait until it is past for both tokens.
        exp = max(jwt_claims(provider_for(c).token())["exp"] for c in (imap_conn, smtp_conn))  # type: ignore[index]
        time.sleep(max(0.0, exp + 1.05 - time.time()))
        idp.jwt_lifetime, idp.expires_in = 3600, None

        assert long_session.select("INBOX").exists >= 0  # the open session goes on
        assert imap_login(imap_conn) == "XOAUTH2"  # refused once, refreshed, accepted
        assert smtp_login_and_send(smtp_conn) == "OAUTHBEARER"
        assert idp.token_requests("client_credentials") == 4  # one refresh per client
        imap_login(imap_conn)
        smtp_login_and_send(smtp_conn)
        assert idp.token_requests() == 4  # and the refreshed tokens are reused
    finally:
        long_session.close()


# --------------------------------------------------------------------- failures
def _no_secret_in(exc: BaseException, *values: str | None) -> None:
    text = f"{exc} {getattr(exc, 'hint', '')} {exc!r}"
    for v in values:
        if v:
            assert v not in text


def test_wrong_client_secret_microsoft(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, _ = new_client(idp)
    wrong = "cs-wrong-" + secrets.token_urlsafe(8)
    conn = oauth_conn(client_id=cid, client_secret=wrong)
    with pytest.raises(AuthenticationError) as info:
        token_provider_for(conn).token()
    assert "AADSTS7000215" in info.value.message and "wrong client secret" in info.value.message
    assert info.value.hint and "Value (not its Secret ID)" in info.value.hint
    _no_secret_in(info.value, wrong)
    # Through a session: the same error, from the authentication step.
    with pytest.raises(AuthenticationError, match="AADSTS7000215"):
        ImapSession(conn).connect()


def test_wrong_client_secret_generic(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, _ = new_client(idp)
    wrong = "cs-wrong-" + secrets.token_urlsafe(8)
    conn = oauth_conn(provider="generic", client_id=cid, client_secret=wrong)
    with pytest.raises(AuthenticationError) as info:
        SmtpSession(conn).connect()
    assert "invalid_client" in info.value.message and idp.token_url in info.value.message
    assert info.value.hint and "client_secret" in info.value.hint
    _no_secret_in(info.value, wrong)


@pytest.mark.parametrize(("case", "code", "words", "hint_words"), [
    ("mfa", 50076, "multi-factor authentication is required", "cannot do MFA"),
    ("password", 50126, "wrong username or password", "auth.password"),
    ("consent", 65001, "consent is missing", "Grant admin consent"),
    ("unknown app", 700016, "application was not found in this tenant", "client_id"),
])
def test_microsoft_errors_are_explained(idp: TokenServer, oauth_conn: Callable[..., Connection], case: str,
                                        code: int, words: str, hint_words: str) -> None:
    if case == "consent":
        cid, secret = new_client(idp, fail_with=("invalid_grant", 65001, "The user or administrator has not "
                                                 "consented to use the application."))
    else:
        cid, secret = new_client(idp)
    if case == "unknown app":
        cid = "app-never-registered"
    if case == "mfa":
        idp.mfa_users.add(address("carol"))
    conn = oauth_conn("carol", grant="password", client_id=cid, client_secret=secret)
    if case == "password":
        conn = conn.model_copy(update={"auth": conn.auth.model_copy(update={"password": SecretStr("not-hers")})})
    with pytest.raises(AuthenticationError) as info:
        token_provider_for(conn).token()
    assert f"AADSTS{code}" in info.value.message and words in info.value.message
    assert info.value.hint and hint_words in info.value.hint
    assert exit_code_for(info.value) == 4


@pytest.mark.parametrize("proto", ["imap", "smtp"])
def test_a_token_for_another_user_is_refused_with_words(idp: TokenServer, oauth_conn: Callable[..., Connection],
                                                        proto: str) -> None:
    cid, secret = new_client(idp, mailbox="bob")  # the app's tokens name bob
    conn = oauth_conn(client_id=cid, client_secret=secret)
    with pytest.raises(AuthenticationError) as info:
        (imap_login if proto == "imap" else smtp_login_and_send)(conn)
    assert "issued for bob@example.test, not for alice@example.test" in info.value.message
    assert info.value.hint and "alice@example.test" in info.value.hint
    assert "401" in info.value.message  # the server's challenge, decoded
    assert idp.token_requests() == 2  # refreshed once, not more


def test_an_expired_token_is_refused_with_words(idp: TokenServer, oauth_conn: Callable[..., Connection]) -> None:
    cid, secret = new_client(idp)
    conn = oauth_conn(client_id=cid, client_secret=secret)
    idp.jwt_lifetime, idp.expires_in = -30, 3600  # the endpoint hands out tokens already expired
    with pytest.raises(AuthenticationError) as info:
        imap_login(conn)
    assert "the token expired" in info.value.message
    assert info.value.hint and "clock" in info.value.hint
    assert idp.token_requests() == 2


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("provider", ["microsoft365", "generic"])
def test_an_unreachable_token_endpoint(idp: TokenServer, oauth_conn: Callable[..., Connection],
                                       provider: str) -> None:
    port = _closed_port()
    where = {"authority_host": f"127.0.0.1:{port}"} if provider == "microsoft365" else \
        {"token_url": f"https://127.0.0.1:{port}/token"}
    conn = oauth_conn(provider=provider, client_id="x", client_secret="cs-unused-here", **where)
    with pytest.raises(TransportError) as info:
        token_provider_for(conn).token()
    assert "unreachable: connection refused" in info.value.message and f"127.0.0.1:{port}" in info.value.message
    assert info.value.retryable and exit_code_for(info.value) == 5
    with pytest.raises(TransportError, match="unreachable"):
        imap_login(conn)


@pytest.mark.parametrize("provider", ["microsoft365", "generic"])
def test_the_token_endpoint_certificate_must_be_trusted(sandbox: Sandbox, idp: TokenServer,
                                                         oauth_conn: Callable[..., Connection],
                                                         provider: str) -> None:
    """tls.ca_file decides, not REQUESTS_CA_BUNDLE / SSL_CERT_FILE (set in this environment)."""
    cid, secret = new_client(idp)
    conn = oauth_conn(provider=provider, client_id=cid, client_secret=secret)
    sandbox_ca_only = conn.tls.model_copy(update={"ca_file": Path(sandbox.info.ca_file)})
    only_sandbox_ca = conn.model_copy(update={"tls": sandbox_ca_only})
    with pytest.raises(TLSSecurityError) as info:
        provider_for(only_sandbox_ca).token()
    assert "certificate not trusted" in info.value.message and "tls.ca_file" in (info.value.hint or "")


def test_missing_service_account_file_is_a_config_error(idp: TokenServer, oauth_conn: Callable[..., Connection],
                                                        tmp_path: Path) -> None:
    conn = oauth_conn(provider="google", grant="client_credentials", token_url=None,
                      service_account_file=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="does not exist"):
        token_provider_for(conn).token()


# -------------------------------------------------------------------------- CLI
def _project(tmp_path: Path, sandbox: Sandbox, bundle: Path, name: str, oauth: dict[str, Any],
             user: str = "alice") -> Path:
    data = sandbox.connection_dict(user)
    data["auth"] = {"type": "oauth2", "username": address(user), "oauth2": oauth}
    data["tls"] = {"ca_file": str(bundle)}
    path = tmp_path / "mailconnector.yaml"
    path.write_text(yaml.safe_dump({"connections": {name: data}}, sort_keys=False))
    return path


def test_cli_test_passes_every_step_and_shows_no_secret(sandbox: Sandbox, idp: TokenServer, bundle: Path,
                                                         tmp_path: Path) -> None:
    cid, secret = new_client(idp)
    assert secret is not None
    rt = idp.new_refresh_token(cid, address("alice"))
    (tmp_path / "client.secret").write_text(secret)
    (tmp_path / "alice.rt").write_text(rt)
    project = _project(tmp_path, sandbox, bundle, "office", {
        "provider": "microsoft365", "grant": "refresh_token", "tenant_id": TENANT,
        "authority_host": idp.authority_host, "client_id": cid, "client_secret": "${file:client.secret}",
        "refresh_token": "${file:alice.rt}"})
    result = CliRunner().invoke(app, ["test", "office", "--project", str(project), "--debug",
                                      "--verbose-protocol"])
    output = result.output  # stdout and stderr (the logs)
    assert result.exit_code == 0, output
    assert "token acquisition" in output and "every step passed" in output
    assert "OAuth2 token obtained (microsoft365 refresh_token)" in output  # --debug
    assert "C: AUTH XOAUTH2 ****" in output and "AUTHENTICATE ****" in output  # --verbose-protocol, redacted
    tokens = [t for t in idp.issued if t.count(".") == 2]
    assert tokens, "the endpoint issued an access token"
    for value in [secret, rt, *idp.issued]:  # no secret at all, in clear or in base64
        assert value not in output
        assert base64.b64encode(value.encode()).decode()[:40] not in output
    for token in tokens:
        assert base64.b64encode(xoauth2_string(address("alice"), token)).decode()[:60] not in output
    assert idp.token_requests() == 1


def test_cli_test_explains_a_wrong_secret_in_the_token_step(sandbox: Sandbox, idp: TokenServer, bundle: Path,
                                                             tmp_path: Path) -> None:
    cid, _ = new_client(idp)
    wrong = "cs-wrong-" + secrets.token_urlsafe(10)
    project = _project(tmp_path, sandbox, bundle, "office", {
        "provider": "microsoft365", "grant": "client_credentials", "tenant_id": TENANT,
        "authority_host": idp.authority_host, "client_id": cid, "client_secret": wrong})
    result = CliRunner().invoke(app, ["test", "office", "--project", str(project), "--json"])
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    step = report["steps"][0]
    assert step["name"] == "token acquisition" and step["status"] == "failed"
    assert "AADSTS7000215" in step["error"] and "Secret ID" in step["hint"]
    assert wrong not in result.output


def test_auth_login_device_code_saves_the_refresh_token(sandbox: Sandbox, idp: TokenServer, bundle: Path,
                                                        tmp_path: Path) -> None:
    cid, _ = new_client(idp, public=True)
    idp.device_user = address("alice")
    oauth = {"provider": "microsoft365", "grant": "refresh_token", "tenant_id": TENANT,
             "authority_host": idp.authority_host, "client_id": cid,
             "refresh_token": "${file:.mailconnector/secrets/office.refresh_token}"}
    project = _project(tmp_path, sandbox, bundle, "office", oauth)
    result = CliRunner().invoke(app, ["auth", "login", "office", "--project", str(project)])
    assert result.exit_code == 0, result.output
    saved = tmp_path / ".mailconnector" / "secrets" / "office.refresh_token"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert oct(saved.parent.stat().st_mode & 0o777) == "0o700"
    rt = saved.read_text().strip()
    assert idp.refresh_tokens[rt] == (cid, address("alice"))
    assert "enter the code ABCD-EFGH" in result.output  # the instructions, as the endpoint gave them
    assert "${file:.mailconnector/secrets/office.refresh_token}" in result.stdout
    for value in [rt, *idp.issued]:
        assert value not in result.output
    assert idp.token_requests("urn:ietf:params:oauth:grant-type:device_code") == 1
    # The project file as written before the login now works.
    conn = Project.load(project).connection("office")
    assert imap_login(conn) == "XOAUTH2"


def test_auth_login_google_installed_app_flow(sandbox: Sandbox, idp: TokenServer, bundle: Path,
                                              tmp_path: Path) -> None:
    """Run the real command: read the URL it prints, 'sign in' at the endpoint, paste the address back."""
    cid, secret = new_client(idp)
    idp.device_user = address("bob")
    project = _project(tmp_path, sandbox, bundle, "gmail", {
        "provider": "google", "grant": "refresh_token", "client_id": cid, "client_secret": secret,
        "token_url": idp.token_url}, user="bob")
    exe = Path(sys.executable).with_name("mailconnector")
    env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    proc = subprocess.Popen([str(exe), "auth", "login", "gmail", "--project", str(project), "--authorization-url",
                             idp.authorization_url, "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stderr is not None and proc.stdin is not None
        url = ""
        deadline = time.monotonic() + 20
        while not url.startswith(idp.authorization_url) and time.monotonic() < deadline:
            url = proc.stderr.readline().strip()
        assert url.startswith(idp.authorization_url), "the command printed no sign-in address"
        assert "code_challenge=" in url and "access_type=offline" in url
        ctx = ssl.create_default_context(cafile=str(bundle))
        redirect = httpx.get(url, verify=ctx, follow_redirects=False).headers["location"]
        assert redirect.startswith("http://localhost?code=")
        out, err = proc.communicate(redirect + "\n", timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result = json.loads(out)
    saved = Path(result["file"])
    rt = saved.read_text().strip()
    assert idp.refresh_tokens[rt] == (cid, address("bob"))
    assert result["reference"] == "${file:.mailconnector/secrets/gmail.refresh_token}"
    assert rt not in out + err and (secret or "") not in out + err
    form = next(r.form for r in idp.requests if r.grant_type == "authorization_code")
    assert form["code_verifier"] and form["redirect_uri"] == "http://localhost"
