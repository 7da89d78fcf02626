"""Header fields written for Send Email: RFC 2047 encoded words and folding, done here rather than by the
standard library's header registry, which loses a space between encoded words, turns a long unbreakable
ASCII token (a List-Unsubscribe URL) into encoded words, and is slow."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from email.message import EmailMessage

from mailconnector.mime._addresses import ParsedAddress

__all__ = ["FOLD_AT", "MAX_LINE_OCTETS", "put_addresses", "put_text"]

MAX_LINE_OCTETS = 998
FOLD_AT = 78

_PHRASE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
_PLAIN_RE = re.compile(r"[ -~]*")
_WORD_OVERHEAD = len("=?utf-8?b??=")
_MAX_WORD = 75  # RFC 2047's limit for one encoded word


def _encoded_words(text: str, first_room: int = _MAX_WORD) -> list[str]:
    """RFC 2047 base64 words of whole characters; spaces travel inside the words.

    The header registry folds long display names at their spaces and then loses a space that sits
    between two encoded words (decoders ignore whitespace there), and it is slow; so we encode names
    and subjects ourselves. ``first_room`` sizes the first word to fit after the header name.
    """
    def capacity(room: int) -> int:
        return max((min(room, _MAX_WORD) - _WORD_OVERHEAD) // 4 * 3, 12)

    words: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    limit = capacity(first_room)
    for char in text:
        data = char.encode("utf-8")
        if size + len(data) > limit and chunk:
            words.append(b"".join(chunk))
            chunk, size, limit = [], 0, capacity(_MAX_WORD)
        chunk.append(data)
        size += len(data)
    words.append(b"".join(chunk))
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words]


def _address_tokens(parsed: ParsedAddress, first_room: int) -> list[str]:
    """The address as tokens that may be separated by folding whitespace."""
    if not parsed.display_name:
        return [parsed.addr_spec]
    name = parsed.display_name
    angle = f"<{parsed.addr_spec}>"
    if name.isascii() and "=?" not in name:
        if _PHRASE_RE.fullmatch(name) and all(len(w) <= FOLD_AT - 2 for w in name.split(" ")):
            return [*name.split(" "), angle]
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) + 1 + len(angle) <= FOLD_AT - 2:
            return [quoted, angle]
    return [*_encoded_words(name, first_room), angle]


def put_addresses(msg: EmailMessage, name: str, parsed: Sequence[ParsedAddress]) -> None:
    """An address list, formatted and folded here (greedy, at most 78 characters where possible)."""
    out: list[str] = []
    width = len(name) + 1
    last = len(parsed) - 1
    for i, address in enumerate(parsed):
        tokens = _address_tokens(address, FOLD_AT - width - 1 if i == 0 else _MAX_WORD)
        if i < last:
            tokens[-1] += ","
        for token in tokens:
            if out and width + 1 + len(token) > FOLD_AT:
                out.append("\n ")
                width = 1
            elif out:
                out.append(" ")
                width += 1
            out.append(token)
            width += len(token)
    msg.set_raw(name, "".join(out))


def _fold_plain(name: str, value: str) -> str | None:
    """Fold plain ASCII at spaces only; None if a word cannot fit in a 998-octet line.

    The header registry would turn a long unbreakable token into encoded words, which breaks values
    that receivers read literally (a long List-Unsubscribe URL), so plain ASCII never goes there.
    """
    width = len(name) + 2
    if width + len(value) <= FOLD_AT:
        return value
    words = value.split(" ")
    lines: list[str] = []
    current = words[0]
    for word in words[1:]:
        if width + len(current) + 1 + len(word) > FOLD_AT and current.strip():
            lines.append(current)
            current, width = " " + word, 0
        else:
            current += " " + word
    lines.append(current)
    if len(name) + 2 + len(lines[0]) > MAX_LINE_OCTETS or any(len(x) > MAX_LINE_OCTETS for x in lines):
        return None
    return "\n".join(lines)


def put_text(msg: EmailMessage, name: str, value: str, *, unstructured: bool = False) -> None:
    """Plain ASCII is stored pre-folded. Other text: encoded words when the header is known to be
    unstructured (Subject), else the header registry, which knows how each structured header encodes."""
    if _PLAIN_RE.fullmatch(value) and "=?" not in value:
        folded = _fold_plain(name, value)
        if folded is not None:
            msg.set_raw(name, folded)
            return
    if unstructured:
        msg.set_raw(name, "\n ".join(_encoded_words(value, FOLD_AT - len(name) - 2)))
        return
    msg[name] = value
