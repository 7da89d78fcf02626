"""Shared fixtures: one real sandbox (Dovecot + Postfix on loopback) per test session, started through
the same module as ``mailconnector sandbox``, and helpers to build connections and poll mailboxes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.start(users=("alice", "bob", "carol", "dave", "erin", "frank"))
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


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return tmp_path
