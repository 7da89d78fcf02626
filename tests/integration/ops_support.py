"""Helpers for the operation and watch tests: project files pointing at a sandbox, messages put into a
folder with IMAP APPEND (an arrival as far as the server and an IDLE client can tell), and flag snapshots."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import yaml

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox

__all__ = ["append_messages", "jsonl", "make_message", "read_state", "subjects_in", "write_project"]


def write_project(path: Path, sandbox: Sandbox, connections: dict[str, str], activities: dict[str, Any],
                  operations: dict[str, Any], settings: dict[str, Any] | None = None) -> Path:
    """``connections`` maps a connection name to a sandbox user."""
    doc: dict[str, Any] = {
        "connections": {name: sandbox.connection_dict(user) for name, user in connections.items()},
        "activities": activities,
        "operations": operations,
    }
    if settings:
        doc["settings"] = settings
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def make_message(subject: str, *, sender: str = "someone@example.test", to: str = "erin@example.test",
                 body: str = "hello", message_id: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.test>"
    msg.set_content(body)
    return msg.as_bytes()


def append_messages(conn: Connection, folder: str, subjects: Iterable[str]) -> None:
    """One MULTIAPPEND (RFC 3502) for all of them: one APPEND per message costs a round trip each."""
    messages = [make_message(subject).decode() for subject in subjects]
    with ImapSession(conn) as imap:
        if messages:
            imap.client.multiappend(folder, messages)


def _fetch_subjects(conn: Connection, folder: str, search: list[Any]) -> list[tuple[str, bool]]:
    with ImapSession(conn) as imap:
        imap.select(folder, readonly=True)
        uids = imap.search(search)
        if not uids:
            return []
        data = imap.client.fetch(uids, [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    found: list[tuple[str, bool]] = []
    for item in data.values():
        header = b""
        for key, value in item.items():
            if key.startswith(b"BODY[HEADER"):
                header = bytes(value)
        subject = str(message_from_bytes(header, policy=default).get("subject", ""))
        found.append((subject, b"\\Seen" in item[b"FLAGS"]))
    return found


def read_state(conn: Connection, folder: str) -> dict[str, bool]:
    """Subject -> seen, for every message of a folder this test has to itself (subjects are unique there)."""
    state: dict[str, bool] = {}
    for subject, seen in _fetch_subjects(conn, folder, ["ALL"]):
        assert subject not in state, f"two messages with subject {subject!r}"
        state[subject] = seen
    return state


def subjects_in(conn: Connection, folder: str, token: str) -> list[str]:
    """The subjects containing ``token`` (duplicates kept, sorted), in a folder other tests share."""
    return sorted(s for s, _ in _fetch_subjects(conn, folder, ["SUBJECT", token]) if token in s)


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
