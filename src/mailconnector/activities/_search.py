"""Search criteria of Read Email: the typed fields, and raw IMAP SEARCH text checked before it is sent.

A raw search is parsed here (RFC 3501 keys and the common extensions) so that a typo is a configuration
error naming its place and the closest known key, not a server's ``BAD`` after connecting.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigError

__all__ = ["KNOWN_SEARCH_KEYS", "Criteria", "search_problem"]


class Criteria(BaseModel):
    """A typed IMAP search, ANDed with "unread" unless ``include_read``. ``raw`` is sent as written."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(None, alias="from")
    to: str | None = None
    cc: str | None = None
    subject: str | None = None
    body: str | None = None
    since: dt.date | None = None
    before: dt.date | None = None
    larger: int | None = Field(None, ge=0)
    smaller: int | None = Field(None, ge=0)
    header: dict[str, str] = Field(default_factory=dict)
    raw: str | None = None

    @field_validator("from_", "to", "cc", "subject", "body", "raw")
    @classmethod
    def _no_crlf(cls, v: str | None) -> str | None:
        if v is not None and any(c in v for c in "\r\n\0"):
            raise ValueError("contains CR, LF or NUL")
        return v

    @field_validator("raw")
    @classmethod
    def _raw_search(cls, v: str | None) -> str | None:
        problem = search_problem(v) if v is not None and v.strip() else None
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("header")
    @classmethod
    def _header(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.fullmatch(r"[!-9;-~]+", k) or any(c in val for c in "\r\n\0"):
                raise ValueError(f"header criterion {k!r} is not a valid header name / value")
        return v

    def to_imap(self, *, unread: bool) -> tuple[list[Any] | str, str | None]:
        """The search for IMAPClient, and the charset to send it with (UTF-8 when non-ASCII)."""
        terms: list[Any] = ["UNSEEN"] if unread else []
        for key, imap_key in (("from_", "FROM"), ("to", "TO"), ("cc", "CC"), ("subject", "SUBJECT"),
                              ("body", "BODY")):
            value = getattr(self, key)
            if value:
                terms += [imap_key, value]
        if self.since:
            terms += ["SINCE", _imap_date(self.since)]
        if self.before:
            terms += ["BEFORE", _imap_date(self.before)]
        if self.larger is not None:
            terms += ["LARGER", self.larger]
        if self.smaller is not None:
            terms += ["SMALLER", self.smaller]
        for name, value in self.header.items():
            terms += ["HEADER", name, value]
        text = " ".join(str(t) for t in terms if isinstance(t, str))
        charset = None if text.isascii() and (self.raw or "").isascii() else "UTF-8"
        if self.raw:
            if charset is None:
                prefix = " ".join(_imap_atom(t) for t in terms)
                return (f"{prefix} {self.raw}".strip() if prefix else self.raw), charset
            # Sent whole, a non-ASCII search would go out as one literal (a single string, not search
            # keys): split it so that only its 8-bit strings become literals.
            return terms + _tokenize_search(self.raw), charset
        return (terms or ["ALL"]), charset


def _imap_date(day: dt.date) -> str:
    """``1-Mar-2024``: English month names whatever the locale (``strftime("%b")`` follows it)."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _imap_atom(term: Any) -> str:
    s = str(term)
    if re.fullmatch(r"[A-Za-z0-9]+", s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SEARCH_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')
# What IMAPClient sends as it is (no quoting, no literal), so that a parenthesis can be glued to it.
_PLAIN = re.compile(rb"[!#-'*-\[\]-~]+")


def _tokenize_search(raw: str) -> list[bytes]:
    """A raw IMAP search as IMAPClient criteria, so that only its 8-bit strings become literals.

    Atoms stay as they are; quoted strings are unquoted (IMAPClient quotes them again, or sends them as
    literals when 8-bit). A parenthesis is glued to a plain neighbour; next to a literal or a quoted
    string it goes as its own token ("(SUBJECT {5}... )"), which servers accept."""
    items: list[bytes] = []
    plain: list[bool] = []
    opens = b""
    depth = 0
    pos = 0
    raw = raw.strip()
    while pos < len(raw):
        match = _SEARCH_TOKEN.match(raw, pos)
        if match is None or match.end() == pos:
            raise ConfigError(f"cannot read the search criteria near {raw[pos:pos + 20]!r}", field="criteria",
                              hint='quote strings with double quotes, e.g. SUBJECT "Grüße"')
        pos = match.end()
        opening, closing, quoted, atom = match.groups()
        if opening:
            depth += 1
            opens += b"("
        elif closing:
            depth -= 1
            if depth < 0 or opens:
                raise ConfigError("unbalanced or empty parentheses in the search criteria", field="criteria")
            if plain[-1]:
                items[-1] += b")"
            else:
                items.append(b")")
                plain.append(True)
        else:
            token = (re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else atom).encode("utf-8")
            is_plain = _PLAIN.fullmatch(token) is not None
            if opens and is_plain:
                token = opens + token
            elif opens:
                items.append(opens)
                plain.append(True)
            opens = b""
            items.append(token)
            plain.append(is_plain)
    if depth != 0:
        raise ConfigError("unbalanced parentheses in the search criteria", field="criteria")
    return items


# -- checking a raw search before it is sent: one line that says what is wrong and where -------------------
_NO_ARGUMENT = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED",
    "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "SAVEDATESUPPORTED",
})
# key -> what each of its arguments is (RFC 3501 and common extensions: WITHIN, SAVEDATE, OBJECTID, Gmail)
_ARGUMENTS: dict[str, tuple[str, ...]] = {
    **{k: ("string",) for k in ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "X-GM-RAW", "X-GM-LABELS",
                                "EMAILID", "THREADID")},
    **{k: ("date",) for k in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE",
                              "SAVEDON", "SAVEDSINCE")},
    **{k: ("number",) for k in ("LARGER", "SMALLER", "YOUNGER", "OLDER", "X-GM-MSGID", "X-GM-THRID", "MODSEQ")},
    "KEYWORD": ("flag",), "UNKEYWORD": ("flag",), "HEADER": ("header name", "string"), "UID": ("sequence set",),
}
_OF_KEYS = {"NOT": 1, "FUZZY": 1, "OR": 2}  # keys whose arguments are search keys
KNOWN_SEARCH_KEYS = tuple(sorted({*_NO_ARGUMENT, *_ARGUMENTS, *_OF_KEYS}))
_MAX_NESTING = 64
_TOKEN = re.compile(r'\s*(?:(?P<open>\()|(?P<close>\))|(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<atom>[^\s()"]+))')
_SEQUENCE_SET = re.compile(r"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*|\$")
_ARGUMENT_FORMS = {
    "date": (re.compile(r"\d{1,2}-(?:" + "|".join(_MONTHS) + r")-\d{4}", re.IGNORECASE), "a date like 1-Jan-2026"),
    "number": (re.compile(r"\d+"), "a number"),
    "flag": (re.compile(r"[^\\\s()\"%*\]{]+"), "a keyword such as $Forwarded"),
    "sequence set": (_SEQUENCE_SET, "UIDs such as 4,7:12 or 100:*"),
}


@dataclass(frozen=True)
class _Token:
    kind: str  # open, close, quoted, atom
    text: str
    at: int  # 1-based character position


def search_problem(raw: str) -> str | None:
    """What is wrong with a raw IMAP search, in one line naming the place; None when it reads well.

    Checked before anything is sent, so that a typo (``FROMM bob``) is a usage error in words and not the
    server's ``BAD`` wrapped in the IMAP library's paragraph."""
    control = next((i for i, c in enumerate(raw) if (ord(c) < 32 and c != "\t") or c == "\x7f"), None)
    if control is not None:  # CR LF would end the IMAP command: another command could follow
        return f"a control character (U+{ord(raw[control]):04X}) at character {control + 1}"
    try:
        tokens = _search_tokens(raw)
        if not tokens:
            return "the search is empty"
        i = 0
        while i < len(tokens):
            if tokens[i].kind == "close":
                return f"')' at character {tokens[i].at} closes no parenthesis"
            i = _search_key(tokens, i, 0)
    except ValueError as exc:
        return str(exc)
    return None


def _search_tokens(raw: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while raw[pos:].strip():
        match = _TOKEN.match(raw, pos)
        if match is None:  # only an unterminated quoted string is left unmatched
            at = raw.index('"', pos) + 1
            raise ValueError(f"the quoted string at character {at} is not closed with a double quote")
        kind = match.lastgroup or "atom"
        text = match.group(kind)
        tokens.append(_Token(kind, text, match.start(kind) + 1))
        pos = match.end()
    return tokens


def _search_key(tokens: list[_Token], i: int, depth: int) -> int:
    """Check the search key at ``tokens[i]`` (with its arguments); return the index after it."""
    if depth > _MAX_NESTING:
        raise ValueError(f"the search is nested more than {_MAX_NESTING} levels deep")
    tok = tokens[i]
    if tok.kind == "open":
        j = i + 1
        if j < len(tokens) and tokens[j].kind == "close":
            raise ValueError(f"empty parentheses at character {tok.at}")
        while j < len(tokens) and tokens[j].kind != "close":
            j = _search_key(tokens, j, depth + 1)
        if j >= len(tokens):
            raise ValueError(f"the parenthesis at character {tok.at} is not closed")
        return j + 1
    if tok.kind == "quoted":
        raise ValueError(f"a quoted string where a search key belongs, at character {tok.at}: {_clip(tok.text)} "
                         '(quote the values only, e.g. SUBJECT "hello world")')
    key = tok.text.upper()
    if key in _NO_ARGUMENT or _SEQUENCE_SET.fullmatch(key):
        return i + 1
    if key in _OF_KEYS:
        j = i + 1
        for n in range(_OF_KEYS[key]):
            if j >= len(tokens) or tokens[j].kind == "close":
                what = ("a search key" if _OF_KEYS[key] == 1
                        else "two search keys" if n == 0 else "a second search key")
                raise ValueError(f"{key} at character {tok.at} needs {what} after it")
            j = _search_key(tokens, j, depth + 1)
        return j
    if key in _ARGUMENTS:
        return _search_arguments(tokens, i, key)
    close = difflib.get_close_matches(key, KNOWN_SEARCH_KEYS, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(f"unknown search key {_clip(tok.text)} at character {tok.at}{guess}; known keys: "
                     f"{', '.join(KNOWN_SEARCH_KEYS)}, or UIDs as a sequence set")


def _search_arguments(tokens: list[_Token], i: int, key: str) -> int:
    tok = tokens[i]
    if key == "MODSEQ" and i + 2 < len(tokens) and tokens[i + 1].kind == "quoted":
        wanted: tuple[str, ...] = ("string", "string", "number")  # MODSEQ "/flags/\\seen" all 620162338
    else:
        wanted = _ARGUMENTS[key]
    j = i + 1
    for what in wanted:
        if j >= len(tokens) or tokens[j].kind in ("open", "close"):
            raise ValueError(f"{key} at character {tok.at} needs {_a(what)} after it")
        arg = tokens[j]
        if what in _ARGUMENT_FORMS:
            pattern, example = _ARGUMENT_FORMS[what]
            value = arg.text[1:-1] if arg.kind == "quoted" else arg.text
            if not pattern.fullmatch(value):
                raise ValueError(f"{key} at character {tok.at} needs {example}, not {_clip(arg.text)}")
        j += 1
    return j


def _a(what: str) -> str:
    return f"an {what}" if what[0] in "aeiou" else f"a {what}"


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
