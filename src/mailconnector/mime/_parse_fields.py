"""Structured header fields for the parser: address lists and message ids (dates: ``_parse_dates``).

Written here rather than taken from ``email.utils`` so that results do not change between Python
releases (its address and date parsing changed behaviour in security fixes) and so that every repair
is reported. All functions are total: what cannot be read becomes a defect, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailconnector.mime._parse_decode import Defects

__all__ = ["parse_address_list", "parse_msg_id", "parse_msg_ids"]

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
