"""The Read Email activity's settings: what may be asked of a read, checked before any connection is made.

Kept apart from ``read.py``: settings are checked when a project is loaded, long before anything is read,
and ``read.py`` is about the reading itself. ``read.py`` re-exports ``ReadSettings``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigError
from ._search import Criteria

__all__ = ["ReadSettings"]

_AFTER_READ = re.compile(r"mark_read|keep_unread|delete|move:.+")  # fullmatch: no trailing newline


class ReadSettings(BaseModel):
    """The Read Email activity's settings (SPEC section 3)."""

    model_config = ConfigDict(extra="forbid")

    folder: str = "INBOX"
    criteria: Criteria = Field(default_factory=Criteria)
    include_read: bool = False
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(50, ge=1, le=5000)
    attachments: Literal["inline", "none", "directory"] = "inline"
    directory: Path | None = Field(None, description="where attachments (and raw .eml) go for attachments: directory")
    max_attachment_bytes: int | None = Field(25 * 1024 * 1024, ge=0)
    after_read: str = "mark_read"
    include_raw: bool = False
    peek: bool = Field(False, description="look without touching: the folder is opened read-only, nothing is "
                       "marked, moved or recorded in the state store (no lease either), whatever was read before")
    include_delivered: bool = Field(False, description="read again what an earlier run already delivered (and "
                                    "still matches the search: e.g. kept unread), instead of skipping it")
    create_missing: bool = Field(False, description="with after_read move:FOLDER: create FOLDER (and its missing "
                                 "parents, subscribed) when it does not exist, instead of refusing to start")

    @field_validator("after_read")
    @classmethod
    def _after(cls, v: str) -> str:
        if not _AFTER_READ.fullmatch(v):
            raise ValueError("must be mark_read, keep_unread, delete or move:FOLDER")
        return v

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        if not v or any(c in v for c in "\r\n\0"):
            raise ValueError("folder is empty or contains CR, LF or NUL")
        return v

    @field_validator("criteria", mode="before")
    @classmethod
    def _criteria(cls, v: Any) -> Any:
        return {"raw": v} if isinstance(v, str) else v

    def check(self) -> None:
        if self.peek and self.after_read != "keep_unread":
            if self.after_read != "mark_read":  # the default: a peek replaces it
                raise ConfigError(f"peek reads without any after-read action; after_read {self.after_read} "
                                  "contradicts it", field="after_read", hint="remove after_read, or peek")
            self.after_read = "keep_unread"
        if self.attachments == "directory" and self.directory is None:
            raise ConfigError("attachments: directory needs a directory", field="directory")
        if self.create_missing and self.move_to is None:
            raise ConfigError("create_missing applies only to after_read: move:FOLDER", field="create_missing",
                              hint="set after_read to move:FOLDER, or remove create_missing")

    @property
    def move_to(self) -> str | None:
        return self.after_read[5:] if self.after_read.startswith("move:") else None
