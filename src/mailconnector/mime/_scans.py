"""The parser's byte scans: a well-formed header block's fields, a multipart body's parts, a text body's
CRLF line ends made LF, base64 without its line ends, and UTF-8 text decoded. Between them they read every
byte of every message, so each is compiled (``_scans_c.c``) where the install could build it; the Python
twins below serve where it could not. The two give the same results on every input
(tests/unit/test_parse_scans.py holds them to each other).

The compiled UTF-8 decoding also keeps the bytes it decoded as the text's UTF-8 form, which CPython caches
in the string for whoever asks (the record's JSON does, for every body): the same bytes CPython would
otherwise rebuild a character at a time. Where the interpreter is not one whose string layout it knows, it
decodes only.
"""

from __future__ import annotations

import re

__all__ = ["COMPILED", "lf_lines", "py_lf_lines", "py_split_multipart", "py_utf8_text", "py_well_formed_fields",
           "py_without_line_ends", "split_multipart", "unfold", "utf8_text", "well_formed_fields",
           "without_line_ends"]

# One field: its name, and its value with any continuation lines (line ends kept, for the unfolding), then the
# end of its last line or of the block.
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)(?:\n|\Z)")
# A CR that does not end a line.
_LONE_CR = re.compile(rb"\r(?!\n)")


def py_well_formed_fields(buf: bytes, start: int, end: int) -> list[tuple[str, bytes]] | None:
    """The fields of a header block in which every line is a field or its continuation (nearly every one),
    as (lower-case name, unfolded value); None for anything else, which the line-by-line reading in
    ``_parse_structure.header_block`` takes with its repairs and defects. Both give the same fields."""
    fields: list[tuple[str, bytes]] = []
    pos = start
    match = _FIELD.match
    while pos < end:
        found = match(buf, pos, end)
        if found is None:
            return None
        name, value = found.groups()
        fields.append((name.decode("ascii").lower(), unfold(value.split(b"\n")) if b"\n" in value else value.strip()))
        pos = found.end()
    return fields


def unfold(lines: list[bytes]) -> bytes:
    """Join a field's lines (RFC 5322, 2.2.3): line ends go, a folding tab reads as a space."""
    if len(lines) == 1:
        return lines[0].strip()
    parts = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    for index in range(1, len(parts)):
        if parts[index].startswith(b"\t"):
            parts[index] = b" " + parts[index][1:]
    return b"".join(parts).strip()


def py_split_multipart(buf: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool]:
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


def py_lf_lines(data: bytes) -> bytes | None:
    """``data`` with the CR of every CRLF dropped; None when a CR does not end a line (it must stay)."""
    if _LONE_CR.search(data):
        return None
    return data.replace(b"\r", b"")


def py_without_line_ends(buf: bytes, start: int, end: int) -> bytes:
    """``buf[start:end]`` without its CR and LF bytes: base64 as the decoder takes it."""
    return buf[start:end].replace(b"\r", b"").replace(b"\n", b"")


def py_utf8_text(data: bytes) -> str:
    """``data`` decoded as strict UTF-8."""
    return data.decode("utf-8")


try:
    from mailconnector.mime._scans_c import (
        lf_lines,
        split_multipart,
        utf8_text,
        well_formed_fields,
        without_line_ends,
    )
except ImportError:  # built without a C compiler: the same results, slower
    COMPILED = False
    lf_lines, split_multipart, well_formed_fields = py_lf_lines, py_split_multipart, py_well_formed_fields
    utf8_text, without_line_ends = py_utf8_text, py_without_line_ends
else:
    COMPILED = True
