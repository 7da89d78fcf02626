"""Nothing lost, nothing twice: Read Email with a store across runs, a killed reader, a recreated folder.

Each test reads its own fresh folder (filled with APPEND), so tests never see each other's mail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _mail import append_all, folder_state, make_message, message_id, unseen

from mailconnector.activities.read import ReadEmail
from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.state import StateStore, Store

MakeConn = Callable[..., Connection]
FreshFolder = Callable[[str], str]


def where(conn: Connection, folder: str) -> tuple[str, str]:
    """The store's key for a folder: the mailbox (host, port, user) and the folder, not the connection's name."""
    reader = ReadEmail(conn, folder=folder)
    return reader.account, reader.folder


def run(conn: Connection, folder: str, store: StateStore, *, ack: bool = True, **settings: Any) -> list[str]:
    """One run of the activity: the Message-IDs it yields, each acked unless ``ack`` is false."""
    got = []
    with ReadEmail(conn, folder=folder, store=store, **settings) as reader:
        for item in reader.items():
            got.append(item.record.message_id or "")
            if ack:
                item.ack()
    return got


def test_keep_unread_with_a_store_delivers_each_message_once(make_conn: MakeConn, fresh_folder: FreshFolder,
                                                           tmp_path: Path) -> None:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    store = Store(tmp_path / "state.db")
    first = [make_message(f"first {n}") for n in range(3)]
    append_all(conn, folder, first)

    assert run(conn, folder, store, after_read="keep_unread") == [message_id(r) for r in first]
    assert run(conn, folder, store, after_read="keep_unread") == []
    new = make_message("new one")
    append_all(conn, folder, [new])
    assert run(conn, folder, store, after_read="keep_unread") == [message_id(new)]
    # Nothing was marked on the server: the store alone remembers.
    assert unseen(conn, folder) == {message_id(r) for r in [*first, new]}
    # What was yielded but not acked comes again.
    newer = make_message("not acked")
    append_all(conn, folder, [newer])
    assert run(conn, folder, store, ack=False, after_read="keep_unread") == [message_id(newer)]
    assert run(conn, folder, store, after_read="keep_unread") == [message_id(newer)]
    assert run(conn, folder, store, after_read="keep_unread") == []


def test_an_acked_message_whose_action_was_lost_is_completed_not_delivered_again(
        make_conn: MakeConn, fresh_folder: FreshFolder, tmp_path: Path) -> None:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    store = Store(tmp_path / "state.db")
    raws = [make_message(f"lost action {n}") for n in range(3)]
    append_all(conn, folder, raws)
    reader = ReadEmail(conn, folder=folder, store=store).open()
    for item in reader.items():
        item.ack()
        break  # stop holding the first one: acked, its mark-read is still pending
    assert reader._session is not None
    reader._session.close()  # the connection is gone before the action reached the server
    reader._pending.clear()  # ... and so is the process that would have applied it
    reader._release_own_lease()  # (a dead process's lease on this host is taken over at once)
    assert unseen(conn, folder) == {message_id(r) for r in raws}

    assert run(conn, folder, store) == [message_id(r) for r in raws[1:]]
    assert unseen(conn, folder) == set()


CHILD = textwrap.dedent("""
    import json, sys, time
    from mailconnector.activities.read import ReadEmail
    from mailconnector.connection import Connection
    from mailconnector.state import Store

    cfg = json.loads(sys.argv[1])
    conn = Connection.from_dict(cfg["connection"], name=cfg["name"])
    with ReadEmail(conn, folder=cfg["folder"], store=Store(cfg["store"]), batch_size=cfg["batch_size"],
                   after_read=cfg["after_read"]) as reader:
        for item in reader.items():
            time.sleep(cfg["pause"])  # a slow downstream target
            item.ack()
            print(item.record.message_id, flush=True)
""")


@pytest.mark.parametrize("after_read", ["mark_read", "keep_unread"])
def test_a_reader_killed_mid_run_loses_nothing_and_repeats_nothing(
        after_read: str, sandbox: Sandbox, make_conn: MakeConn, fresh_folder: FreshFolder, tmp_path: Path) -> None:
    conn = make_conn("dave")
    folder = fresh_folder("dave")
    raws = [make_message(f"crash {n}") for n in range(12)]
    every = [message_id(r) for r in raws]
    append_all(conn, folder, raws)
    config = sandbox.connection_dict("dave", password="${env:MC_READ_TEST_PASSWORD}")
    args = {"connection": config, "name": conn.name, "folder": folder, "store": str(tmp_path / "state.db"),
            "batch_size": 5, "after_read": after_read, "pause": 0.15}
    env = {**os.environ, "MC_READ_TEST_PASSWORD": sandbox.user("dave").password}
    script = tmp_path / "reader.py"
    script.write_text(CHILD)

    proc = subprocess.Popen([sys.executable, str(script), json.dumps(args)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        for line in proc.stdout:
            acked.append(line.decode().strip())
            if len(acked) == 7:
                os.kill(proc.pid, signal.SIGKILL)  # mid-batch: two acks of batch two are not yet applied
                break
        acked += [line.decode().strip() for line in proc.stdout]  # whatever it printed before it died
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert acked == every[: len(acked)] and len(acked) >= 7

    store = Store(tmp_path / "state.db")
    assert store.delivered_message_ids(*where(conn, folder)) == set(acked)  # every ack reached the store
    left = unseen(conn, folder)
    assert set(every) - set(acked) <= left  # every message not acked is still unread
    if after_read == "mark_read":
        assert set(every) - left == set(every[:5])  # batch one's action was applied, batch two's was not

    rest = run(conn, folder, store, after_read=after_read)
    assert rest == [m for m in every if m not in acked]  # exactly those, in order: none lost, none twice
    assert run(conn, folder, store, after_read=after_read) == []
    if after_read == "mark_read":
        assert unseen(conn, folder) == set()  # the pending actions were completed


def test_a_recreated_folder_is_detected_and_matched_by_message_id(
        make_conn: MakeConn, fresh_folder: FreshFolder, tmp_path: Path) -> None:
    conn = make_conn("erin")
    folder = fresh_folder("erin")
    store = Store(tmp_path / "state.db")
    old = [make_message(f"old {n}") for n in range(3)]
    append_all(conn, folder, old)
    assert run(conn, folder, store, after_read="keep_unread") == [message_id(r) for r in old]
    before = store.checkpoint(*where(conn, folder))
    assert before is not None

    with ImapSession(conn) as imap:
        imap.delete_folder(folder)
        imap.create_folder(folder)
    new = [make_message(f"new {n}") for n in range(2)]
    append_all(conn, folder, [old[1], new[0], old[0], old[2], new[1]])  # the old ones again, mixed with new
    with ImapSession(conn) as imap:
        assert imap.select(folder).uidvalidity != before.uidvalidity

    assert run(conn, folder, store, after_read="keep_unread") == [message_id(r) for r in new]
    after = store.checkpoint(*where(conn, folder))
    assert after is not None and after.uidvalidity != before.uidvalidity
    assert run(conn, folder, store, after_read="keep_unread") == []
    latest = make_message("after the change")
    append_all(conn, folder, [latest])
    assert run(conn, folder, store, after_read="keep_unread") == [message_id(latest)]
    assert set(folder_state(conn, folder)) == {message_id(r) for r in [*old, *new, latest]}
