"""The MIME parts of a composed message: text bodies, attachments, and the multipart tree that holds them.

Kept apart from :mod:`mailconnector.mime.compose`, which turns a record into headers and calls
:func:`attachment_parts` and :func:`fill_body` for the body (its docstring draws the tree). Bodies are
always 7-bit clean, so a message never depends on the server's 8BITMIME. Content types and transfer
encodings are written pre-formatted with ``set_raw()``, since the header registry is the slow part of
composing; only attachment headers (RFC 2231 file names, parameters) go through it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
from collections.abc import Iterable, Sequence
from email import policy
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import TYPE_CHECKING

from mailconnector.errors import MessageError
from mailconnector.mime._addresses import short
from mailconnector.mime._compose_checks import header_text, msg_id
from mailconnector.mime._header_fields import MAX_LINE_OCTETS
from mailconnector.records.send import MAX_FILENAME_CHARS, AttachmentSpec, guess_content_type, parse_content_type

if TYPE_CHECKING:
    from mailconnector.mime.compose import PathPolicy

__all__ = ["NEWLINES", "attachment_parts", "fill_body", "resolve_path"]

# Attachment parts are built under a 7-bit policy so set_content never picks 8bit. Rendering never
# refolds values we stored pre-formatted.
_PART_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")
_ASCII_BYTES = bytes(range(128))
NEWLINES = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile("[^\t\n\x0c -~]")  # in ASCII text: what 7bit should not carry
_WHITESPACE = re.compile(r"\s+")


def resolve_path(name: str, base_dir: Path | None) -> Path:
    """A record's relative paths are relative to ``base_dir`` (the project), not to the process."""
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return path


# --------------------------------------------------------------------------- attachments


def attachment_parts(
    attachments: Sequence[AttachmentSpec], base_dir: Path | None, paths: PathPolicy | None
) -> tuple[list[MIMEPart], list[MIMEPart]]:
    """(inline parts, regular parts), in the record's order; the first bad attachment raises."""
    inline_parts: list[MIMEPart] = []
    regular_parts: list[MIMEPart] = []
    for index, spec in enumerate(attachments):
        if spec.inline:
            inline_parts.append(_attachment_part(spec, index, base_dir, inline=True, paths=paths))
        else:
            regular_parts.append(_attachment_part(spec, index, base_dir, inline=False, paths=paths))
    return inline_parts, regular_parts


def _attachment_bytes(spec: AttachmentSpec, index: int, base_dir: Path | None,
                      paths: PathPolicy | None = None) -> bytes:
    if spec.content_base64 is not None:
        field = f"attachments[{index}].content_base64"
        compact = _WHITESPACE.sub("", spec.content_base64)
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MessageError(f"is not valid base64: {exc}", field=field) from None
    field = f"attachments[{index}].path"
    if spec.path is None:
        raise MessageError("give one of content_base64 or path", field=f"attachments[{index}]")
    if "\x00" in spec.path:
        raise MessageError(f"{short(spec.path)} contains a NUL character", field=field)
    path = resolve_path(spec.path, base_dir)
    if paths is not None:
        paths.check(path, field)
    try:
        if not path.is_file():
            if not path.exists():
                raise MessageError(f"file not found: {short(str(path))}", field=field)
            # Devices and FIFOs could block or never end; directories cannot be attached.
            raise MessageError(f"{short(str(path))} is not a regular file", field=field)
        return path.read_bytes()
    except OSError as exc:
        raise MessageError(f"{short(str(path))} cannot be read: {exc.strerror}", field=field) from None


def _filename(spec: AttachmentSpec, index: int) -> str | None:
    name = spec.display_name
    if name is None:
        return None
    field = f"attachments[{index}].filename" if spec.filename else f"attachments[{index}].path"
    header_text(name, field)
    if len(name) > MAX_FILENAME_CHARS:
        raise MessageError(
            f"is {len(name)} characters long; at most {MAX_FILENAME_CHARS} are allowed", field=field
        )
    if spec.filename is not None and ("/" in name or "\\" in name):
        raise MessageError(f"{short(name)} must be a bare file name, without directories", field=field)
    return name


def _seven_bit_message(data: bytes) -> str | None:
    """An embedded message as CRLF text if it may travel as 7bit (RFC 2046 forbids base64 there)."""
    if not data.isascii() or b"\x00" in data:
        return None
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if any(len(line) > MAX_LINE_OCTETS for line in lines):
        return None
    return b"\r\n".join(lines).decode("ascii")


def _attachment_part(spec: AttachmentSpec, index: int, base_dir: Path | None, *, inline: bool,
                     paths: PathPolicy | None = None) -> MIMEPart:
    name = _filename(spec, index)
    content_id = None
    if spec.content_id is not None:
        content_id = msg_id(spec.content_id, f"attachments[{index}].content_id", require_at=False)
    content_type = spec.content_type or guess_content_type(name or spec.path)
    try:
        maintype, subtype, params = parse_content_type(content_type)
    except ValueError as exc:
        raise MessageError(str(exc), field=f"attachments[{index}].content_type") from None
    data = _attachment_bytes(spec, index, base_dir, paths)
    disposition = "inline" if inline else "attachment"
    part = _new()
    if maintype == "message":
        text = _seven_bit_message(data)
        if text is not None:
            part["Content-Type"] = f"{maintype}/{subtype}"
            for key, value in params.items():
                part.set_param(key, value)
            part["Content-Transfer-Encoding"] = "7bit"
            part["Content-Disposition"] = disposition
            if name is not None:
                part.set_param("filename", name, header="Content-Disposition")
            if content_id is not None:
                part["Content-ID"] = content_id
            part.set_payload(text)
            return part
        # Not 7-bit clean: carry it as opaque bytes rather than break the message/* encoding rules.
        maintype, subtype, params = "application", "octet-stream", {}
    # The headers come from set_content (RFC 2231 names, parameters); the body is encoded here, the same
    # 76-column base64 as set_content's, at a fraction of its per-line Python loop (the hot spot of bulk
    # sending with attachments).
    part.set_content(
        b"",
        maintype,
        subtype,
        disposition=disposition,
        filename=name,
        cid=content_id,
        params=params or None,
    )
    part.set_payload(_base64_body(data))
    return part


def _base64_body(data: bytes) -> str:
    """Base64 in lines of 76 characters, each ending in a newline (as ``base64.encodebytes``)."""
    encoded = binascii.b2a_base64(data, newline=False)
    full = len(encoded) // 76
    # One C call splits the full lines. A Struct of its own, not struct.unpack(): the module-level
    # functions cache every format they see, and this one is as long as the attachment is big.
    lines = list(struct.Struct("76s" * full).unpack(encoded[: full * 76])) if full else []
    if len(encoded) % 76:
        lines.append(encoded[full * 76:])
    del encoded
    if not lines:
        return ""
    lines.append(b"")
    joined = b"\n".join(lines)
    del lines  # before the copy into a str: a 1 MB attachment then peaks at ~3 MB here, not ~5 MB
    return joined.decode("ascii")


# --------------------------------------------------------------------------- bodies and the tree


def _body(content: str) -> tuple[str, str]:
    """(payload, Content-Transfer-Encoding) for a text body, always 7-bit clean, ending in a newline."""
    if "\r" in content:
        content = NEWLINES.sub("\n", content)
    if not content.endswith("\n"):
        content += "\n"
    if (
        content.isascii()
        and not _CONTROL.search(content)
        and max(map(len, content.split("\n"))) <= MAX_LINE_OCTETS
    ):
        return content, "7bit"
    data = content.encode("utf-8")
    high = len(data.translate(None, _ASCII_BYTES))
    # Quoted-printable triples each non-ASCII byte; base64 costs a third of everything.
    if high * 6 > len(data):
        return base64.encodebytes(data).decode("ascii"), "base64"
    return binascii.b2a_qp(data, istext=True).decode("ascii"), "quoted-printable"


def _text_part(target: MIMEPart, content: str, subtype: str) -> MIMEPart:
    payload, cte = _body(content)
    target.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    target.set_raw("Content-Transfer-Encoding", cte)
    target.set_payload(payload)
    return target


def _multipart(target: MIMEPart, subtype: str, children: Iterable[MIMEPart], params: str = "") -> MIMEPart:
    # A random boundary cannot occur in the content by chance, so the generator need not search for it.
    boundary = f"=_{secrets.token_hex(16)}"
    target.set_raw("Content-Type", f'multipart/{subtype};{params}\n boundary="{boundary}"')
    for child in children:
        target.attach(child)
    return target


def _new() -> MIMEPart:
    return MIMEPart(policy=_PART_POLICY)


def fill_body(
    root: EmailMessage,
    text: str | None,
    html: str | None,
    inline: list[MIMEPart],
    regular: list[MIMEPart],
) -> None:
    """Put the body tree into ``root`` (which already carries the envelope headers)."""
    if html is None and inline:
        # Nothing can reference them; send them along, still marked inline with their Content-ID.
        regular = inline + regular
        inline = []

    def html_node(target: MIMEPart) -> MIMEPart:
        if not inline:
            return _text_part(target, html or "", "html")
        return _multipart(target, "related", [_text_part(_new(), html or "", "html"), *inline],
                          ' type="text/html";')

    def body_node(target: MIMEPart) -> MIMEPart:
        if text is not None and html is not None:
            return _multipart(target, "alternative", [_text_part(_new(), text, "plain"), html_node(_new())])
        if html is not None:
            return html_node(target)
        return _text_part(target, text or "", "plain")

    root.set_raw("MIME-Version", "1.0")
    if not regular:
        body_node(root)
        return
    body = [body_node(_new())] if text is not None or html is not None else []
    _multipart(root, "mixed", [*body, *regular])
