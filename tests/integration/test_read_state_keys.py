"""Read state is the mailbox's, not the connection's: INBOX in any case is one folder, a renamed connection
reads nothing again, an after-read action belongs to the run that asked for it, and one consumer at a time
holds a folder (``mailconnector read`` too), fenced so that a consumer that lost it acknowledges nothing.

gina's INBOX is read by this module only (the sandbox delivers nothing to her).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from _mail import append_all, folder_state, make_message, message_id, unseen

from mailconnector.activities.read import ReadEmail
from mailconnector.connection import Connection
from mailconnector.errors import StateError
from mailconnector.sandbox import Sandbox
from mailconnector.state import StateStore, Store

MakeConn = Callable[..., Connection]


def read(conn: Connection, folder: str, store: StateStore, **settings: object) -> list[str]:
    with ReadEmail(conn, folder=folder, store=store, **settings) as reader:  # type: ignore[arg-type]
        got = []
        for item in reader:
            got.append(item.record.message_id or "")
            item.ack()
    return got


def test_inbox_in_any_case_and_under_any_connection_name_is_read_once(make_conn: MakeConn, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    raws = [make_message(f"{token} {n}") for n in range(3)]
    first = make_conn("gina", name="gina-one")
    append_all(first, "INBOX", raws)
    store = Store(tmp_path / "state.db")
    criteria = f'SUBJECT "{token}"'
    assert read(first, "inbox", store, after_read="keep_unread", criteria=criteria) == [message_id(r) for r in raws]
    assert read(first, "INBOX", store, after_read="keep_unread", criteria=criteria) == []
    renamed = make_conn("gina", name="gina-renamed")  # the same mailbox under another connection name
    assert read(renamed, "Inbox", store, after_read="keep_unread", criteria=criteria) == []
    assert ReadEmail(first, folder="inbox").lease_name == ReadEmail(renamed, folder="INBOX").lease_name
    assert unseen(first, "INBOX") >= {message_id(r) for r in raws}
    read(first, "INBOX", store, after_read="mark_read", criteria=criteria, include_read=True)  # nothing pending
    assert unseen(first, "INBOX") >= {message_id(r) for r in raws}


def test_a_later_run_never_applies_its_action_to_mail_taken_with_keep_unread(
        make_conn: MakeConn, fresh_folder: Callable[[str], str], tmp_path: Path) -> None:
    conn = make_conn("gina")
    folder = fresh_folder("gina")
    store = Store(tmp_path / "state.db")
    kept = [make_message(f"kept {n}") for n in range(6)]
    append_all(conn, folder, kept)
    assert len(read(conn, folder, store, after_read="keep_unread")) == 6
    more = [make_message(f"more {n}") for n in range(20)]
    append_all(conn, folder, more)
    assert read(conn, folder, store, after_read="mark_read") == [message_id(r) for r in more]
    assert unseen(conn, folder) == {message_id(r) for r in kept}  # the six are still unread
    newest = make_message("newest")
    append_all(conn, folder, [newest])
    assert read(conn, folder, store, after_read="delete") == [message_id(newest)]
    state = folder_state(conn, folder)
    assert {message_id(r) for r in kept} <= set(state) and message_id(newest) not in state  # nothing else deleted


def test_an_action_pending_from_an_earlier_run_is_completed_as_that_run_asked(
        make_conn: MakeConn, fresh_folder: Callable[[str], str], tmp_path: Path) -> None:
    conn = make_conn("gina")
    folder = fresh_folder("gina")
    store = Store(tmp_path / "state.db")
    raws = [make_message(f"pending {n}") for n in range(3)]
    append_all(conn, folder, raws)
    reader = ReadEmail(conn, folder=folder, store=store, after_read="mark_read").open()
    for item in reader.items():
        item.ack()
        break
    assert reader._session is not None
    reader._session.close()  # the action never reached the server, and the process is gone
    reader._pending.clear()
    reader._release_own_lease()
    # A keep_unread run: it does not deliver the first again, and completes *its* pending mark_read.
    assert read(conn, folder, store, after_read="keep_unread") == [message_id(r) for r in raws[1:]]
    assert unseen(conn, folder) == {message_id(r) for r in raws[1:]}


def test_a_consumer_that_lost_its_lease_acknowledges_nothing(
        make_conn: MakeConn, fresh_folder: Callable[[str], str], tmp_path: Path) -> None:
    conn = make_conn("gina")
    folder = fresh_folder("gina")
    raws = [make_message(f"fenced {n}") for n in range(3)]
    append_all(conn, folder, raws)
    store = Store(tmp_path / "state.db")
    reader = ReadEmail(conn, folder=folder, store=store, after_read="mark_read").open()
    try:
        items = reader.items()
        first = next(items)
        first.ack()
        # This consumer stalls past its lease; another takes the folder over (its token is larger).
        other = Store(tmp_path / "state.db")
        other._w("UPDATE leases SET expires_at = {now} - 1 WHERE name = ?", (reader.lease_name,))  # type: ignore[attr-defined]
        assert other.acquire_lease(reader.lease_name, ttl=60, holder="the-new-consumer") is not None
        second = next(items)
        with pytest.raises(StateError, match="lost the lease"):
            second.ack()
        with pytest.raises(StateError, match="lost the lease"):
            reader.flush()  # the first one's mark-read is not applied by a consumer that lost the folder
        with pytest.raises(StateError, match="lost the lease"):
            reader.close()  # says so again, and still closes its connection
        assert reader._session is not None and reader._session._client is None
    finally:
        reader._pending.clear()
        reader.close()
    assert set(store.delivered(reader.account, reader.folder, reader._uidvalidity())) == {first.uid}
    assert unseen(conn, folder) == {message_id(r) for r in raws}
    info = store.lease_info(reader.lease_name)
    assert info is not None and info.holder == "the-new-consumer"  # not released by the old consumer


def test_the_read_command_takes_the_folder_lease(sandbox: Sandbox, make_conn: MakeConn,
                                                 fresh_folder: Callable[[str], str], tmp_path: Path) -> None:
    import yaml

    conn = make_conn("gina")
    folder = fresh_folder("gina")
    raw = make_message("leased")
    append_all(conn, folder, [raw])
    data = {"connections": {"box": sandbox.connection_dict("gina")}}
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(data))
    store = Store(tmp_path / ".mailconnector" / "state.db")
    lease = ReadEmail(conn, folder=folder).lease_name
    fence = store.acquire_lease(lease, ttl=60, holder="an-operation-elsewhere")
    assert fence is not None

    def cli_read() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailconnector", "read", "box", "--folder", folder],
                              cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=60)

    held = cli_read()
    assert held.returncode == 8, held.stderr
    assert "is being processed by another run" in " ".join(held.stderr.split()) and held.stdout == ""
    assert unseen(conn, folder) == {message_id(raw)}
    store.release_lease(fence)
    done = cli_read()
    assert done.returncode == 0, done.stderr
    assert '"leased"' in done.stdout and unseen(conn, folder) == set()
    assert store.lease_info(lease) is None  # released when the command ended
