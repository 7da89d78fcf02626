"""Record values checked again as the composer puts them into headers, failing with the field at fault.

The send record's validators ran earlier, but templates produce new values after that and a record may be
built without validation, so nothing reaches a header unchecked. Each check raises MessageError naming
the record's field (``cc[2]``, ``headers.X-Tag``), which is what the caller can fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailconnector.errors import MessageError
from mailconnector.mime._addresses import (
    AddressError,
    ParsedAddress,
    check_header_text,
    looks_secret,
    normalize_msg_id,
    parse_address,
    parse_msg_id_list,
    short,
    split_addresses,
)
from mailconnector.records.send import SendRequest, check_header_name

__all__ = ["address", "address_list", "custom_headers", "header_text", "msg_id", "references"]


def address(text: str, field: str) -> ParsedAddress:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise MessageError(str(exc), field=field) from None


def address_list(items: Sequence[str] | str, field: str) -> list[ParsedAddress]:
    if isinstance(items, str):  # a request built without validation may still hold the raw string
        try:
            items = split_addresses(items)
        except AddressError as exc:
            raise MessageError(str(exc), field=field) from None
    return [address(item, f"{field}[{i}]") for i, item in enumerate(items)]


def header_text(value: str, field: str) -> str:
    try:
        return check_header_text(value)
    except AddressError as exc:
        raise MessageError(str(exc), field=field) from None


def msg_id(value: str, field: str, *, require_at: bool) -> str:
    try:
        return normalize_msg_id(value, require_at=require_at)
    except AddressError as exc:
        raise MessageError(str(exc), field=field) from None


def references(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        try:
            return parse_msg_id_list(value)
        except AddressError as exc:
            raise MessageError(str(exc), field="references") from None
    return [msg_id(item, f"references[{i}]", require_at=False) for i, item in enumerate(value)]


def custom_headers(request: SendRequest) -> list[tuple[str, str]]:
    """The record's ``headers`` as (name, value), each a name a record may set and a one-line value."""
    out = []
    for name, value in request.headers.items():
        field = f"headers.{name}"
        if not isinstance(name, str) or not isinstance(value, str):
            raise MessageError("header names and values must be text", field=field)
        try:
            check_header_name(name, priority=request.priority)
        except ValueError as exc:
            raise MessageError(str(exc), field=field) from None
        try:
            out.append((name, check_header_text(value)))
        except AddressError as exc:
            message = str(exc).replace(short(value), "the value") if looks_secret(name) else str(exc)
            raise MessageError(message, field=field) from None
    return out
