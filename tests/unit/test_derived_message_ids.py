"""Derived Message-IDs are the send ledger's keys for a rerun: they follow the sending account and the
input, never the connection's name, so renaming a connection does not send everything again."""

from __future__ import annotations

from typing import Any

from mailconnector.activities._record_keys import RecordKeys
from mailconnector.activities.send import SendEmail, _Key, derive_message_id
from mailconnector.connection import Connection
from mailconnector.records.send import parse_send_request


def conn(name: str, user: str = "alice@example.test", **extra: Any) -> Connection:
    return Connection.from_dict({
        "auth": {"type": "basic", "username": user, "password": "pw"},
        "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"}, "activities": "send", **extra,
    }, name=name)


def derived(connection: Connection, record: dict[str, Any], occurrence: int = 0, key: str | None = "k") -> str | None:
    """The Message-ID of ``record`` as the ``occurrence``-th of its content in an input sent under batch key
    ``key`` (None: no batch key, as a library caller who names none)."""
    keys = RecordKeys()
    for _ in range(occurrence):
        keys.key(record)
    item = _Key(key, keys.key(record)) if key is not None else None
    return SendEmail(connection)._derived_id(parse_send_request(record, index=0), item)


def test_a_renamed_connection_derives_the_same_ids() -> None:
    with_id = {"to": "bob@example.test", "subject": "s", "text": "t", "id": "order-1"}
    without = {"to": "bob@example.test", "subject": "s", "text": "t"}
    for record in (with_id, without):
        assert derived(conn("office"), record) == derived(conn("office-renamed"), record)
    assert derived(conn("office"), with_id) != derived(conn("office", user="carol@example.test"), with_id)
    assert derived(conn("office"), without, occurrence=0) != derived(conn("office"), without, occurrence=1)
    assert derived(conn("office"), without, key=None) is None  # no input named: the composer makes one


def test_ids_follow_the_content_and_the_batch_key_not_the_position() -> None:
    a = {"to": "bob@example.test", "subject": "a", "text": "t"}
    b = {"to": "bob@example.test", "subject": "b", "text": "t"}
    assert derived(conn("office"), a) != derived(conn("office"), b)
    assert derived(conn("office"), dict(reversed(a.items()))) == derived(conn("office"), a)  # key order is no content
    assert derived(conn("office"), a, key="") != derived(conn("office"), a, key="2026-12-02")
    with_id = {**a, "id": "order-1"}
    assert derived(conn("office"), with_id, key="") == derived(conn("office"), {**b, "id": "order-1"}, key="")
    assert derived(conn("office"), with_id, key="") != derived(conn("office"), with_id, key="2026-12-02")


def test_the_domain_of_a_derived_id_is_the_senders_and_always_well_formed() -> None:
    assert derive_message_id("seed", "alice@example.test").endswith("@example.test>")
    assert derive_message_id("seed", "Jörg <jörg@bücher.example>").endswith("@xn--bcher-kva.example>")
    assert derive_message_id("seed", "no-at-sign").endswith("@localhost>")
    assert derive_message_id("seed", "x@[bad domain]").endswith("@baddomain>")
    assert derive_message_id("seed", "a@b") == derive_message_id("seed", "a@b")
    assert derive_message_id("seed", "a@b") != derive_message_id("other", "a@b")
