"""Where a message's header fields and parts are in its bytes: the scanning half of the parser (``parse.py``
decodes what is found). Offsets into the buffer, never copies of parts; repairs are reported as defects."""

from __future__ import annotations

import re

from mailconnector.mime._parse_decode import Defects

__all__ = ["header_block", "split_multipart", "well_formed_fields"]

_HEADER_NAME = re.compile(rb"[!-9;-~]+[ \t]*")
# Stops at the first blank line: finding "\n\n" alone would scan a whole CRLF message for nothing.
_BLANK_LINE = re.compile(rb"\n\r?\n")
# One field: its name, and its value with any continuation lines (line ends kept, for the unfolding), then the
# end of its last line or of the block.
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)(?:\n|\Z)")


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
                headers.append((name, _unfold(value)))
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
        headers.append((name, _unfold(value)))
    return headers, body_start


def well_formed_fields(buf: bytes, start: int, end: int) -> list[tuple[str, bytes]] | None:
    """The fields of a header block in which every line is a field or its continuation (nearly every one),
    one regular expression match per field; None for anything else, which the line-by-line reading above
    takes with its repairs and defects. Both give the same fields."""
    fields: list[tuple[str, bytes]] = []
    pos = start
    match = _FIELD.match
    while pos < end:
        found = match(buf, pos, end)
        if found is None:
            return None
        name, value = found.groups()
        fields.append((name.decode("ascii").lower(), _unfold(value.split(b"\n")) if b"\n" in value else value.strip()))
        pos = found.end()
    return fields


def _unfold(lines: list[bytes]) -> bytes:
    """Join a field's lines (RFC 5322, 2.2.3): line ends go, a folding tab reads as a space."""
    if len(lines) == 1:
        return lines[0].strip()
    parts = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    for index in range(1, len(parts)):
        if parts[index].startswith(b"\t"):
            parts[index] = b" " + parts[index][1:]
    return b"".join(parts).strip()


def split_multipart(buf: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool]:
    """Body parts of a multipart body as (start, end) offsets, and whether the closing delimiter was seen.

    A delimiter is ``--boundary`` at the start of a line, optionally followed by ``--`` (closing),
    white space and the line end. The line end before it belongs to the delimiter (RFC 2046, 5.1.1).
    """
    delimiter = b"--" + boundary
    size = len(delimiter)
    parts: list[tuple[int, int]] = []
    part_start = -1
    pos = start
    while True:
        found = buf.find(delimiter, pos, end)
        if found < 0:
            break
        if found > start and buf[found - 1] != 10:
            pos = found + 1
            continue
        cursor = found + size
        closing = buf.startswith(b"--", cursor, end)
        if closing:
            cursor += 2
        while cursor < end and buf[cursor] in (32, 9):
            cursor += 1
        if cursor < end and buf[cursor] == 13:
            cursor += 1
        if cursor < end:
            if buf[cursor] != 10:
                pos = found + 1  # "--boundary" was only the start of a longer line
                continue
            cursor += 1
        if part_start >= 0:
            part_end = found - 1 if found > start else found
            if part_end > part_start and buf[part_end - 1] == 13:
                part_end -= 1
            parts.append((part_start, max(part_end, part_start)))
        if closing:
            return parts, True
        part_start = pos = cursor
    if part_start >= 0:
        parts.append((part_start, end))
    return parts, False
