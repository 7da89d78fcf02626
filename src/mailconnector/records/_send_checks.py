"""The field checks of a send record, apart from the models so that those read as the record's shape.

Each check is a pydantic validator: it takes the raw or parsed value and returns it (maybe normalised) or
raises ValueError, whose text becomes the field's message. The address, id and header-text rules live in
:mod:`mailconnector.mime._addresses`, shared with the composer, which checks the same values again.
"""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any

from mailconnector.mime import _addresses as addresses
from mailconnector.mime._templates import compile_template

__all__ = [
    "MAX_FILENAME_CHARS",
    "PRIORITY_HEADERS",
    "FieldProblem",
    "address_items",
    "bare_content_id",
    "blank_to_none",
    "check_address",
    "check_content_type",
    "check_filename",
    "check_header_name",
    "check_header_text",
    "check_html_template",
    "check_message_id",
    "check_path",
    "check_ref_id",
    "check_text_template",
    "guess_content_type",
    "header_name",
    "header_value",
    "id_text",
    "json_text",
    "lower_text",
    "none_to_empty_dict",
    "none_to_empty_list",
    "parse_content_type",
    "reference_list",
]

MAX_FILENAME_CHARS = 255
MAX_HEADER_NAME_CHARS = 100

# Headers the composer writes itself (or that belong to the MTA). Letting a record set them would
# duplicate or contradict the structure, so they are refused rather than silently dropped.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "reply-to",
        "in-reply-to",
        "references",
        "return-path",
    }
)
PRIORITY_HEADERS = frozenset({"x-priority", "importance"})

_HEADER_NAME_RE = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CONTENT_TYPE_RE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*')
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}


class FieldProblem(ValueError):
    """A ValueError that names a sub-field, raised where pydantic cannot set the location itself."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- CSV-friendly input


def blank_to_none(value: Any) -> Any:
    """An empty CSV cell means "not given"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def json_text(value: Any) -> Any:
    """CSV cells carry objects and lists as JSON text."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] in "[{":
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"is not valid JSON: {exc}") from None
    return value


def none_to_empty_list(value: Any) -> Any:
    value = json_text(value)
    return [] if value is None else value


def none_to_empty_dict(value: Any) -> Any:
    value = json_text(value)
    return {} if value is None else value


def lower_text(value: Any) -> Any:
    """Choices such as ``priority`` are matched case-insensitively."""
    value = blank_to_none(value)
    return value.strip().lower() if isinstance(value, str) else value


def id_text(value: Any) -> Any:
    """A record id read as a number (JSON, YAML) is still an id."""
    value = blank_to_none(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# --------------------------------------------------------------------------- addresses, ids, header text


def address_items(value: Any) -> Any:
    """One comma-separated string (a CSV cell) becomes the list of its addresses."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return addresses.split_addresses(value)
        except addresses.AddressError as exc:
            raise ValueError(str(exc)) from None
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"must be a list of addresses or one comma-separated string (got {addresses.short(value)})"
        )
    return value


def check_address(value: str) -> str:
    try:
        addresses.parse_address(value)
    except addresses.AddressError as exc:
        raise ValueError(str(exc)) from None
    return value.strip()


def check_header_text(value: str) -> str:
    try:
        return addresses.check_header_text(value)
    except addresses.AddressError as exc:
        raise ValueError(str(exc)) from None


def check_message_id(value: str) -> str:
    try:
        return addresses.normalize_msg_id(value, require_at=True)
    except addresses.AddressError as exc:
        raise ValueError(str(exc)) from None


def check_ref_id(value: str) -> str:
    try:
        return addresses.normalize_msg_id(value, require_at=False)
    except addresses.AddressError as exc:
        raise ValueError(str(exc)) from None


def reference_list(value: Any) -> Any:
    """One space-separated string (a CSV cell) becomes the list of its ids."""
    value = blank_to_none(value)
    if isinstance(value, str):
        try:
            return addresses.parse_msg_id_list(value)
        except addresses.AddressError as exc:
            raise ValueError(str(exc)) from None
    return value


def bare_content_id(value: str) -> str:
    """Stored without angle brackets; the composer adds them in the header."""
    return check_ref_id(value)[1:-1]


# --------------------------------------------------------------------------- attachments


def check_filename(value: str) -> str:
    check_header_text(value)
    if len(value) > MAX_FILENAME_CHARS:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_FILENAME_CHARS} are allowed")
    if "/" in value or "\\" in value:
        raise ValueError(f"{addresses.short(value)} must be a bare file name, without directories")
    return value


def check_path(value: str) -> str:
    bad = addresses.forbidden_char(value)
    if bad is not None:
        raise ValueError(f"{addresses.short(value)} contains a control character ({bad})")
    return value


def parse_content_type(value: str) -> tuple[str, str, dict[str, str]]:
    """``type/subtype; k=v`` -> (maintype, subtype, params), lower-cased; raise ValueError."""
    check_header_text(value)
    head, _, rest = value.partition(";")
    match = _CONTENT_TYPE_RE.fullmatch(head.strip())
    if match is None:
        raise ValueError(f"{addresses.short(value)} is not a MIME type like 'application/pdf'")
    params: dict[str, str] = {}
    for chunk in filter(str.strip, rest.split(";")):
        pm = _PARAM_RE.fullmatch(chunk)
        if pm is None:
            raise ValueError(f"{addresses.short(value)} has a malformed parameter {addresses.short(chunk.strip())}")
        raw = pm.group(2)
        params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
    maintype, subtype = match.group(1).lower(), match.group(2).lower()
    if maintype == "multipart":
        raise ValueError(f"{addresses.short(value)}: an attachment cannot be multipart/*")
    return maintype, subtype, params


def check_content_type(value: str) -> str:
    parse_content_type(value)
    return value.strip()


# One table read at import: guess_type() on it is read-only, so threads composing in parallel share it.
_MIME_TYPES = mimetypes.MimeTypes()


def guess_content_type(name: str | None) -> str:
    """From the file name's extension; compressed files are the compressed type; else octet-stream."""
    if name:
        guessed, encoding = _MIME_TYPES.guess_type(name, strict=False)
        if encoding is not None:
            return _COMPRESSED.get(encoding, "application/octet-stream")
        if guessed is not None:
            return guessed
    return "application/octet-stream"


# --------------------------------------------------------------------------- headers and templates


def check_header_name(name: str, *, priority: str | None = None) -> str:
    """Raise ValueError unless ``name`` is a field name a record may add."""
    if not _HEADER_NAME_RE.fullmatch(name) or len(name) > MAX_HEADER_NAME_CHARS:
        raise ValueError(
            f"header name {addresses.short(name)} is not valid: use up to {MAX_HEADER_NAME_CHARS} printable "
            "ASCII characters without spaces or ':'"
        )
    lower = name.lower()
    if lower in RESERVED_HEADERS or lower.startswith("content-"):
        raise ValueError(f"header {name!r} is set by the composer from the record's own fields; it cannot be "
                         "given in headers")
    if priority in ("high", "low") and lower in PRIORITY_HEADERS:
        raise ValueError(f"header {name!r} conflicts with priority={priority!r}")
    return name


def header_name(value: str) -> str:
    """The validator form of :func:`check_header_name`: the priority is checked with the whole record."""
    return check_header_name(value)


def header_value(value: Any) -> Any:
    """Numbers in JSON or YAML records are header text as written."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def check_text_template(value: str) -> str:
    compile_template(value, html=False)  # raises TemplateProblem (a ValueError) with the line
    return value


def check_html_template(value: str) -> str:
    compile_template(value, html=True)
    return value
