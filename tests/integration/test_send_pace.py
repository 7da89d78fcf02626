"""The sending pace of an account, held across senders through the state store: a server's request to slow
down (451 4.7.0) reaches every sender of the account; a rate limit spaces messages whoever sends them; a day's
recipients and a message's recipients stop at the account's limits (the provider's by default)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from services.smtpd import SmtpServer

from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import ConfigError
from mailconnector.state import Store

USERS = {"pace@example.test": "pace-secret-1234"}


def _connection(server: SmtpServer, **top: Any) -> Connection:
    return Connection.from_dict({
        "activities": "send",
        "auth": {"type": "basic", "username": "pace@example.test", "password": "pace-secret-1234"},
        "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none"},
        "timeouts": {"connect": 5, "command": 30},
        "from_address": "pace@example.test", **top}, name=f"pace-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def server() -> Any:
    with SmtpServer.start(security="none", users=USERS) as srv:
        yield srv


def _records(tag: str, count: int, to: int = 1) -> list[dict[str, Any]]:
    return [{"to": [f"r{i}-{k}@example.test" for k in range(to)], "subject": f"{tag} {i}", "text": "x",
             "id": f"{tag}-{i}"} for i in range(count)]


def test_a_throttling_reply_slows_every_sender_of_the_account(server: SmtpServer, tmp_path: Path) -> None:
    """Sender A meets ``451 4.7.0 Rate limit exceeded``; sender B (another store object, as another process or
    worker would be) sends its message only after A's pause, though B itself was never refused."""
    db = tmp_path / "state.db"
    a_store, b_store = Store(db), Store(db)
    a = SendEmail(_connection(server), store=a_store, concurrency=1, backoff=2.0, max_backoff=2.0)
    b = SendEmail(_connection(server), store=b_store, concurrency=1)
    try:
        server.throttle(1)
        a_done: list[Any] = []
        thread = threading.Thread(target=lambda: a_done.extend(a.send(_records("a", 1))))
        thread.start()
        deadline = time.monotonic() + 30
        while not server.throttled_at:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # poll interval
        time.sleep(0.3)  # A has recorded its slow-down (right after the 451, before its pause)
        [b_response] = list(b.send(_records("b", 1)))
        b_sent = time.monotonic()
        thread.join(30)
    finally:
        a.close()
        b.close()
        a_store.close()
        b_store.close()
    assert a_done[0].status == "sent" and b_response.status == "sent"
    # A's pause is its backoff (2 s) times a jitter in [0.5, 1.5), capped at 2 s: at least 1 s after the 451.
    assert b_sent - server.throttled_at[0] >= 1.0
    assert len(server.received) == 2


def test_a_rate_limit_spaces_the_messages_of_two_senders_together(server: SmtpServer, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    stores = [Store(db), Store(db)]
    conn = _connection(server, limits={"messages_per_minute": 600})  # one every 0.1 s, both senders together
    senders = [SendEmail(conn, store=s, concurrency=2) for s in stores]
    try:
        threads = [threading.Thread(target=lambda s=s, n=n: list(s.send(_records(f"s{n}", 6))))
                   for n, s in enumerate(senders)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - started
        claimed = sorted(e.claimed_at for e in stores[0].ledger_entries(limit=100))
    finally:
        for s in senders:
            s.close()
        for st in stores:
            st.close()
    assert len(claimed) == 12 and len(server.received) == 12
    # Twelve slots 0.1 s apart, the first taken after `started`: no message can go before its slot, so the
    # last one went at least 1.1 s after the start. (Without the shared pace: two senders, two connections
    # each, on loopback, well under a second.)
    assert elapsed >= 1.1


def test_a_days_recipients_and_a_messages_recipients_stop_at_the_limits(server: SmtpServer,
                                                                         tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    conn = _connection(server, limits={"recipients_per_day": 5, "recipients_per_message": 2})
    try:
        day = list(SendEmail(conn, store=store, concurrency=1).send(_records("day", 4, to=2)))
        wide = list(SendEmail(conn, store=store, concurrency=1).send(_records("wide", 1, to=3)))
    finally:
        store.close()
    # 2 + 2 recipients; a third message would make 6. Which two go first is the threads' race.
    assert sorted(r.status for r in day) == ["failed", "failed", "sent", "sent"]
    refused = next(r for r in day if r.status == "failed").error
    assert refused is not None and refused.type == "LimitError" and refused.retryable
    assert "limit of 5 recipients a day" in refused.message and "tomorrow" in (refused.hint or "")
    assert wide[0].status == "failed" and wide[0].error is not None and wide[0].error.type == "MessageError"
    assert "at most 2 a message" in wide[0].error.message
    assert len(server.received) == 2  # nothing past a limit reached the server


def test_the_providers_documented_limits_are_the_defaults(server: SmtpServer) -> None:
    office = Connection.from_dict({"provider": "microsoft365", "auth": {"type": "basic", "username": "a@b.example",
                                                                        "password": "x"}}, name="o365")
    assert office.sending_limits().model_dump() == {"messages_per_minute": 30, "recipients_per_day": 10_000,
                                                    "recipients_per_message": 500}
    gmail = Connection.from_dict({"provider": "gmail", "limits": {"recipients_per_day": 500},
                                  "auth": {"type": "basic", "username": "a@gmail.com", "password": "x"}}, name="g")
    assert gmail.sending_limits().model_dump() == {"messages_per_minute": None, "recipients_per_day": 500,
                                                   "recipients_per_message": 100}
    assert _connection(server).sending_limits().model_dump() == {
        "messages_per_minute": None, "recipients_per_day": None, "recipients_per_message": None}
    for bad in ({"messages_per_minute": 0}, {"recipients_per_day": -1}, {"per_hour": 5}):
        with pytest.raises(ConfigError):
            _connection(server, limits=bad)
