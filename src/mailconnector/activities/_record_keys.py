"""A record's identity in its input: its content and its occurrence, not its position.

Message-IDs derived from it survive an edit elsewhere in the input: fix one bad line and rerun, and only
that line is new (a hash of the whole input, or a record's position, would make every record new, or the
wrong one old). Two identical records are two messages: the second is the content's second occurrence.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["RecordKeys"]


class RecordKeys:
    """Hands out ``DIGEST:N`` for each record in input order (N counts earlier records of equal content)."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def key(self, record: Mapping[str, Any] | BaseModel | object) -> str:
        digest = hashlib.sha256(_canonical(record)).hexdigest()[:32]
        occurrence = self._seen[digest]
        self._seen[digest] += 1
        return f"{digest}:{occurrence}"


def _canonical(record: object) -> bytes:
    if isinstance(record, BaseModel):
        record = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not isinstance(record, Mapping):  # an input error standing in for a record: its text is its content
        return repr(record).encode()
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")).encode()
