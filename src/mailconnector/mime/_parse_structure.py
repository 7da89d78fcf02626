"""Where a message's header fields are in its bytes, whatever shape the block is in: the careful reading,
with its repairs reported as defects, behind the one-match-per-field scan of ``_scans.py`` (``parse.py``
decodes what is found). Offsets into the buffer, never copies of parts."""

from __future__ import annotations

import re

from mailconnector.mime._parse_decode import Defects
from mailconnector.mime._scans import unfold, well_formed_fields

__all__ = ["header_block"]

_HEADER_NAME = re.compile(rb"[!-9;-~]+[ \t]*")
# Stops at the first blank line: finding "\n\n" alone would scan a whole CRLF message for nothing.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def header_block(buf: bytes, start: int, end: int, defects: Defects | None,
                  what: str) -> tuple[list[tuple[str, bytes]], int]:
    """Headers of the entity at ``buf[start:end]`` as (lower-case name, unfolded value) and the body start.

    A line that is neither a header nor a continuation ends the headers (the blank line is missing).
    """
    if start >= end:
        return [], end
    if buf.startswith(b"\n", start, end):
        return [], start + 1
    if buf.startswith(b"\r\n", start, end):
        return [], start + 2
    blank = _BLANK_LINE.search(buf, start, end)
    if blank is not None:
        block_end, body_start = blank.start() + 1, blank.end()
    else:
        block_end = body_start = end
    fields = well_formed_fields(buf, start, block_end)
    if fields is not None:
        return fields, body_start
    headers: list[tuple[str, bytes]] = []
    name: str | None = None
    value: list[bytes] = []
    pos = start
    for index, line in enumerate(buf[start:block_end].split(b"\n")):
        line_start = pos
        pos += len(line) + 1
        if not line or line == b"\r":
            continue
        first = line[0]
        if first == 32 or first == 9:
            if name is not None:
                value.append(line)
            elif defects is not None:
                defects.add(f"{what}: indented first header line ignored")
            continue
        colon = line.find(b":")
        if colon > 0 and _HEADER_NAME.fullmatch(line, 0, colon):
            if name is not None:
                headers.append((name, unfold(value)))
            name = line[:colon].rstrip(b" \t").decode("ascii").lower()
            value = [line[colon + 1 :]]
            continue
        if index == 0 and line.startswith(b"From "):
            continue  # an mbox separator line, not part of the message
        if defects is not None:
            defects.add(f"{what}: headers end without a blank line; the rest is read as the body")
        body_start = line_start
        break
    if name is not None:
        headers.append((name, unfold(value)))
    return headers, body_start
