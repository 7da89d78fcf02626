"""Shared fixtures: one real sandbox (Dovecot + Postfix on loopback) per test session, started through
the same module as ``mailconnector sandbox``, and helpers to build connections and poll mailboxes."""

from __future__ import annotations

import email
import os
import time
import uuid
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from services.cluster import PW_VAR, Cluster, flush, write_cluster_project
from services.console import TOKEN, ConsoleProject, RunningConsole, start_console, stop_console, write_console_project
from services.cyrus import CyrusNotInstalled, CyrusServer
from starlette.testclient import TestClient

from mailconnector._cluster import PostgresNotInstalled, PostgresServer, RedisNotInstalled, RedisServer
from mailconnector.connection import Connection
from mailconnector.console import create_app
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    # gina: tests/state only; hana: the password tests of the interop matrix (they change her password);
    # ivan: the console's tests only
    sbx = Sandbox.start(users=("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hana", "ivan"))
    try:
        yield sbx
    finally:
        sbx.remove()


@pytest.fixture
def make_conn(sandbox: Sandbox) -> Callable[..., Connection]:
    """``make_conn(user="alice", smtp="submission", imap="imaps", **overrides)`` → a validated Connection."""

    def make(user: str = "alice", *, smtp: str = "submission", imap: str = "imaps", name: str | None = None,
             **overrides: Any) -> Connection:
        data = sandbox.connection_dict(user, smtp=smtp, imap=imap)
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Connection.from_dict(data, name=name or f"{user}-{uuid.uuid4().hex[:6]}")

    return make


@pytest.fixture
def fresh_folder(sandbox: Sandbox, make_conn: Callable[..., Connection]) -> Iterator[Callable[[str], str]]:
    """Create uniquely named folders for one test (in any user's mailbox) and delete them afterwards."""
    made: list[tuple[str, str]] = []

    def make(user: str = "alice") -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        with ImapSession(make_conn(user)) as imap:
            imap.create_folder(name)
        made.append((user, name))
        return name

    yield make
    for user, name in made:
        try:
            with ImapSession(make_conn(user)) as imap:
                if imap.folder_exists(name):
                    imap.delete_folder(name)
        except Exception:
            pass


def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy (delivery through Postfix into Dovecot is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def cyrus() -> Iterator[CyrusServer]:
    """A second IMAP server implementation (Cyrus 3.6), with its own users; see tests/services/cyrus.py.

    Not installed is a failure, never a skip: ``./dev setup`` installs it, so missing means set up wrong.
    """
    missing = ""
    try:
        server = CyrusServer.start({"alice": "alice-" + uuid.uuid4().hex[:8], "bob": "bob-" + uuid.uuid4().hex[:8]})
    except CyrusNotInstalled as exc:
        missing = str(exc)  # failed outside the except block, so the message stands alone
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return tmp_path


# -- PostgreSQL: one real throwaway server per session, one fresh database per test ----------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


S = TypeVar("S", PostgresServer, RedisServer)


def _session_server(server: S, not_installed: type[Exception]) -> Iterator[S]:
    """Start a throwaway server for the session and stop it after. Missing binaries fail the tests in CI (the
    machine was set up wrong) and skip them locally."""
    try:
        server.start()
    except not_installed as exc:
        if _in_ci():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A started PostgreSQL server on 127.0.0.1 (stopped and its directory removed at session end).

    Missing binaries fail the tests in CI (the machine was set up wrong) and skip them locally.
    """
    yield from _session_server(PostgresServer(), PostgresNotInstalled)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a database made for this test alone (owner ``mc``, password ``mc-secret``), dropped afterwards."""
    name = f"mc_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        if postgres_server.running:
            postgres_server.drop_database(name)


def received(sandbox: Sandbox, user: str, tok: str, count: int = 1) -> list[EmailMessage]:
    """The messages in ``user``'s INBOX whose subject holds ``tok``, once at least ``count`` arrived (read
    with EXAMINE: looking changes nothing)."""
    conn = Connection.from_dict(sandbox.connection_dict(user), name=f"received-{user}")

    def look() -> list[bytes] | None:
        with ImapSession(conn) as imap:
            imap.select("INBOX", readonly=True)
            uids = imap.search(["SUBJECT", tok])
            return [m.raw for m in imap.fetch(uids)] if len(uids) >= count else None

    out = []
    for raw in wait_for(look):
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out



# -- the web console: its project on the sandbox, the app in this process, the command in a child process ---
@pytest.fixture
def console_project(tmp_path: Path, sandbox: Sandbox, fresh_folder: Callable[[str], str]) -> ConsoleProject:
    from services.console import USER

    return write_console_project(tmp_path, sandbox, fresh_folder(USER))


@pytest.fixture
def api(console_project: ConsoleProject) -> Iterator[TestClient]:
    """The console's API as a script uses it: Authorization: Bearer."""
    with TestClient(create_app(console_project.path, token=TOKEN), base_url="http://127.0.0.1:8025",
                    headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def browser_client(console_project: ConsoleProject) -> Iterator[TestClient]:
    """The console's pages as a browser sees them: the cookie set by /?token=... (the CSRF header is the
    test's to send, see services.console.csrf_of)."""
    with TestClient(create_app(console_project.path, token=TOKEN), base_url="http://127.0.0.1:8025") as client:
        answer = client.get(f"/?token={TOKEN}", follow_redirects=False)
        assert answer.status_code == 303 and "mailconnector_console" in client.cookies
        yield client


@pytest.fixture
def running_console(console_project: ConsoleProject) -> Iterator[RunningConsole]:
    """`mailconnector console --port 0` serving the console project in a child process."""
    console = start_console(console_project.path)
    try:
        yield console
    finally:
        if console.process.poll() is None:
            stop_console(console)


# -- Distributed runs: a real Redis (one per session, emptied before each test), PostgreSQL, the sandbox ------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A started Redis on 127.0.0.1, nothing saved to disk (missing: fails in CI, skips locally)."""
    yield from _session_server(RedisServer(), RedisNotInstalled)


@pytest.fixture
def cluster(tmp_path: Path, sandbox: Sandbox, postgres_url: str, redis_server: RedisServer) -> Iterator[Cluster]:
    flush(redis_server)
    write_cluster_project(tmp_path, sandbox, state=postgres_url, broker=redis_server.url)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAILCONNECTOR_PROJECT", "MAILCONNECTOR_STATE", "MAILCONNECTOR_BROKER")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", PW_VAR: sandbox.info.password("alice")})
    made = Cluster(tmp_path, env, postgres_url, redis_server.url)
    try:
        yield made
    finally:
        made.stop_workers()
