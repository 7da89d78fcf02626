"""The answer to ``UID FETCH``, parsed: what the Read Email hot path needs from each message, and UID sets.

Apart from the session (``imap.py``) because it is a parser, not I/O: IMAPClient's own response parser
tokenizes in Python, about a quarter of a millisecond per message; the common shape of the answer is read
here with one regular expression per message, and anything else goes to IMAPClient's parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from imapclient import exceptions as imap_exc

__all__ = ["FETCH_ITEMS", "FetchAhead", "FetchedMessage", "internal_date", "parse_fetch", "parse_fetch_slowly",
           "uid_and_size", "uid_sets"]


@dataclass
class FetchAhead:
    """A ``UID FETCH`` sent and not read yet (``ImapSession.ask_fetch``): the messages asked for, their UID sets
    (a batch may need more than one command line) and the tag of the one sent."""

    uids: list[int]
    sets: list[str]
    tag: bytes | None


@dataclass
class FetchedMessage:
    uid: int
    raw: bytes
    flags: tuple[str, ...]
    internal_date: datetime | None
    size: int


FETCH_ITEMS = "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]*)"')
_DATE = re.compile(rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {m.encode(): n for n, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def uid_sets(uids: Iterable[int], max_length: int = 4000) -> list[str]:
    """UIDs as compact IMAP sets ("1:5,9,12:14"), split so that no command line gets long: servers
    refuse lines past a limit (Dovecot: 64 KB), and a list of single UIDs reaches it fast."""
    ordered = sorted(set(uids))
    sets: list[str] = []
    parts: list[str] = []
    length = 0
    index = 0
    while index < len(ordered):
        last = index
        while last + 1 < len(ordered) and ordered[last + 1] == ordered[last] + 1:
            last += 1
        part = str(ordered[index]) if last == index else f"{ordered[index]}:{ordered[last]}"
        if parts and length + len(part) >= max_length:
            sets.append(",".join(parts))
            parts, length = [], 0
        parts.append(part)
        length += len(part) + 1
        index = last + 1
    if parts:
        sets.append(",".join(parts))
    return sets


def parse_fetch(data: list[Any]) -> list[FetchedMessage] | None:
    """imaplib's ``UID FETCH (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])`` answer as messages.

    Each message comes as a tuple (the items up to ``BODY[] {n}``, the n bytes) and then the rest of its
    items (at least ")"). A line without a literal is an unsolicited answer (another session changed a
    flag) and is skipped. None for any other shape (say, a body sent as a quoted string): the caller then
    uses IMAPClient's complete parser.
    """
    messages: list[FetchedMessage] = []
    head: tuple[bytes, bytes] | None = None
    for element in [*data, None]:
        if head is not None:
            rest = element if isinstance(element, bytes) else b""
            message = _fetched(head[0] + b" " + rest, head[1])
            if message is None:
                return None
            messages.append(message)
            head = None
        if isinstance(element, tuple):
            if len(element) != 2 or not element[0].rstrip().endswith(b"}") or b"BODY[]" not in element[0]:
                return None
            head = element
        elif isinstance(element, bytes) and b"BODY[]" in element:
            return None
    return messages


def _fetched(meta: bytes, raw: bytes) -> FetchedMessage | None:
    uid = _UID.search(meta)
    if uid is None:
        return None
    flags = _FLAGS.search(meta)
    size = _SIZE.search(meta)
    when = _INTERNALDATE.search(meta)
    return FetchedMessage(
        int(uid.group(1)),
        raw,
        tuple(flags.group(1).decode("utf-8", "replace").split()) if flags else (),
        internal_date(when.group(1)) if when else None,
        int(size.group(1)) if size else len(raw),
    )


def uid_and_size(meta: bytes) -> tuple[int, int] | None:
    """(UID, RFC822.SIZE) of one ``UID FETCH (RFC822.SIZE)`` answer line, or None when it lacks either."""
    uid, size = _UID.search(meta), _SIZE.search(meta)
    return (int(uid.group(1)), int(size.group(1))) if uid is not None and size is not None else None


def internal_date(text: bytes) -> datetime | None:
    """``" 1-Mar-2024 10:00:00 +0100"`` with its offset (strptime costs ten times as much)."""
    match = _DATE.fullmatch(text)
    month = _MONTHS.get(match.group(2).capitalize()) if match else None
    if match is None or month is None:
        return None
    day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
    try:
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second),
                        tzinfo=timezone(-offset if sign == b"-" else offset))
    except ValueError:
        return None


# What an unsolicited FETCH (another session changed a flag) carries; anything more was meant to be ours.
_UNSOLICITED = frozenset({b"UID", b"FLAGS", b"MODSEQ", b"SEQ"})


def parse_fetch_slowly(data: list[Any]) -> list[FetchedMessage]:
    from imapclient.response_parser import parse_fetch_response

    messages = []
    for uid, item in parse_fetch_response(data, True, True).items():
        raw = item.get(b"BODY[]")
        if raw is None:
            if set(item) - _UNSOLICITED:  # items besides flags, yet no body: a garbled answer, not a skip
                raise imap_exc.ProtocolError(f"FETCH answer for UID {uid} without its body")
            continue  # expunged meanwhile, or an unsolicited answer
        flags = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in item.get(b"FLAGS", ()))
        when = item.get(b"INTERNALDATE")
        if when is not None and when.tzinfo is None:
            when = when.astimezone()  # IMAPClient gives naive local time: keep the offset in the record
        messages.append(FetchedMessage(int(uid), bytes(raw), flags, when, int(item.get(b"RFC822.SIZE", len(raw)))))
    return messages
