"""Structured header fields for the parser: address lists, dates, message ids.

Written here rather than taken from ``email.utils`` so that results do not change between Python
releases (its address and date parsing changed behaviour in security fixes) and so that every repair
is reported. All functions are total: what cannot be read becomes a defect, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from mailconnector.mime._parse_decode import Defects

__all__ = ["parse_address_list", "parse_date", "parse_msg_id", "parse_msg_ids"]

# (text, decoder) -> decoded text; the parser passes its RFC 2047 decoder bound to a header name.
WordDecoder = Callable[[str], str]


@dataclass(slots=True)
class _Entry:
    phrase: list[str] = field(default_factory=list)
    angle: str | None = None
    comments: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.phrase and self.angle is None and not self.comments


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)("?)', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)
_ATOM = re.compile(r'[^\s"(),:;<>\[]+')
_LITERAL = re.compile(r"\[[^\]]*\]?")
# Fast paths for the usual single mailbox; no nested quantifiers, so no backtracking blow-up.
_SIMPLE_NAMED = re.compile(
    r'\s*(?:"((?:[^"\\]|\\.)*)"\s*|([^"<>,;:()\\@\[\]\s][^"<>,;:()\\@\[\]]*)?)'
    r'<([^<>\s,;:"()\\@]+@[^<>\s,;:"()\\@]+)>\s*'
)
_SIMPLE_BARE = re.compile(r'\s*([^\s<>,;:"()\\@\[\]]+@[^\s<>,;:"()\\@\[\]]+)\s*')


def _comment(value: str, start: int) -> tuple[str, int]:
    """A (possibly nested) comment starting at ``value[start] == '('``; returns text and the next index."""
    depth = 0
    pos = start
    chars: list[str] = []
    while pos < len(value):
        char = value[pos]
        if char == "\\" and pos + 1 < len(value):
            chars.append(value[pos + 1])
            pos += 2
            continue
        if char == "(":
            depth += 1
            if depth > 1:
                chars.append(char)
        elif char == ")":
            depth -= 1
            if depth == 0:
                return "".join(chars), pos + 1
            chars.append(char)
        else:
            chars.append(char)
        pos += 1
    return "".join(chars), pos


def _tokenize(value: str, what: str, defects: Defects) -> list[_Entry]:
    entries: list[_Entry] = []
    entry = _Entry()
    in_group = False
    pos = 0
    length = len(value)

    def finish() -> None:
        nonlocal entry
        if not entry.empty():
            entries.append(entry)
        entry = _Entry()

    while pos < length:
        char = value[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == '"':
            match = _QUOTED.match(value, pos)
            if match is None or not match.group(2):
                # Read on as if the stray quote were not there: what follows may be "Name <addr>".
                defects.add(f"{what}: unterminated quoted string")
                pos += 1
                continue
            entry.phrase.append(_UNESCAPE.sub(r"\1", match.group(1)))
            pos = match.end()
        elif char == "(":
            text, pos = _comment(value, pos)
            entry.comments.append(text.strip())
        elif char == "<":
            close = value.find(">", pos + 1)
            if close < 0:
                defects.add(f"{what}: '<' without '>'")
                close = length
            if entry.angle is None:
                entry.angle = value[pos + 1 : close]
            pos = close + 1
        elif char == ",":
            finish()
            pos += 1
        elif char == ";":
            # Ends a group; outside a group it is a separator people type by habit.
            finish()
            in_group = False
            pos += 1
        elif char == ":" and not in_group and entry.angle is None:
            # "Group name: a@x, b@y;" -- the group name is not a mailbox.
            entry = _Entry(comments=entry.comments)
            in_group = True
            pos += 1
        elif char == "[":
            match = _LITERAL.match(value, pos)
            if match is None:
                pos += 1
                continue
            _append_atom(entry, match.group(0))
            pos = match.end()
        elif char in ">):":
            pos += 1
        else:
            match = _ATOM.match(value, pos)
            if match is None:  # white space beyond the ASCII kind
                pos += 1
                continue
            _append_atom(entry, match.group(0))
            pos = match.end()
    finish()
    return entries


def _append_atom(entry: _Entry, text: str) -> None:
    # "a@[1.2.3.4]": a domain literal continues the atom before it.
    if text.startswith("[") and entry.phrase and entry.phrase[-1].endswith("@"):
        entry.phrase[-1] += text
    else:
        entry.phrase.append(text)


def _has_at(entry: _Entry) -> bool:
    return any("@" in word for word in entry.phrase)


def _merge_unquoted_commas(entries: list[_Entry], what: str, defects: Defects) -> list[_Entry]:
    """``Doe, John <j@x>``: a name-only entry followed by a named address was one display name."""
    merged: list[_Entry] = []
    for entry in entries:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous.angle is None
            and previous.phrase
            and not _has_at(previous)
            and entry.angle is not None
            and entry.phrase
        ):
            entry.phrase = [", ".join([" ".join(previous.phrase), " ".join(entry.phrase)])]
            entry.comments = previous.comments + entry.comments
            merged[-1] = entry
            defects.add(f"{what}: unquoted comma in a display name")
            continue
        merged.append(entry)
    return merged


def _complete(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain)


def _to_addresses(entry: _Entry, what: str, defects: Defects,
                  decode: WordDecoder) -> list[tuple[str, str]]:
    if entry.angle is not None:
        address = "".join(entry.angle.split())
        if address.startswith("@") and ":" in address:
            address = address.split(":", 1)[1]  # obsolete source route
        name = " ".join(entry.phrase)
        if not name and entry.comments:
            name = entry.comments[0]
        return [(decode(name).strip(), address)]
    if not entry.phrase:
        return []
    name = entry.comments[0] if entry.comments else ""
    with_at = [word for word in entry.phrase if "@" in word]
    if len(entry.phrase) == 1:
        return [(decode(name).strip(), entry.phrase[0])]
    if len(with_at) == len(entry.phrase):
        defects.add(f"{what}: addresses not separated by commas")
        return [("", word) for word in with_at]
    if len(with_at) == 1 and _complete(with_at[0]):
        defects.add(f"{what}: address {with_at[0]!r} not in angle brackets after its name")
        words = [word for word in entry.phrase if word is not with_at[0]]
        return [(decode(" ".join(words)).strip(), with_at[0])]
    if with_at:
        # Obsolete spacing inside an address: "john . doe @ example.com".
        return [(decode(name).strip(), "".join(entry.phrase))]
    defects.add(f"{what}: {' '.join(entry.phrase)!r} has no address")
    return [(decode(" ".join(entry.phrase)).strip(), "")]


def _plain_mailbox(value: str) -> tuple[str, str] | None:
    """``(display name before decoding, address)`` of a plain ``Name <a@b>`` or ``a@b``; None for anything
    else. The name's runs of white space read as one space, as the tokenizer joins its words."""
    simple = _SIMPLE_NAMED.fullmatch(value)
    if simple is not None:
        quoted, bare, address = simple.groups()
        if quoted is not None:
            return _UNESCAPE.sub(r"\1", quoted), address
        return (" ".join(bare.split()) if bare else ""), address
    simple = _SIMPLE_BARE.fullmatch(value)
    return ("", simple.group(1)) if simple is not None else None


def _plain_list(value: str) -> list[tuple[str, str]] | None:
    """A comma-separated list of plain mailboxes, else None. Quotes, comments, groups and literals never
    match a plain mailbox, so a comma inside them sends the whole list to the tokenizer."""
    if "," not in value:
        return None
    found: list[tuple[str, str]] = []
    for piece in value.split(","):
        plain = _plain_mailbox(piece)
        if plain is None:
            return None
        found.append(plain)
    return found


def parse_address_list(value: str, what: str, defects: Defects,
                       decode: WordDecoder) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of an address header, in order; groups are flattened.

    ``value`` is the unfolded header before RFC 2047 decoding (a decoded name may hold commas);
    ``decode`` decodes the display names. A plain mailbox, or a list of them, is read by regular
    expressions; anything else by the tokenizer, with its repairs. Both give the same pairs.
    """
    plain = _plain_mailbox(value)
    found = [plain] if plain is not None else _plain_list(value)
    if found is None:
        return _tokenized_addresses(value, what, defects, decode)
    return [(decode(name).strip() if name else "", address) for name, address in found]


def _tokenized_addresses(value: str, what: str, defects: Defects,
                         decode: WordDecoder) -> list[tuple[str, str]]:
    """:func:`parse_address_list` for any value: the tokenizer, with every repair listed."""
    entries = _merge_unquoted_commas(_tokenize(value, what, defects), what, defects)
    result: list[tuple[str, str]] = []
    for entry in entries:
        for name, address in _to_addresses(entry, what, defects, decode):
            if address and not _complete(address):
                defects.add(f"{what}: {address!r} is not a complete address")
            result.append((name, address))
    return result


# --------------------------------------------------------------------------------------------- dates

_MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
         ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
         ("oct", "october"), ("nov", "november"), ("dec", "december")],
        start=1,
    )
    for name in names
}
# RFC 5322 obsolete zone names, in minutes east of UTC.
_RFC_ZONES = {"UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
              "MST": -420, "MDT": -360, "PST": -480, "PDT": -420}
# Names some mailers write although no RFC allows them; unambiguous enough to read.
_OTHER_ZONES = {"CET": 60, "CEST": 120, "MET": 60, "MEST": 120, "BST": 60, "WET": 0, "WEST": 60,
                "EET": 120, "EEST": 180, "MSK": 180, "JST": 540, "KST": 540, "HKT": 480, "SGT": 480,
                "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780, "HST": -600, "AKST": -540,
                "AKDT": -480}
_DATE = re.compile(
    r"""\s*(?:[A-Za-z]{2,9}\.?\s*,?\s*)?
    (?P<day>\d{1,2})\s*[-/\s]?\s*(?P<mon>[A-Za-z]{3,9})\.?\s*[-/\s]?\s*(?P<year>\d{2,4})\s*,?\s+
    (?P<h>\d{1,2})\s*:\s*(?P<mi>\d{1,2})(?:\s*:\s*(?P<s>\d{1,2})(?:[.,]\d+)?)?
    \s*(?P<zone>[+-]\d{1,2}:?\d{2}|[A-Za-z]{1,5})?
    \s*(?:\(.*\))?\s*""",
    re.X | re.S,
)
# The asctime form found in mbox "From " lines and some scripts: "Fri Mar  1 10:00:00 2024".
_ASCTIME = re.compile(
    r"\s*[A-Za-z]{3}\s+(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<h>\d{1,2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2}))?\s+(?:(?P<zone>[+-]\d{4}|[A-Za-z]{1,5})\s+)?(?P<year>\d{4})\s*"
)


_ZONES: dict[int, timezone] = {}


def _zone_minutes(zone: str | None, shown: str, defects: Defects) -> int:
    if not zone:
        defects.add(f"date {shown!r} has no time zone; read as UTC")
        return 0
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "").rjust(4, "0")
        hours, minutes = int(digits[:-2]), int(digits[-2:])
        if hours > 23 or minutes > 59:
            raise ValueError("offset out of range")
        return (hours * 60 + minutes) * (-1 if zone[0] == "-" else 1)
    upper = zone.upper()
    if upper in _RFC_ZONES:
        return _RFC_ZONES[upper]
    if upper in _OTHER_ZONES:
        offset = _OTHER_ZONES[upper]
        shown_offset = f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        defects.add(f"date uses the time zone name {zone!r}; read as {shown_offset}")
        return offset
    defects.add(f"date {shown!r} has an unknown time zone {zone!r}; read as UTC")
    return 0


def _build(groups: dict[str, str | None], shown: str, defects: Defects) -> str:
    year_text = groups["year"] or ""
    year = int(year_text)
    if len(year_text) == 2:
        year += 2000 if year < 50 else 1900
    elif len(year_text) == 3:
        year += 1900
    month = _MONTHS.get((groups["mon"] or "").lower())
    if month is None:
        raise ValueError("unknown month")
    second = min(int(groups["s"] or 0), 59)  # a leap second is not representable
    offset = _zone_minutes(groups["zone"], shown, defects)
    zone = _ZONES.get(offset)
    if zone is None:
        zone = _ZONES[offset] = timezone(timedelta(minutes=offset))  # one per offset: a few thousand at most
    moment = datetime(year, month, int(groups["day"] or 0), int(groups["h"] or 0), int(groups["mi"] or 0),
                      second, tzinfo=zone)
    return moment.isoformat()


def parse_date(value: str, defects: Defects) -> str | None:
    """An RFC 5322 date as ISO 8601 with its offset, or None (with a defect) when it cannot be read."""
    text = value.strip()
    shown = text if len(text) <= 80 else text[:77] + "..."
    if len(text) > 200:
        defects.add(f"date {shown!r} could not be read")
        return None
    scratch = Defects()
    for pattern, note in ((_DATE, None), (_ASCTIME, "is in asctime form")):
        match = pattern.fullmatch(text)
        if match is None:
            continue
        try:
            result = _build(match.groupdict(), shown, scratch)
        except (ValueError, OverflowError):
            break
        for item in scratch.items:
            defects.add(item)
        if note:
            defects.add(f"date {shown!r} {note}; read anyway")
        return result
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        defects.add(f"date {shown!r} could not be read")
        return None
    defects.add(f"date {shown!r} is ISO 8601, not RFC 5322; read anyway")
    if moment.tzinfo is None:
        defects.add(f"date {shown!r} has no time zone; read as UTC")
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


# --------------------------------------------------------------------------------------------- message ids

_MSG_ID = re.compile(r"<[^<>]*>")


def parse_msg_id(value: str, what: str, defects: Defects) -> str | None:
    """The first ``<id>`` of a header, brackets kept; a bare id is kept as written, with a defect."""
    match = _MSG_ID.search(value)
    if match is not None:
        return "".join(match.group(0).split())
    text = value.strip()
    if not text:
        return None
    defects.add(f"{what}: message id without angle brackets")
    return text.split()[0]


def parse_msg_ids(value: str, what: str, defects: Defects) -> list[str]:
    """Every ``<id>`` of References / In-Reply-To, in order."""
    found = ["".join(item.split()) for item in _MSG_ID.findall(value)]
    if found:
        return found
    words = value.split()
    if words:
        defects.add(f"{what}: message ids without angle brackets")
    return words
