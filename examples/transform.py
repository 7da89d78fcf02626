"""Transformations used by the demo operations (examples/operations.yaml).

A transformation takes one record (a dict) and returns a record, a list of records, or None to drop it.
"""

from __future__ import annotations

from typing import Any


def extract(record: dict[str, Any]) -> dict[str, Any]:
    """A read record → the fields a downstream system wants, attachments as the paths they were saved to."""
    sender = record.get("from") or {}
    return {
        "message_id": record.get("message_id"),
        "from": sender.get("address"),
        "from_name": sender.get("name"),
        "subject": record.get("subject"),
        "date": record.get("date"),
        "text": (record.get("text") or "").strip()[:500],
        "attachments": [a.get("path") for a in record.get("attachments", []) if a.get("path")],
    }


def acknowledgement(record: dict[str, Any]) -> dict[str, Any] | None:
    """An extracted record → a reply to its sender, threaded under the original message."""
    if not record.get("from"):
        return None  # nobody to reply to: drop it
    subject = record.get("subject") or ""
    files = len(record.get("attachments") or [])
    return {
        "to": record["from"],
        "subject": subject if subject.lower().startswith("re:") else f"Re: {subject}",
        "text": f"Thank you, your message was received ({files} attachment(s)).",
        "in_reply_to": record.get("message_id"),
        "references": [record["message_id"]] if record.get("message_id") else [],
    }
