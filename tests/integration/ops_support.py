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

__all__ = ["append_messages", "jsonl", "make_message", "read_state", "write_project"]


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


def read_state(conn: Connection, folder: str) -> dict[str, bool]:
    """Subject -> seen, for every message in the folder."""
    with ImapSession(conn) as imap:
        imap.select(folder, readonly=True)
        uids = imap.search(["ALL"])
        if not uids:
            return {}
        data = imap.client.fetch(uids, [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    state: dict[str, bool] = {}
    for item in data.values():
        header = b""
        for key, value in item.items():
            if key.startswith(b"BODY[HEADER"):
                header = bytes(value)
        subject = str(message_from_bytes(header, policy=default).get("subject", ""))
        assert subject not in state, f"two messages with subject {subject!r}"
        state[subject] = b"\\Seen" in item[b"FLAGS"]
    return state


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
