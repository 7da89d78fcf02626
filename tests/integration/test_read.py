"""Read Email against the real sandbox (Dovecot): which mail is read, in what order, what each
after-read action does and when, attachments to a directory, raw messages, faults, memory.

Each test reads its own fresh folder (filled with APPEND), so tests never see each other's mail. The
one exception is ``test_mail_delivered_through_postfix``, which reads the INBOX of erin: no other test
reads erin's INBOX or acts on it (other tests may deliver there, so this one picks its mail by a token).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import socket
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _mail import append_all, fill_by_copy, folder_state, make_message, message_id, unseen
from conftest import wait_for

from mailconnector.activities.read import Criteria, ReadEmail, _slug
from mailconnector.connection import Connection
from mailconnector.errors import ConfigError, MessageError
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.smtp import SmtpSession

MakeConn = Callable[..., Connection]
FreshFolder = Callable[[str], str]


def read_all(conn: Connection, folder: str, **settings: Any) -> list[tuple[int, str]]:
    """(uid, Message-ID) of every record a run yields, nothing acked and nothing changed."""
    settings.setdefault("after_read", "keep_unread")
    with ReadEmail(conn, folder=folder, **settings) as reader:
        return [(item.uid, item.record.message_id or "") for item in reader.items()]


# ----------------------------------------------------------------------------------------- what is read
def test_only_unread_mail_in_uid_order(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("alice")
    folder = fresh_folder("alice")
    raws = [make_message(f"message {n}") for n in range(6)]
    uids = append_all(conn, folder, raws, seen={1, 4})
    mids = [message_id(r) for r in raws]

    got = read_all(conn, folder)
    assert got == [(uids[n], mids[n]) for n in (0, 2, 3, 5)]

    everything = read_all(conn, folder, include_read=True)
    assert everything == list(zip(uids, mids, strict=True))


def test_record_fields_from_the_message_and_from_the_server(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("alice")
    folder = fresh_folder("alice")
    raw = make_message("Quarterly report", sender="Ann Example <ann@example.test>", text="Numbers inside.\n",
                       html="<p>Numbers inside.</p>\n")
    when = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    (uid,) = append_all(conn, folder, [raw], when=when)
    with ReadEmail(conn, folder=folder, after_read="keep_unread") as reader:
        (item,) = list(reader.items())
        validity = reader._uidvalidity()
    rec = item.record
    assert (rec.uid, rec.uidvalidity, rec.folder) == (uid, validity, folder)
    assert rec.subject == "Quarterly report"
    assert rec.from_ is not None and (rec.from_.name, rec.from_.address) == ("Ann Example", "ann@example.test")
    assert rec.text == "Numbers inside.\n" and rec.html == "<p>Numbers inside.</p>\n"
    assert rec.message_id == message_id(raw)
    assert rec.size == len(raw)
    assert "\\Seen" not in rec.flags
    assert rec.received_at is not None
    assert dt.datetime.fromisoformat(rec.received_at) == when  # INTERNALDATE, with its offset
    assert rec.raw_base64 is None and rec.raw_path is None


def test_criteria_and_limit(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("alice")
    folder = fresh_folder("alice")
    messages = {
        "invoice": (make_message("Invoice 1", sender="Ann <ann@corp.test>"), dt.datetime(2024, 1, 10, 12)),
        "order": (make_message("Order 2", sender="bob@other.test", text="x" * 20_000 + "\n"),
                  dt.datetime(2024, 3, 10, 12)),
        "koeln": (make_message("Grüße aus Köln", sender="Ann <ann@corp.test>"), dt.datetime(2024, 5, 1, 12)),
        "ticket": (make_message("Ticket", sender="desk@corp.test", headers={"X-Ticket": "T-42"}),
                   dt.datetime(2024, 2, 1, 12)),
        "read": (make_message("Invoice 0 (already read)", sender="Ann <ann@corp.test>"),
                 dt.datetime(2024, 1, 5, 12)),
    }
    uid_of: dict[str, int] = {}
    for name, (raw, when) in messages.items():
        (uid_of[name],) = append_all(conn, folder, [raw], when=when.astimezone(), seen={0} if name == "read" else ())
    name_of = {uid: name for name, uid in uid_of.items()}

    cases: list[tuple[dict[str, object], list[str]]] = [
        ({}, ["invoice", "order", "koeln", "ticket"]),
        ({"from": "ann@corp.test"}, ["invoice", "koeln"]),
        ({"subject": "invoice"}, ["invoice"]),
        ({"since": dt.date(2024, 3, 1)}, ["order", "koeln"]),
        ({"before": dt.date(2024, 3, 1)}, ["invoice", "ticket"]),
        ({"larger": 10_000}, ["order"]),
        ({"smaller": 10_000}, ["invoice", "koeln", "ticket"]),
        ({"header": {"X-Ticket": "T-42"}}, ["ticket"]),
        ({"from": "ann@corp.test", "since": dt.date(2024, 2, 1)}, ["koeln"]),
        ({"raw": 'OR SUBJECT "Invoice" SUBJECT "Order"'}, ["invoice", "order"]),
        ({"subject": "Grüße"}, ["koeln"]),  # non-ASCII: sent with CHARSET UTF-8
        ({"raw": 'SUBJECT "Köln"'}, ["koeln"]),
        ({"raw": 'OR (SUBJECT "Köln") (FROM "bob@other.test")'}, ["order", "koeln"]),
        ({"subject": "Grüße", "raw": "FROM ann@corp.test"}, ["koeln"]),
        ({"subject": "no such subject"}, []),
    ]
    for criteria, expected in cases:
        got = [name_of[uid] for uid, _ in read_all(conn, folder, criteria=Criteria.model_validate(criteria))]
        assert got == expected, criteria

    # A raw string alone is accepted as the criteria setting too.
    assert [name_of[u] for u, _ in read_all(conn, folder, criteria='SUBJECT "Order"')] == ["order"]
    # include_read drops the implied UNSEEN.
    got = [name_of[u] for u, _ in read_all(conn, folder, criteria={"subject": "Invoice"}, include_read=True)]
    assert got == ["invoice", "read"]
    # limit takes the first unread messages in UID order.
    assert [name_of[u] for u, _ in read_all(conn, folder, limit=2)] == ["invoice", "order"]
    assert [name_of[u] for u, _ in read_all(conn, folder, limit=1, criteria={"from": "ann@corp.test"})] == ["invoice"]


def test_bad_criteria_are_configuration_errors(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("alice")
    folder = fresh_folder("alice")
    append_all(conn, folder, [make_message()])
    with pytest.raises(ConfigError, match=r"criteria\.raw: unknown search key NOSUCHKEY"):
        read_all(conn, folder, criteria="NOSUCHKEY 42")  # refused before anything is sent
    with pytest.raises(ConfigError, match="the parenthesis at character 1 is not closed"):
        read_all(conn, folder, criteria='(SUBJECT "Köln"')
    with pytest.raises(ConfigError, match="the server refused the search criteria"):
        read_all(conn, folder, criteria="X-GM-RAW invoices")  # a known extension this server does not have
    with pytest.raises(ValueError, match="CR, LF"):
        Criteria(subject="a\r\nb")


# ------------------------------------------------------------------------------------ after-read actions
@pytest.mark.parametrize("action", ["mark_read", "move", "delete"])
def test_after_read_action_happens_only_after_the_ack(action: str, make_conn: MakeConn,
                                                      fresh_folder: FreshFolder) -> None:
    conn = make_conn("bob")
    folder = fresh_folder("bob")
    target = fresh_folder("bob")
    after_read = f"move:{target}" if action == "move" else action
    raws = [make_message(f"m{n}") for n in range(3)]
    mids = [message_id(r) for r in raws]
    append_all(conn, folder, raws)

    # Read everything, ack nothing: the server is untouched.
    with ReadEmail(conn, folder=folder, after_read=after_read) as reader:
        assert [item.record.message_id for item in reader.items()] == mids
    assert unseen(conn, folder) == set(mids)

    # Ack the first two only. Fetching did not mark anything (BODY.PEEK).
    with ReadEmail(conn, folder=folder, after_read=after_read) as reader:
        for n, item in enumerate(reader.items()):
            assert item.record.message_id in unseen(conn, folder)
            if n < 2:
                item.ack()
    state = folder_state(conn, folder)
    moved = folder_state(conn, target)
    if action == "mark_read":
        assert state == {mids[0]: {"\\Seen"}, mids[1]: {"\\Seen"}, mids[2]: set()}
    elif action == "move":
        assert state == {mids[2]: set()}
        assert moved == {mids[0]: {"\\Seen"}, mids[1]: {"\\Seen"}}
    else:
        assert state == {mids[2]: set()}
        assert moved == {}

    # The next run gets only the message that was not acked.
    with ReadEmail(conn, folder=folder, after_read=after_read) as reader:
        assert [item.record.message_id for item in reader.items()] == [mids[2]]


def test_keep_unread_without_ack_or_with_it_changes_nothing(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("bob")
    folder = fresh_folder("bob")
    raws = [make_message(f"k{n}") for n in range(2)]
    append_all(conn, folder, raws)
    with ReadEmail(conn, folder=folder, after_read="keep_unread") as reader:
        for item in reader.items():
            item.ack()
    assert folder_state(conn, folder) == {message_id(r): set() for r in raws}


def test_move_to_a_missing_folder_is_refused_before_reading(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("bob")
    folder = fresh_folder("bob")
    append_all(conn, folder, [make_message()])
    with pytest.raises(ConfigError, match="does not exist"):
        ReadEmail(conn, folder=folder, after_read="move:NoSuchFolder-" + uuid.uuid4().hex[:6]).open()


def _append_plain(conn: Connection, folder: str, prefix: str, count: int) -> list[str]:
    """``count`` small messages appended to ``folder``; their Message-IDs in order."""
    raws = [make_message(f"{prefix}{n}") for n in range(count)]
    append_all(conn, folder, raws)
    return [message_id(r) for r in raws]


def test_records_acks_each_record_when_the_next_is_asked_for(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("bob")
    folder = fresh_folder("bob")
    mids = _append_plain(conn, folder, "r", 3)
    with ReadEmail(conn, folder=folder, batch_size=2) as reader:
        for record in reader.records():
            if record.message_id == mids[1]:
                break  # the caller stopped while holding the second record: it was not taken
    assert unseen(conn, folder) == {mids[1], mids[2]}


def test_a_reader_stopped_early_with_a_batch_on_its_way_closes_cleanly_and_the_next_run_takes_the_rest(
        make_conn: MakeConn, fresh_folder: FreshFolder, caplog: pytest.LogCaptureFixture) -> None:
    conn = make_conn("bob")
    folder = fresh_folder("bob")
    mids = _append_plain(conn, folder, "s", 9)
    with caplog.at_level(logging.DEBUG, logger="mailconnector"), \
            ReadEmail(conn, folder=folder, batch_size=2, after_read="mark_read") as reader:
        for n, item in enumerate(reader.items()):
            item.ack()
            if n == 2:
                # The next batch was asked for: its answer is read and dropped, so that the after-read action
                # and the logout that follow find the connection idle. What was not taken stays unread.
                break
        assert reader._ahead is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert unseen(conn, folder) == set(mids[3:])
    with ReadEmail(conn, folder=folder) as reader:
        assert [item.record.message_id for item in reader.items()] == mids[3:]


def test_a_reader_closed_while_a_batch_is_on_its_way_applies_the_actions_of_what_was_taken(
        make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    """The iteration is still open (not abandoned) when the reader closes: the fetch asked for ahead is read
    first, then the taken emails are marked read."""
    conn = make_conn("bob")
    folder = fresh_folder("bob")
    mids = _append_plain(conn, folder, "c", 5)
    reader = ReadEmail(conn, folder=folder, batch_size=2, after_read="mark_read").open()
    items = reader.items()
    for _ in range(3):
        next(items).ack()
    assert reader._ahead is not None  # the third batch is on its way
    reader.close()
    assert unseen(conn, folder) == set(mids[3:])
    items.close()  # nothing left to read: no error from a closed connection


def test_a_message_that_cannot_be_delivered_stops_the_run_at_its_place(
        make_conn: MakeConn, fresh_folder: FreshFolder, tmp_path: Path) -> None:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    raws = [make_message(f"f{n}", attachments=[("a.txt", b"content %d" % n)]) for n in range(6)]
    mids = [message_id(r) for r in raws]
    uids = append_all(conn, folder, raws)
    with ImapSession(conn) as imap:
        uidvalidity = imap.select(folder).uidvalidity
    out = tmp_path / "files"
    out.mkdir()
    # A file where the fourth message's attachment directory goes: its attachment cannot be written.
    blocker = out / f"{_slug(folder)}-{uidvalidity}-{uids[3]}"
    blocker.write_bytes(b"")
    taken: list[str] = []
    with pytest.raises(MessageError, match="cannot create the directory"), \
            ReadEmail(conn, folder=folder, attachments="directory", directory=out, batch_size=2) as reader:
        for item in reader.items():
            taken.append(item.record.message_id or "")
            item.ack()
    # Raised in its place, after the three before it were taken (the reading thread had gone past them).
    assert taken == mids[:3]
    assert unseen(conn, folder) == set(mids[3:])
    blocker.unlink()
    with ReadEmail(conn, folder=folder, attachments="directory", directory=out) as reader:
        assert [item.record.message_id for item in reader.items()] == mids[3:]


# ------------------------------------------------------------------------------------------- Postfix
def test_mail_delivered_through_postfix(sandbox: Sandbox, make_conn: MakeConn) -> None:
    # erin's INBOX is read by this test only; the token in the subject keeps out what others deliver there.
    sender = make_conn("carol")
    reader_conn = make_conn("erin")
    token = uuid.uuid4().hex[:10]
    erin = sandbox.user("erin").address
    raws = [make_message(f"Delivered {token} #{n}", sender=f"Carol <{sender.from_address}>", to=erin,
                         text=f"Body {n}\n") for n in range(3)]
    with SmtpSession(sender) as smtp:
        for raw in raws:
            assert sender.from_address is not None
            smtp.send(sender.from_address, [erin], raw)
    wait_for(lambda: len(read_all(reader_conn, "INBOX", criteria={"subject": token})) == 3)

    with ReadEmail(reader_conn, criteria={"subject": token}) as reader:  # default: INBOX, mark_read
        items = list(reader.items())
        for item in items:
            item.ack()
    assert [i.uid for i in items] == sorted(i.uid for i in items)
    # Postfix delivers in parallel, so the arrival order (and the UIDs) may differ from the sending order.
    assert {i.record.subject: i.record.text for i in items} == {f"Delivered {token} #{n}": f"Body {n}\n"
                                                                 for n in range(3)}
    assert all(i.record.from_ is not None and i.record.from_.address == sender.from_address for i in items)
    assert all("received" in i.record.headers for i in items)  # it really went through the MTA
    state = folder_state(reader_conn, "INBOX")
    assert all("\\Seen" in state[message_id(r)] for r in raws)
    assert read_all(reader_conn, "INBOX", criteria={"subject": token}) == []


# --------------------------------------------------------------------------------------- attachments
def test_attachments_to_a_directory(make_conn: MakeConn, fresh_folder: FreshFolder, tmp_path: Path) -> None:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    big = os.urandom(6000)
    first = make_message("with files", attachments=[
        ("../../etc/passwd", b"not the password file"),
        ("report.pdf", b"%PDF first"),
        ("report.pdf", b"%PDF second"),
        ("big.bin", big),
    ])
    second = make_message("more files", attachments=[("report.pdf", b"%PDF of the second message")])
    append_all(conn, folder, [first, second])
    out = tmp_path / "files"
    with ReadEmail(conn, folder=folder, attachments="directory", directory=out,
                   max_attachment_bytes=4096) as reader:
        records = [item.record for item in reader.items()]

    one, two = records
    names = [a.filename for a in one.attachments]
    assert names[0] == "passwd"  # no path traversal
    assert names[1] == "report.pdf" and names[2] != "report.pdf" and names[2].endswith(".pdf")  # no collision
    contents = [Path(a.path).read_bytes() for a in one.attachments[:3] if a.path]
    assert contents == [b"not the password file", b"%PDF first", b"%PDF second"]
    skipped = one.attachments[3]
    assert skipped.filename == "big.bin" and skipped.path is None and skipped.content_base64 is None
    assert skipped.skipped is not None and "max_attachment_bytes" in skipped.skipped
    assert skipped.size >= 4096
    # A fresh sub-directory per message: the second message's report.pdf does not collide with the first's.
    assert two.attachments[0].path is not None
    assert Path(two.attachments[0].path).read_bytes() == b"%PDF of the second message"
    assert Path(two.attachments[0].path).parent != Path(one.attachments[1].path or "").parent
    # Everything written is inside the directory, and nothing else was written.
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert written == sorted(Path(a.path) for r in records for a in r.attachments if a.path)
    assert all(out.resolve() in p.resolve().parents for p in written)


def test_attachments_inline_and_none(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    append_all(conn, folder, [make_message("a", attachments=[("data.bin", b"\x00\x01\x02 payload")])])
    (inline,) = [i.record for i in ReadEmail(conn, folder=folder, after_read="keep_unread").open().items()]
    assert base64.b64decode(inline.attachments[0].content_base64 or "") == b"\x00\x01\x02 payload"
    with ReadEmail(conn, folder=folder, after_read="keep_unread", attachments="none") as reader:
        (meta,) = [i.record for i in reader.items()]
    assert meta.attachments[0].content_base64 is None and meta.attachments[0].path is None
    assert (meta.attachments[0].filename, meta.attachments[0].size) == ("data.bin", 11)


def test_include_raw(make_conn: MakeConn, fresh_folder: FreshFolder, tmp_path: Path) -> None:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    raw = make_message("raw please", attachments=[("a.txt", b"attached"), ("message.eml", b"not the raw one")])
    append_all(conn, folder, [raw])
    with ReadEmail(conn, folder=folder, after_read="keep_unread", include_raw=True) as reader:
        (rec,) = [i.record for i in reader.items()]
    assert base64.b64decode(rec.raw_base64 or "") == raw and rec.raw_path is None
    with ReadEmail(conn, folder=folder, after_read="keep_unread", include_raw=True, attachments="directory",
                   directory=tmp_path) as reader:
        (rec,) = [i.record for i in reader.items()]
    assert rec.raw_base64 is None and rec.raw_path is not None
    assert Path(rec.raw_path).read_bytes() == raw
    assert Path(rec.attachments[0].path or "").parent == Path(rec.raw_path).parent
    clash = rec.attachments[1]  # named like the raw file: it gets a name of its own, neither is lost
    assert clash.path is not None and clash.path != rec.raw_path
    assert Path(clash.path).read_bytes() == b"not the raw one"


# ---------------------------------------------------------------------------------------------- faults
def _cut(reader: ReadEmail) -> None:
    """Break the reader's connection under it (a real fault on a real socket: no mock)."""
    assert reader._session is not None
    reader._session.client.socket().shutdown(socket.SHUT_RDWR)


def test_fetch_is_retried_on_a_new_connection(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("dave")
    folder = fresh_folder("dave")
    raws = [make_message(f"f{n}") for n in range(6)]
    append_all(conn, folder, raws)
    got = []
    with ReadEmail(conn, folder=folder, after_read="keep_unread", batch_size=2) as reader:
        for item in reader.items():
            got.append(item.record.message_id)
            if len(got) == 1:
                _cut(reader)  # the next fetch (batch two) fails and is retried after a reconnect
    assert got == [message_id(r) for r in raws]


def test_after_read_action_is_retried_on_a_new_connection(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("dave")
    folder = fresh_folder("dave")
    raws = [make_message(f"g{n}") for n in range(4)]
    append_all(conn, folder, raws)
    with ReadEmail(conn, folder=folder, batch_size=2) as reader:
        for n, item in enumerate(reader.items()):
            item.ack()
            if n == 1:
                _cut(reader)  # the action for batch one is applied when batch two is asked for
    assert unseen(conn, folder) == set()


# ---------------------------------------------------------------------------------------------- memory
def _peak_bytes(conn: Connection, folder: str, limit: int | None) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = 0
        with ReadEmail(conn, folder=folder, after_read="keep_unread", batch_size=100, limit=limit) as reader:
            for item in reader.items():
                item.ack()
                count += 1
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_message_count(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("frank")
    folder = fresh_folder("frank")
    fill_by_copy(conn, folder, 2000)
    count_small, peak_small = _peak_bytes(conn, folder, 500)
    count_all, peak_all = _peak_bytes(conn, folder, None)
    assert (count_small, count_all) == (500, 2000)
    # Four times the messages: the peak stays within a small factor (a batch, not the folder, is held).
    assert peak_all < 1.5 * peak_small, (peak_small, peak_all)


@pytest.mark.slow
def test_ten_thousand_messages_in_flat_memory(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("frank")
    folder = fresh_folder("frank")
    fill_by_copy(conn, folder, 10_000, distinct=1000)
    count_small, peak_small = _peak_bytes(conn, folder, 1000)
    count_all, peak_all = _peak_bytes(conn, folder, None)
    assert (count_small, count_all) == (1000, 10_000)
    assert peak_all < 1.5 * peak_small, (peak_small, peak_all)


def test_folders_are_listed_with_special_use(make_conn: MakeConn, fresh_folder: FreshFolder) -> None:
    conn = make_conn("frank")
    folder = fresh_folder("frank")
    append_all(conn, folder, [make_message(), make_message()], seen={0})
    with ImapSession(conn) as imap:
        folders = {f.name: f for f in imap.list_folders(with_counts=True)}
    assert folders["Archive"].special_use == "\\Archive"
    assert folders["Sent"].special_use == "\\Sent"
    assert (folders[folder].messages, folders[folder].unseen) == (2, 1)
