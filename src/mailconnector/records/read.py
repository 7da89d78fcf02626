"""The read record: what Read Email yields for one message, and the options that shape it.

The record is the contract with downstream targets (JSON, CSV, transformations), so every field is
always present, has a plain JSON type, and is described in the published JSON Schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mailconnector.errors import ConfigError

__all__ = [
    "Address",
    "AttachmentInfo",
    "AttachmentMode",
    "ParseOptions",
    "ReadRecord",
    "read_record_schema",
]

AttachmentMode = Literal["inline", "none", "directory"]
_MODES: tuple[str, ...] = ("inline", "none", "directory")


class _RecordModel(BaseModel):
    # serialize_by_alias: a plain model_dump() already says "from", like the schema.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, extra="forbid")


class Address(_RecordModel):
    """One mailbox of an address header, display name decoded."""

    name: str = Field(default="", description="Decoded display name; empty when the header gave none.")
    address: str = Field(description="The address as written (local@domain); may be malformed, see defects.")


class AttachmentInfo(_RecordModel):
    """One attachment or inline part. Never silently dropped: undelivered parts say why in `skipped`."""

    filename: str = Field(description="Safe file name (no paths, no control or reserved names).")
    content_type: str = Field(description="MIME type, lower case, e.g. application/pdf.")
    size: int = Field(
        description="Decoded size in bytes; for a skipped part, estimated from the encoded length."
    )
    content_id: str | None = Field(default=None, description="Content-ID without angle brackets.")
    inline: bool = Field(
        default=False, description="Meant to be shown inside the HTML body (cid: reference or related part)."
    )
    content_base64: str | None = Field(
        default=None, description="Decoded content as base64 (attachments: inline)."
    )
    path: str | None = Field(default=None, description="File the content was written to (attachments: directory).")
    skipped: str | None = Field(default=None, description="Why the content was not delivered, when it was not.")
    original_filename: str | None = Field(
        default=None, description="The decoded name as the message gave it, before it was made safe."
    )


class ReadRecord(_RecordModel):
    """One email as a record."""

    uid: int | None = Field(default=None, description="IMAP UID (set when read over IMAP).")
    uidvalidity: int | None = Field(default=None, description="IMAP UIDVALIDITY of the folder.")
    folder: str | None = Field(default=None, description="IMAP folder the message was read from.")
    message_id: str | None = Field(default=None, description="Message-ID with its angle brackets.")
    from_: Address | None = Field(default=None, alias="from", description="First author (From header).")
    sender: Address | None = Field(default=None, description="Sender header.")
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    bcc: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    subject: str = Field(default="", description="Decoded subject; empty when missing.")
    date: str | None = Field(
        default=None, description="Date header as ISO 8601 with offset; null when missing or unreadable."
    )
    received_at: str | None = Field(
        default=None, description="When the server received it (IMAP INTERNALDATE), ISO 8601."
    )
    in_reply_to: str | None = Field(default=None, description="First message id of In-Reply-To.")
    references: list[str] = Field(default_factory=list, description="Message ids of References, in order.")
    text: str | None = Field(default=None, description="Plain-text body, newlines as \\n.")
    html: str | None = Field(default=None, description="HTML body, newlines as \\n.")
    headers: dict[str, list[str]] = Field(
        default_factory=dict, description="Every top-level header: lower-case name -> decoded values in order."
    )
    attachments: list[AttachmentInfo] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list, description="IMAP flags (set when read over IMAP).")
    size: int = Field(default=0, description="Raw message size in bytes.")
    defects: list[str] = Field(
        default_factory=list, description="What the parser had to repair or could not read, in plain words."
    )
    raw_path: str | None = Field(default=None, description="Where the raw .eml was written, when asked.")
    raw_base64: str | None = Field(default=None, description="The raw message as base64, when asked.")


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """How much of a message to deliver. Validated here so that parsing itself never has to refuse."""

    attachments: AttachmentMode = "inline"
    directory: Path | None = None
    max_attachment_bytes: int | None = None
    include_raw: bool = False
    max_depth: int = 100

    def __post_init__(self) -> None:
        if self.attachments not in _MODES:
            raise ConfigError(f"must be one of {', '.join(_MODES)}", field="attachments")
        if self.attachments == "directory" and self.directory is None:
            raise ConfigError("a directory is required when attachments is 'directory'", field="directory")
        if self.max_attachment_bytes is not None and self.max_attachment_bytes < 0:
            raise ConfigError("must not be negative", field="max_attachment_bytes")
        if self.max_depth < 0:
            raise ConfigError("must not be negative", field="max_depth")


def read_record_schema() -> dict[str, Any]:
    """The published JSON Schema of a read record (field names as serialised: ``from``, not ``from_``)."""
    return ReadRecord.model_json_schema(by_alias=True)
