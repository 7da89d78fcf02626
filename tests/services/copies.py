"""Counting what a server accepted and delivered, for the tests that kill senders: every copy of each
Message-ID in the recipients' INBOXes (each delivered copy names its Postfix queue id in ``Received:``), and
every queue id Postfix's own log shows it accepted, delivered yet or not."""

from __future__ import annotations

import email
import re
import time
from collections.abc import Iterable
from email import policy
from pathlib import Path

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox

__all__ = ["accepted_by_postfix", "delivered", "mailbox"]

_POSTFIX_ID = re.compile(r"\(Postfix\)\s+with\s+\S+\s+id\s+([0-9A-Za-z]+)")
_CLEANUP = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(<[^>]*>)")
_ACTIVE = re.compile(r"postfix/qmgr\[\d+\]: ([0-9A-Za-z]+): from=.*\(queue active\)")


def mailbox(sandbox: Sandbox, users: Iterable[str], tok: str) -> dict[str, list[str | None]]:
    """Message-ID -> the Postfix queue id of each delivered copy, over this run's messages in the users' INBOXes."""
    found: dict[str, list[str | None]] = {}
    for user in users:
        conn = Connection.from_dict(sandbox.connection_dict(user), name=f"crash-check-{user}")
        with ImapSession(conn) as imap:
            imap.select("INBOX", readonly=True)
            uids = imap.search(["SUBJECT", tok])
            if not uids:
                continue
            data = imap.client.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID RECEIVED)]"])
        for item in data.values():
            raw = next(bytes(v) for k, v in item.items() if k.startswith(b"BODY[HEADER"))
            head = email.message_from_bytes(raw, policy=policy.compat32)
            mid = str(head.get("Message-ID", "")).strip()
            queue_ids = [m.group(1) for r in head.get_all("Received", []) if (m := _POSTFIX_ID.search(str(r)))]
            assert len(queue_ids) <= 1, f"{mid}: more than one Postfix hop: {queue_ids}"
            found.setdefault(mid, []).append(queue_ids[0] if queue_ids else None)
    return found


def accepted_by_postfix(sandbox: Sandbox, mids: set[str]) -> dict[str, set[str]]:
    """Message-ID -> the queue ids Postfix accepted (``queue active``) for it, from its log, read in order (a
    queue id can be reused later by another message). A transfer cut before its final dot never gets there."""
    text = (Path(sandbox.info.rundir) / "postfix.log").read_text(errors="replace")
    current: dict[str, str] = {}
    accepted: dict[str, set[str]] = {}
    for line in text.splitlines():
        if m := _CLEANUP.search(line):
            current[m.group(1)] = m.group(2)
        elif (m := _ACTIVE.search(line)) and current.get(m.group(1)) in mids:
            accepted.setdefault(current[m.group(1)], set()).add(m.group(1))
    return accepted


def delivered(sandbox: Sandbox, users: tuple[str, ...], tok: str, mids: set[str], must: set[str],
              timeout: float = 20) -> tuple[dict[str, list[str | None]], dict[str, set[str]]]:
    """The mailbox once Postfix has delivered everything: every Message-ID in ``must`` is there, and so is every
    queue id Postfix's log shows it accepted for one of ``mids`` (all senders have ended, so nothing more comes;
    the sandbox delivers within a second or two)."""
    deadline = time.monotonic() + timeout
    while True:
        box = mailbox(sandbox, users, tok)
        log = accepted_by_postfix(sandbox, mids)
        missing = must - box.keys()
        undelivered = {mid: sorted(qids - set(box.get(mid, []))) for mid, qids in log.items()
                       if not qids <= set(box.get(mid, []))}
        if not missing and not undelivered:
            return box, log
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s, {len(missing)} Message-ID(s) that must have been delivered are "
                                 f"not (e.g. {sorted(missing)[:3]}); accepted by Postfix, not delivered: {undelivered}")
        time.sleep(0.2)  # poll interval
