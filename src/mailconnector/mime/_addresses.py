"""Address lists, single addresses and header-safe text, checked strictly.

Why not ``email.utils.getaddresses``: on the Python versions we support it recovers from malformed input
by guessing, e.g. ``alice@example.org <bob@example.com>`` becomes *two* recipients and a value with an
embedded CR LF turns into extra addresses (CVE-2023-27043; the ``strict`` flag only exists in later patch
releases). A recipient list is a security boundary, so we split on top-level commas ourselves (respecting
quoted display names, angle brackets and comments) and parse each item exactly; email-validator then checks
the address itself.

Special-use domains (``.test``, ``.example``, ``.invalid``, ``.localhost``, ``.local``, ...): email-validator
rejects most of them because they cannot be *globally* deliverable. A connector hands mail to a relay that
decides routing, and internal domains (``corp.local``) and the sandbox's ``example.test`` are legitimate, so
we accept every syntactically valid address on a special-use domain. We do that per call (``.test`` via
``test_environment=True``, the others by validating the name with a ``.test`` suffix and removing it again)
instead of editing email-validator's module-level ``SPECIAL_USE_DOMAIN_NAMES``, which would silently change
validation for everything else in the host process. Deliverability (DNS) is never checked here.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, validate_email

__all__ = [
    "AddressError",
    "ParsedAddress",
    "check_header_text",
    "forbidden_char",
    "looks_secret",
    "normalize_msg_id",
    "parse_address",
    "parse_msg_id_list",
    "short",
    "split_addresses",
]

# Everything that could end a header line or corrupt it: C0 controls except TAB, DEL, and the
# Unicode line separators that str.splitlines() honours (NEL, LS, PS).
_FORBIDDEN_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_WS_RE = re.compile(r"\s+")
# A msg-id / content-id: printable ASCII, no whitespace, no angle brackets.
_ID_RE = re.compile(r"[!-;=?-~]+")
_ID_SPLIT_RE = re.compile(r"[\s,]+")
_TEST_SUFFIX = ".test"
_SECRET_NAME_RE = re.compile(r"pass|secret|token|auth|credential|api[-_]?key|cookie|signature", re.IGNORECASE)
MAX_ID_CHARS = 900  # an id is never folded, so its header line must stay under 998 octets
_UNQUOTED_SPECIALS = re.compile(r"[@\[\]:;\\]")


class AddressError(ValueError):
    """An address or id that cannot be used; the message already quotes the (shortened) input."""


def short(value: object, limit: int = 80) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error messages."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def looks_secret(name: str) -> bool:
    """A field or header name whose value must not be quoted in errors (Authorization, X-Api-Token)."""
    return _SECRET_NAME_RE.search(name) is not None


def forbidden_char(value: str) -> str | None:
    """The first character that must never reach a header (as ``U+000D``), or None."""
    match = _FORBIDDEN_RE.search(value)
    return None if match is None else f"U+{ord(match.group()):04X}"


def check_header_text(value: str) -> str:
    """Return ``value`` unchanged, or raise if it could inject a header line."""
    bad = forbidden_char(value)
    if bad is not None:
        raise AddressError(f"{short(value)} contains a line break or control character ({bad})")
    return value


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    """One validated mailbox. ``domain`` is IDNA ASCII unless the address needs SMTPUTF8."""

    display_name: str
    local_part: str
    domain: str
    smtputf8: bool
    ascii_domain: str

    @property
    def addr_spec(self) -> str:
        return f"{self.local_part}@{self.domain}"


def split_addresses(value: str) -> list[str]:
    """Split one address-list string on top-level ``,`` or ``;``; empty items are dropped.

    Separators inside ``"..."`` (with backslash escapes), ``<...>`` or ``(...)`` do not split. An
    unterminated quote swallows the rest, so the item parser reports it instead of guessing. A line break
    anywhere is refused, even between items: one rule for every header field is easier to trust.
    """
    check_header_text(value)
    items: list[str] = []
    start = 0
    quoted = False
    escaped = False
    angle = 0
    comment = 0
    for pos, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or comment):
            escaped = True
        elif quoted:
            if char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            comment += 1
        elif char == ")" and comment:
            comment -= 1
        elif comment:
            pass
        elif char == "<":
            angle += 1
        elif char == ">" and angle:
            angle -= 1
        elif char in ",;" and not angle:
            items.append(value[start:pos])
            start = pos + 1
    items.append(value[start:])
    return [item.strip() for item in items if item.strip()]


def _split_display(text: str) -> tuple[str, str]:
    """``Name <addr>`` -> (name, addr); a bare address -> ("", addr)."""
    if not text.endswith(">"):
        if "<" in text or ">" in text:
            raise AddressError(f"{short(text)} has unbalanced angle brackets")
        return "", text
    quoted = False
    escaped = False
    open_at = -1
    for pos, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            open_at = pos
            break
    if open_at < 0:
        raise AddressError(f"{short(text)} has unbalanced angle brackets or quotes")
    addr = text[open_at + 1 : -1].strip()
    if "<" in addr or ">" in addr:
        raise AddressError(f"{short(text)} has more than one pair of angle brackets")
    return _display_name(text[:open_at].strip(), text), addr


def _display_name(raw: str, whole: str) -> str:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise AddressError(f"{short(whole)} has text outside the quoted display name")
        body = raw[1:-1]
        out: list[str] = []
        escaped = False
        for char in body:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise AddressError(f"{short(whole)} has text outside the quoted display name")
            else:
                out.append(char)
        name = "".join(out)
    else:
        if '"' in raw:
            raise AddressError(f"{short(whole)} has a stray quote in the display name")
        if _UNQUOTED_SPECIALS.search(raw):
            # 'alice@example.org <bob@example.com>' must not look like two addresses or a spoof.
            raise AddressError(
                f"{short(whole)} has one of @ [ ] : ; \\ in its display name: put the name in double quotes"
            )
        name = raw
        if "=?" in name:
            # Someone pasted an already-encoded header value; decode it so it is not encoded twice.
            with contextlib.suppress(ValueError, LookupError, UnicodeDecodeError):
                name = str(make_header(decode_header(name)))
    name = _WS_RE.sub(" ", name).strip()
    check_header_text(name)
    return name


@lru_cache(maxsize=1)
def _special_use_suffixes() -> tuple[str, ...]:
    return tuple(d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES if d != "test")


def _is_special_use(domain: str) -> bool:
    name = domain.rstrip(".").lower()
    return any(name == d or name.endswith("." + d) for d in _special_use_suffixes())


def _validate(addr: str) -> email_validator.ValidatedEmail:
    return validate_email(
        addr,
        allow_smtputf8=True,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
        check_deliverability=False,
        test_environment=True,
    )


@lru_cache(maxsize=8192)
def parse_address(text: str) -> ParsedAddress:
    """Parse ``addr``, ``<addr>``, ``Name <addr>`` or ``"Quoted, Name" <addr>``; raise AddressError.

    Cached: a run usually repeats the same sender and a few recipients thousands of times.
    """
    check_header_text(text)
    stripped = text.strip()
    if not stripped:
        raise AddressError("an empty address")
    name, addr = _split_display(stripped)
    domain_given = addr.rpartition("@")[2]
    rescued = "@" in addr and _is_special_use(domain_given)
    try:
        valid = _validate(addr + _TEST_SUFFIX if rescued else addr)
    except EmailNotValidError as exc:
        raise AddressError(f"{short(addr)} is not a valid address: {exc}") from None
    smtputf8 = bool(valid.smtputf8)
    ascii_domain = valid.ascii_domain
    if smtputf8:
        local, domain = valid.local_part, valid.domain
    else:
        local, domain = valid.ascii_local_part or valid.local_part, ascii_domain
    if rescued:
        domain = domain[: -len(_TEST_SUFFIX)]
        ascii_domain = ascii_domain[: -len(_TEST_SUFFIX)]
    return ParsedAddress(display_name=name, local_part=local, domain=domain, smtputf8=smtputf8,
                         ascii_domain=ascii_domain)


def normalize_msg_id(value: str, *, require_at: bool) -> str:
    """``id`` or ``<id>`` -> ``<id>``; raise AddressError for anything a header could not carry."""
    check_header_text(value)
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if len(text) > MAX_ID_CHARS:
        raise AddressError(f"{short(value)} is {len(text)} characters long; at most {MAX_ID_CHARS} are allowed")
    if not _ID_RE.fullmatch(text):
        raise AddressError(
            f"{short(value)} is not a valid id: use printable ASCII without spaces or angle brackets"
        )
    if require_at and (text.count("@") != 1 or text.startswith("@") or text.endswith("@")):
        raise AddressError(f"{short(value)} is not a valid Message-ID: it must look like <left@right>")
    return f"<{text}>"


def parse_msg_id_list(value: str | list[str]) -> list[str]:
    """A References value: a list, or one string separated by spaces or commas -> ``<id>`` list."""
    if isinstance(value, str):
        check_header_text(value)
        parts = _ID_SPLIT_RE.split(value.strip())
    else:
        parts = value
    return [normalize_msg_id(p, require_at=False) for p in parts if p.strip()]
