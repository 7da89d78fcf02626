"""Helpers of the Read Email tests: build messages, put them into a folder, look at a folder's state.

The state is read with a second, read-only session (``EXAMINE``), so looking changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession


def make_message(
    subject: str = "Hello",
    *,
    sender: str = "Sender Example <sender@example.test>",
    to: str = "Reader <reader@example.test>",
    text: str = "Hello there.\n",
    html: str | None = None,
    headers: dict[str, str] | None = None,
    attachments: Sequence[tuple[str, bytes]] = (),
    message_id: str | None = None,
    date: str = "Fri, 01 Mar 2024 10:00:00 +0100",
) -> bytes:
    """One message with CRLF line ends, as a mail server stores it."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.test>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg.as_bytes()


def message_id(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii")
    raise ValueError("no Message-ID")


def append_all(conn: Connection, folder: str, messages: Iterable[bytes], *, seen: Iterable[int] = (),
               when: datetime | None = None) -> list[int]:
    """APPEND each message (the indexes in ``seen`` with ``\\Seen``); the UIDs the server gave them."""
    seen_set = set(seen)
    uids: list[int] = []
    with ImapSession(conn) as imap:
        for index, raw in enumerate(messages):
            uid = imap.append(folder, raw, flags=["\\Seen"] if index in seen_set else [], when=when)
            assert uid is not None, "the server did not report APPENDUID"
            uids.append(uid)
    return uids


def bulk_append(conn: Connection, folder: str, messages: Iterable[bytes], *, chunk: int = 500) -> None:
    """MULTIAPPEND in chunks: thousands of messages in a few round trips."""
    with ImapSession(conn) as imap:
        batch: list[bytes] = []
        for raw in messages:
            batch.append(raw)
            if len(batch) == chunk:
                imap.client.multiappend(folder, batch)
                batch = []
        if batch:
            imap.client.multiappend(folder, batch)


def small_message(number: int) -> bytes:
    """A plain small message, built without the email package (thousands are needed fast)."""
    head = (f"From: Bulk Sender <bulk{number}@example.test>\r\nTo: reader@example.test\r\n"
            f"Subject: bulk {number}\r\nDate: Fri, 01 Mar 2024 10:00:00 +0100\r\n"
            f"Message-ID: <bulk-{number}-{uuid.uuid4().hex}@example.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n")
    return (head + f"Message number {number}.\r\n" * 20).encode("ascii")


def fill_by_copy(conn: Connection, folder: str, count: int, *, distinct: int = 250) -> None:
    """``count`` messages in ``folder``: ``distinct`` appended, the rest server-side copies of them
    (COPY costs the server a link, APPEND a file write and an fsync each)."""
    bulk_append(conn, folder, (small_message(n) for n in range(distinct)))
    with ImapSession(conn) as imap:
        have = imap.select(folder).exists
        while have < count:
            imap.client.copy(f"1:{min(have, count - have)}", folder)
            have = imap.select(folder).exists
    assert have == count


def folder_state(conn: Connection, folder: str) -> dict[str, set[str]]:
    """Message-ID -> flags (but ``\\Recent``) of every message in ``folder``, selected read-only."""
    with ImapSession(conn) as imap:
        imap.select(folder, readonly=True)
        uids = imap.search(["ALL"])
        if not uids:
            return {}
        data = imap.client.fetch(uids, [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    state: dict[str, set[str]] = {}
    for item in data.values():
        header = next(bytes(v) for k, v in item.items() if k.startswith(b"BODY[HEADER"))
        mid = header.split(b":", 1)[1].strip().decode("ascii")
        flags = {f.decode() if isinstance(f, bytes) else str(f) for f in item[b"FLAGS"]}
        state[mid] = flags - {"\\Recent"}  # session-dependent: says nothing about what the reader did
    return state


def unseen(conn: Connection, folder: str) -> set[str]:
    return {mid for mid, flags in folder_state(conn, folder).items() if "\\Seen" not in flags}
