"""Raw message bytes -> :class:`ReadRecord`: the hot path of Read Email.

Why a scanner of our own rather than the standard library's parser: ``policy.default`` is several
times slower than the usual readers and the legacy parser still splits every line in Python. Here the structure
is found with ``bytes.find`` on the message buffer (boundaries, blank lines), parts are never copied
until they are decoded, transfer decoding is done in C (``pybase64``, ``binascii``), and only the top-level headers
and the few part headers that matter are decoded. ``bench/bench_parse.py`` measures the result.

The promise is total: any input gives a record, and whatever had to be repaired is listed in
``defects``. The one exception is writing attachments to a directory, where an I/O error (disk full,
permissions) raises :class:`MessageError` -- the record would otherwise claim content that is not
there, and the message must stay unread until it can be delivered whole.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pybase64

from mailconnector.errors import MessageError
from mailconnector.mime._parse_dates import parse_date
from mailconnector.mime._parse_decode import (
    CHUNK,
    Defects,
    base64_as_is,
    decode_8bit,
    decode_all,
    decode_lines,
    decode_words,
    exceeds,
    line_chunks,
    make_decoder,
    parse_params,
)
from mailconnector.mime._parse_fields import parse_address_list, parse_msg_id, parse_msg_ids
from mailconnector.mime._parse_structure import header_block
from mailconnector.mime._safe_names import safe_filename, unique_path
from mailconnector.mime._scans import split_multipart
from mailconnector.records.read import Address, AttachmentInfo, ParseOptions, ReadRecord

__all__ = ["parse_message"]

_log = logging.getLogger("mailconnector.mime")

_DEFAULT_OPTIONS = ParseOptions()
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.+-]{1,40})""", re.I)
_GUESS_BOUNDARY = re.compile(rb"^--([\x21-\x7e]{1,200}?)[ \t]*\r?$", re.M)
_KNOWN_CTE = frozenset(["7bit", "8bit", "binary", "base64", "quoted-printable"])
_IDENTITY_CTE = {"7-bit": "7bit", "8-bit": "8bit", "8bits": "8bit", "7bits": "7bit", "": "7bit"}
_ADDRESS_HEADERS = ("from", "sender", "to", "cc", "bcc", "reply-to")
_LIST_HEADERS = ("to", "cc", "bcc", "reply-to")
_SINGLE_HEADERS = ("from", "sender", "subject", "date", "message-id", "in-reply-to", "references")
_MESSAGE_TYPES = ("message/rfc822", "message/global")


def parse_message(raw: bytes, options: ParseOptions | None = None) -> ReadRecord:
    """Parse one message. Never raises on bad input; repairs are listed in ``record.defects``.

    Raises :class:`MessageError` only when ``options.attachments == "directory"`` and an attachment
    cannot be written (the cause is chained).
    """
    opts = options if options is not None else _DEFAULT_OPTIONS
    try:
        return _Parser(raw, opts).parse()
    except MessageError:
        raise
    except Exception as exc:  # the promise is a record for every input: a bug must not lose the message
        _log.warning("parser failed on a %d-byte message; returning a minimal record", _size(raw), exc_info=True)
        return ReadRecord(
            size=_size(raw),
            defects=[f"the parser failed ({type(exc).__name__}); only the size (and raw message, if asked) is given"],
            raw_base64=_b64(bytes(raw)) if opts.include_raw and isinstance(raw, bytes | bytearray) else None,
        )


def _size(raw: object) -> int:
    return len(raw) if isinstance(raw, bytes | bytearray | memoryview | str) else 0


def _b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


@dataclass(slots=True)
class _Entity:
    """One MIME entity: where its headers and body are in the buffer, and where it sits in the tree."""

    start: int
    body_start: int
    end: int
    headers: list[tuple[str, bytes]]
    path: str  # IMAP-style part number ("2.1"); "" for the top-level message
    depth: int
    parent: str  # content type of the enclosing multipart; "" at the top

    @property
    def what(self) -> str:
        return f"part {self.path}" if self.path else "body"

    def first(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Parser:
    """One message, parsed once. Holds the buffer and collects bodies, attachments and defects."""

    def __init__(self, raw: bytes, options: ParseOptions) -> None:
        self.defects = Defects()
        if not isinstance(raw, bytes):
            if isinstance(raw, str):
                self.defects.add("message given as text, not bytes; encoded as utf-8")
                raw = raw.encode("utf-8", "surrogateescape")
            else:
                raw = bytes(raw)
        self.raw = raw
        self.buf = raw
        if b"\n" not in raw and b"\r" in raw:
            self.buf = raw.replace(b"\r", b"\n")
            self.defects.add("line ends are bare CR; read as line feeds")
        self.options = options
        self.limit = options.max_attachment_bytes
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[AttachmentInfo] = []

    # ----------------------------------------------------------------------------------------- record

    def parse(self) -> ReadRecord:
        buf = self.buf
        if not buf:
            self.defects.add("the message is empty")
        headers, body_start = header_block(buf, 0, len(buf), self.defects, "message headers")
        if buf and not headers:
            self.defects.add("the message has no headers")
        fields = self._top_fields(headers)
        self._walk(_Entity(0, body_start, len(buf), headers, "", 0, ""))
        return ReadRecord(**fields, text=self.text, html=self.html, attachments=self.attachments, size=len(self.raw),
                          defects=self.defects.result(),
                          raw_base64=_b64(self.raw) if self.options.include_raw else None)

    def _decode_header(self, name: str, raw: bytes) -> tuple[str, str]:
        """(text before RFC 2047 decoding, decoded text) of one header; lenient fallback with a defect."""
        if raw.isascii():  # nearly every header: nothing to decode or repair
            text = raw.decode("ascii")
            if "=?" not in text and "\x00" not in text:
                return text, text
        what = f"header {name!r}"
        try:
            text = decode_8bit(raw, what, self.defects)
            if "\x00" in text:
                text = text.replace("\x00", "")
                self.defects.add(f"{what}: NUL characters removed")
            return text, decode_words(text, what, self.defects)
        except Exception:  # a bug in a decoder must cost one header's polish, not the message
            _log.debug("header decoding failed", exc_info=True)
            self.defects.add(f"{what}: could not be decoded; kept as raw text")
            text = raw.decode("latin-1").replace("\x00", "")
            return text, text

    def _top_fields(self, headers: list[tuple[str, bytes]]) -> dict[str, Any]:
        """The record's fields read from the top-level headers."""
        decoded: dict[str, list[str]] = {}
        undecoded: dict[str, list[str]] = {}
        for name, raw in headers:
            text, value = self._decode_header(name, raw)
            decoded.setdefault(name, []).append(value)
            if name in _ADDRESS_HEADERS:
                undecoded.setdefault(name, []).append(text)
        for name in _SINGLE_HEADERS:
            count = len(decoded.get(name, ()))
            if count > 1:
                self.defects.add(f"header {name!r} appears {count} times; the first is used")
        for name in _LIST_HEADERS:
            count = len(decoded.get(name, ()))
            if count > 1:
                self.defects.add(f"header {name!r} appears {count} times; all are used")

        def addresses(name: str, only_first: bool) -> list[Address]:
            what = f"header {name!r}"
            values = undecoded.get(name, [])
            found: list[Address] = []
            for value in values[:1] if only_first else values:
                pairs = parse_address_list(value, what, self.defects,
                                           lambda text: decode_words(text, what, self.defects))
                found.extend(Address(name=n, address=a) for n, a in pairs)
            if values and not found and only_first:
                self.defects.add(f"{what} holds no address")
            return found

        def first(name: str) -> str | None:
            values = decoded.get(name)
            return values[0] if values else None

        if "from" not in decoded:
            self.defects.add("no 'from' header")
        authors = addresses("from", True)
        senders = addresses("sender", True)
        date_text = first("date")
        if date_text is None:
            self.defects.add("no 'date' header")
            date = None
        else:
            date = parse_date(date_text, self.defects)
        message_id = first("message-id")
        in_reply_to = first("in-reply-to")
        references = first("references")
        return dict(
            message_id=parse_msg_id(message_id, "header 'message-id'", self.defects) if message_id else None,
            from_=authors[0] if authors else None,
            sender=senders[0] if senders else None,
            to=addresses("to", False),
            cc=addresses("cc", False),
            bcc=addresses("bcc", False),
            reply_to=addresses("reply-to", False),
            subject=(first("subject") or "").strip(),
            date=date,
            in_reply_to=(
                parse_msg_id(in_reply_to, "header 'in-reply-to'", self.defects) if in_reply_to else None
            ),
            references=parse_msg_ids(references, "header 'references'", self.defects) if references else [],
            headers=decoded,
        )

    # ----------------------------------------------------------------------------------------- structure

    def _walk(self, top: _Entity) -> None:
        """Depth-first, in document order, with an explicit stack: nesting depth costs no recursion."""
        stack = [top]
        while stack:
            entity = stack.pop()
            ctype, params = self._content_type(entity)
            if ctype.startswith("multipart/"):
                children = self._children(entity, ctype, params)
                if children is not None:
                    stack.extend(reversed(children))
                    continue
                ctype, params = "text/plain", {"charset": params.get("charset", "")}
            self._leaf(entity, ctype, params)

    def _content_type(self, entity: _Entity) -> tuple[str, dict[str, str]]:
        raw = entity.first("content-type")
        default = "message/rfc822" if entity.parent == "multipart/digest" else "text/plain"
        if raw is None:
            return default, {}
        what = f"{entity.what} content type"
        ctype, params = parse_params(decode_8bit(raw, what, self.defects), what, self.defects)
        if not _CONTENT_TYPE.fullmatch(ctype):
            self.defects.add(f"{entity.what}: invalid content type {ctype[:60]!r}; read as {default}")
            return default, params
        return ctype, params

    def _children(self, entity: _Entity, ctype: str, params: dict[str, str]) -> list[_Entity] | None:
        """The parts of a multipart; None when it has none and its body should be read as text."""
        buf = self.buf
        if entity.depth >= self.options.max_depth:
            self.defects.add(
                f"multipart nesting deeper than {self.options.max_depth} levels; the rest kept as one attachment"
            )
            # The entity with its own headers (the boundary is there), line ends as IMAP would give them.
            self._attachment(entity, ctype, "attachment", None, "8bit", whole=True)
            return []
        boundary = params.get("boundary", "").encode("utf-8", "replace")
        parts: list[tuple[int, int]] = []
        closed = False
        if boundary:
            parts, closed = split_multipart(buf, entity.body_start, entity.end, boundary)
        if not parts:
            guessed = self._guess_boundary(entity)
            if guessed is not None and guessed != boundary:
                parts, closed = split_multipart(buf, entity.body_start, entity.end, guessed)
                if parts:
                    self.defects.add(f"{entity.what}: {ctype} {self._boundary_fault(boundary)}; "
                                     "used the boundary found in the body")
        if not parts:
            self.defects.add(f"{entity.what}: {ctype} {self._boundary_fault(boundary)}; its body is read as text")
            return None
        if not closed:
            self.defects.add(f"{entity.what}: {ctype} has no closing boundary (message cut short?)")
        children = []
        for number, (start, end) in enumerate(parts, 1):
            path = f"{entity.path}.{number}" if entity.path else str(number)
            headers, body_start = header_block(buf, start, end, self.defects, f"part {path}")
            children.append(_Entity(start, body_start, end, headers, path, entity.depth + 1, ctype))
        return children

    @staticmethod
    def _boundary_fault(boundary: bytes) -> str:
        if not boundary:
            return "has no boundary parameter"
        shown = boundary.decode("utf-8", "replace")
        return f"boundary {shown[:70]!r} never found"

    def _guess_boundary(self, entity: _Entity) -> bytes | None:
        match = _GUESS_BOUNDARY.search(self.buf, entity.body_start, entity.end)
        if match is None:
            return None
        found = match.group(1)
        if found.endswith(b"--") and len(found) > 2:
            # The first delimiter line seen was a closing one.
            found = found[:-2]
        return found

    def _cte(self, entity: _Entity) -> str:
        raw = entity.first("content-transfer-encoding")
        if raw is None:
            return "7bit"
        value = raw.decode("latin-1").strip().lower()
        value = value.split()[0].strip("\"'") if value.split() else ""
        if value in _KNOWN_CTE:
            return value
        if value in _IDENTITY_CTE:
            return _IDENTITY_CTE[value]
        self.defects.add(f"{entity.what}: unknown transfer encoding {value[:40]!r}; content kept as it is")
        return "binary"

    def _leaf(self, entity: _Entity, ctype: str, params: dict[str, str]) -> None:
        disposition = ""
        disposition_params: dict[str, str] = {}
        raw = entity.first("content-disposition")
        if raw is not None:
            what = f"{entity.what} content disposition"
            disposition, disposition_params = parse_params(decode_8bit(raw, what, self.defects), what,
                                                           self.defects)
        filename = (disposition_params.get("filename") or params.get("name") or "").strip() or None
        cte = self._cte(entity)
        # RFC 2183: an unknown disposition type is treated as an attachment.
        marked = disposition not in ("", "inline") or filename is not None
        if not marked and ctype == "text/plain" and self.text is None:
            self.text = self._body(entity, params, cte, ctype)
            return
        if not marked and ctype == "text/html" and self.html is None:
            self.html = self._body(entity, params, cte, ctype)
            return
        self._attachment(entity, ctype, disposition, filename, cte)

    def _body(self, entity: _Entity, params: dict[str, str], cte: str, ctype: str) -> str:
        what = f"{entity.what} ({ctype})"
        data = decode_all(self.buf, entity.body_start, entity.end, cte, False, what, self.defects)
        charset = params.get("charset")
        if not charset and ctype == "text/html" and not data.isascii():
            meta = _META_CHARSET.search(data, 0, 4096)
            if meta is not None:
                charset = meta.group(1).decode("ascii")
        text = decode_lines(data, charset, what, self.defects)
        if "\x00" in text:
            text = text.replace("\x00", "")
            self.defects.add(f"{what}: NUL characters removed")
        return text

    # ----------------------------------------------------------------------------------------- attachments

    def _content_id(self, entity: _Entity) -> str | None:
        raw = entity.first("content-id")
        if raw is None:
            return None
        text = decode_8bit(raw, f"{entity.what} content id", self.defects).strip()
        if text.startswith("<"):
            text = text[1:]
        if text.endswith(">"):
            text = text[:-1]
        return text.strip() or None

    def _nested_subject(self, entity: _Entity, cte: str) -> str:
        """The subject of an attached message, to name it; read from its first 64 KB at most."""
        scratch = Defects()
        start, end = entity.body_start, entity.end
        if cte in ("base64", "quoted-printable"):
            stop = min(end, start + 65536)
            newline = self.buf.rfind(b"\n", start, stop)
            stop = end if stop == end or newline < 0 else newline + 1
            data = make_decoder(cte, False).feed(self.buf, start, stop)
            headers, _ = header_block(data, 0, len(data), None, "")
        else:
            headers, _ = header_block(self.buf, start, end, None, "")
        for name, raw in headers:
            if name == "subject":
                return decode_words(decode_8bit(raw, "", scratch), "", scratch).strip()
        return ""

    def _attachment(self, entity: _Entity, ctype: str, disposition: str, filename: str | None, cte: str,
                    *, whole: bool = False) -> None:
        """List one attachment and deliver its content as the options say.

        Content in 7bit, 8bit or quoted-printable is line-based whatever its type, so its line ends are
        made CRLF (as an IMAP server delivers them): a message read from an LF file gives the same bytes.
        """
        buf = self.buf
        start = entity.start if whole else entity.body_start
        end = entity.end
        what = f"{entity.what} ({ctype})"
        content_id = self._content_id(entity)
        name = filename or ""
        if filename is None and ctype in _MESSAGE_TYPES:
            subject = self._nested_subject(entity, cte)
            name = subject + ".eml" if subject else ""
        inline = disposition != "attachment" and (
            (disposition == "inline" and content_id is not None) or entity.parent == "multipart/related"
        )
        info = AttachmentInfo(
            filename=safe_filename(name, ctype),
            content_type=ctype,
            size=0,
            content_id=content_id,
            inline=inline,
            original_filename=filename,
        )
        mode = self.options.attachments
        too_big = f"larger than max_attachment_bytes ({self.limit})"
        # Judged on the encoded bytes before anything is decoded: a huge part is never held decoded.
        if (estimate := exceeds(buf, start, end, cte, self.limit)) is not None:
            info.size = estimate
            info.skipped = too_big
        elif mode == "inline":
            as_is = base64_as_is(buf, start, end) if cte == "base64" else None
            if as_is is not None:
                info.content_base64, info.size = as_is
            else:
                data = decode_all(buf, start, end, cte, True, what, self.defects)
                info.size = len(data)
                info.content_base64 = _b64(data)
            if self.limit is not None and info.size > self.limit:
                info.content_base64 = None
                info.skipped = too_big
        elif mode == "none":
            as_is = base64_as_is(buf, start, end) if cte == "base64" and end - start <= 8 * CHUNK else None
            if as_is is not None:
                info.size = as_is[1]
            else:
                info.size = sum(len(piece) for piece in self._chunks(start, end, cte, what))
            if self.limit is not None and info.size > self.limit:
                info.skipped = too_big
        else:
            self._write(info, start, end, cte, what)
        self.attachments.append(info)

    def _chunks(self, start: int, end: int, cte: str, what: str) -> Iterator[bytes]:
        """The decoded content in pieces of about a megabyte, so no part is ever whole in memory."""
        decoder = make_decoder(cte, True)
        for chunk_start, chunk_end in line_chunks(self.buf, start, end, CHUNK, cte == "base64"):
            yield decoder.feed(self.buf, chunk_start, chunk_end)
        yield decoder.finish()
        decoder.report(what, self.defects)

    def _write(self, info: AttachmentInfo, start: int, end: int, cte: str, what: str) -> None:
        directory = self.options.directory
        assert directory is not None  # ParseOptions refuses "directory" without one
        index = len(self.attachments)
        path, handle = _create(Path(directory), info.filename, index)
        size = 0
        try:
            with handle:
                for piece in self._chunks(start, end, cte, what):
                    handle.write(piece)
                    size += len(piece)
        except OSError as exc:
            _remove(path)
            raise MessageError(
                f"cannot write attachment {path.name!r}: {exc.strerror or type(exc).__name__}",
                field=f"attachments[{index}]",
            ) from exc
        info.size = size
        if self.limit is not None and size > self.limit:
            _remove(path)
            info.skipped = f"larger than max_attachment_bytes ({self.limit})"
            return
        info.filename = path.name
        info.path = str(path)


def _create(directory: Path, name: str, index: int) -> tuple[Path, IO[bytes]]:
    """Create a new file exclusively (never following or replacing what is there), and the directory with
    the first one: most messages have no attachment, and a directory costs a file system round trip."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MessageError(f"cannot create the directory for attachment {name!r}: "
                           f"{exc.strerror or type(exc).__name__}", field=f"attachments[{index}]") from exc
    for _ in range(1000):
        path = unique_path(directory, name)
        try:
            return path, open(path, "xb")  # closed by the caller's with-block
        except FileExistsError:
            continue  # lost a race with another writer: take the next free name
        except OSError as exc:
            raise MessageError(
                f"cannot write attachment {name!r}: {exc.strerror or type(exc).__name__}",
                field=f"attachments[{index}]",
            ) from exc
    raise MessageError(f"cannot find a free file name for attachment {name!r}", field=f"attachments[{index}]")


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        _log.debug("could not remove a partly written attachment", exc_info=True)
