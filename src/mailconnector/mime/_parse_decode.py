"""Byte and text decoding for the parser: charsets, RFC 2047 words, RFC 2231 parameters, transfer encodings.

Every function here is total: bad input gives the best text that can be read plus a line in the
defect list, never an exception. The transfer decoders are incremental so that a 50 MB attachment
can be written to a file in chunks instead of being decoded into memory at once.
"""

from __future__ import annotations

import binascii
import codecs
import re
import sys
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

import pybase64

from mailconnector.mime._scans import lf_lines, utf8_text, without_line_ends

__all__ = [
    "CHUNK",
    "Base64Decoder",
    "Defects",
    "IdentityDecoder",
    "QuotedPrintableDecoder",
    "TransferDecoder",
    "base64_as_is",
    "decode_8bit",
    "decode_all",
    "decode_text",
    "decode_words",
    "estimate_decoded_size",
    "line_chunks",
    "make_decoder",
    "parse_params",
]

# Parts bigger than this are decoded in chunks of about this size, cut at line ends.
CHUNK = 1 << 20
_MAX_DEFECTS = 200


class Defects:
    """An ordered, de-duplicated, bounded list of plain-words defects.

    Bounded because a hostile message can repeat one fault a million times; the record must stay small.
    """

    __slots__ = ("_seen", "dropped", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        self._seen: set[str] = set()
        self.dropped = 0

    def add(self, text: str) -> None:
        if text in self._seen:
            return
        if len(self.items) >= _MAX_DEFECTS:
            self.dropped += 1
            return
        self._seen.add(text)
        self.items.append(text)

    def result(self) -> list[str]:
        if self.dropped:
            return [*self.items, f"{self.dropped} more defects not listed"]
        return list(self.items)


# --------------------------------------------------------------------------------------------- charsets

# Labels that name no charset at all: the bytes have to be guessed.
_UNKNOWN_LABELS = frozenset(
    ["unknown-8bit", "unknown", "x-unknown", "x-user-defined", "default", "8bit", "binary", "none", "charset",
     "_autodetect_all", "auto", "x-binaryenc"]
)
# Where a label commonly means a superset in practice (as web browsers read them), or is misspelt.
_LABEL_MAP = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "cp819": "cp1252",
    "ibm819": "cp1252",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "us": "ascii",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "korean": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "csgb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "chinese": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}
# Codecs that are not charsets, or that interpret escapes: never let a message pick them.
_REFUSED_CODECS = frozenset(
    ["undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode", "mbcs", "oem"]
)
_codec_cache: dict[str, str | None] = {}
_SURROGATES = re.compile("[\ud800-\udfff]")


def _lookup(label: str) -> str | None:
    """The Python codec for a charset label, or None when the label is unknown or refused."""
    cached = _codec_cache.get(label, "")
    if cached != "":
        return cached
    result: str | None = None
    name = _LABEL_MAP.get(label, label)
    if label not in _UNKNOWN_LABELS and len(label) < 64:
        for candidate in (name, name.removeprefix("x-"), name.replace("cp-", "cp")):
            try:
                info = codecs.lookup(candidate)
            except (LookupError, ValueError):
                continue
            normalized = info.name.replace("-", "_")
            if getattr(info, "_is_text_encoding", True) and normalized not in _REFUSED_CODECS:
                result = info.name
            break
    if len(_codec_cache) < 1000:
        _codec_cache[label] = result
    return result


def _clean_label(charset: str | None) -> str:
    return (charset or "").strip().strip("\"'").strip().lower()


def _guess(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown charset: UTF-8 if it fits, else Windows-1252, else Latin-1 (total)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def decode_text(data: bytes, charset: str | None, what: str, defects: Defects) -> str:
    """Decode text in its declared charset, falling back (with a defect) when the label or bytes are wrong.

    A missing label means US-ASCII (RFC 2045); 8-bit bytes under it are guessed. Latin-1 labels are read
    as Windows-1252, which only differs in the range Latin-1 leaves to control characters.
    """
    label = _clean_label(charset) or "us-ascii"
    codec = _lookup(label)
    if codec is None:
        text, used = _guess(data)
        if not data.isascii():
            defects.add(f"{what}: charset {label!r} unknown; decoded as {used}")
        return text
    try:
        text = utf8_text(data) if codec == "utf-8" else data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        pass
    else:
        if codec == "utf-7" and _SURROGATES.search(text):
            defects.add(f"{what}: broken {label} sequences replaced")
            return _SURROGATES.sub("\ufffd", text)
        return text
    if codec == "cp1252":
        # Declared Latin-1, with bytes that Windows-1252 leaves undefined: Latin-1 itself reads them.
        return data.decode("latin-1")
    if codec in ("ascii", "utf-8"):
        text, used = _guess(data)
        defects.add(f"{what}: bytes are not valid {label}; decoded as {used}")
        return text
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        defects.add(f"{what}: undecodable {label} bytes replaced")
        return data.decode(codec, "replace")
    defects.add(f"{what}: bytes are not valid {label}; decoded as utf-8")
    return text


_ASCII_TEXT = "".join(map(chr, range(128)))
_line_ends_cache: dict[str, bool] = {}


def _cr_is_a_byte(codec: str | None) -> bool:
    """Whether a CR byte is a CR character wherever it stands, and dropping it changes no other character:
    true of UTF-8 and of the single-byte charsets that keep ASCII; not of UTF-16, EBCDIC, UTF-7, ISO-2022 or
    the multi-byte Asian charsets (whose error handling may take a CR into a broken sequence). Unknown labels
    are guessed as UTF-8, Windows-1252 or Latin-1: all qualify."""
    if codec is None:
        return True
    known = _line_ends_cache.get(codec)
    if known is None:
        try:
            info = codecs.lookup(codec)
        except LookupError:
            info = None
        # A charmap codec's module has the table of its 256 characters; the stateful and multi-byte ones none.
        module = sys.modules.get(getattr(info and info.incrementaldecoder, "__module__", ""))
        table = getattr(module, "decoding_table", None)
        known = info is not None and (info.name in ("utf-8", "ascii", "iso8859-1") or (
            isinstance(table, str) and len(table) == 256 and table[:128] == _ASCII_TEXT))
        _line_ends_cache[codec] = known
    return known


def decode_lines(data: bytes, charset: str | None, what: str, defects: Defects) -> str:
    """:func:`decode_text`, with CRLF line ends made LF (a lone CR is kept). Done on the bytes before
    decoding when every CR ends a line and the charset allows it: bytes drop a single character with
    ``memchr``, several times faster than replacing a two-character string in text. The result is the same."""
    if b"\r" in data and _cr_is_a_byte(_lookup(_clean_label(charset) or "us-ascii")):
        lf = lf_lines(data)
        if lf is not None:
            return decode_text(lf, charset, what, defects)
    text = decode_text(data, charset, what, defects)
    return text.replace("\r\n", "\n") if "\r" in text else text


def decode_8bit(raw: bytes, what: str, defects: Defects) -> str:
    """Header bytes as text: ASCII, else UTF-8 (allowed by RFC 6532), else a guess with a defect."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        pass
    text, used = _guess(raw)
    if used != "utf-8":
        defects.add(f"{what}: 8-bit bytes are not utf-8; decoded as {used}")
    return text


# --------------------------------------------------------------------------------------------- RFC 2047

# Strict: no white space and no '?' inside the encoded text.
_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
# Lenient: white space inside the encoded text, as left by a line folded in the middle of a word.
_LOOSE_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?]*?)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_WS = re.compile(r"\s+")


def _b_word(text: str) -> tuple[bytes | None, bool]:
    """Bytes of a "B" encoded word and whether padding had to be repaired; None if it is not base64."""
    data = text.encode("ascii", "replace")
    try:
        return binascii.a2b_base64(data, strict_mode=True), False
    except binascii.Error:
        pass
    clean = data.rstrip(b"=")
    if _B64_JUNK.search(clean):
        return None, False
    rest = len(clean) % 4
    if rest == 1:
        clean = clean[:-1]
    elif rest:
        clean += b"=" * (4 - rest)
    try:
        return binascii.a2b_base64(clean), True
    except binascii.Error:
        return None, False


def _decode_words_with(pattern: re.Pattern[str], value: str, what: str, defects: Defects) -> tuple[str, bool]:
    out: list[str] = []
    pos = 0
    pending: list[bytes] = []
    pending_charset = ""
    repaired = False
    loose = pattern is _LOOSE_WORD
    for match in pattern.finditer(value):
        charset, encoding, encoded = match.groups()
        if loose and _WS.search(encoded):
            encoded = _WS.sub("", encoded)
            repaired = True
        data: bytes | None
        if encoding in "qQ":
            data = binascii.a2b_qp(encoded.encode("ascii", "replace"), header=True)
        else:
            data, bad = _b_word(encoded)
            repaired = repaired or bad
        start = match.start()
        # White space between two encoded words is not part of the text (RFC 2047, 6.2).
        if data is None or not pending_charset or (start > pos and not value[pos:start].isspace()):
            if pending_charset:
                out.append(decode_text(b"".join(pending), pending_charset, what, defects))
                pending = []
                pending_charset = ""
            out.append(value[pos:start])
        pos = match.end()
        if data is None:
            # Not decodable at all: keep the word as written rather than invent text.
            defects.add(f"{what}: undecodable encoded word kept as written")
            out.append(match.group(0))
            continue
        charset = charset.lower()
        # Adjacent words in one charset are joined first: senders split multi-byte characters across words.
        if charset != pending_charset:
            if pending_charset:
                out.append(decode_text(b"".join(pending), pending_charset, what, defects))
                pending = []
            pending_charset = charset
        pending.append(data)
    if pending_charset:
        out.append(decode_text(b"".join(pending), pending_charset, what, defects))
    out.append(value[pos:])
    return "".join(out), repaired


def decode_words(value: str, what: str, defects: Defects) -> str:
    """Decode RFC 2047 encoded words; a word broken by a folded line is repaired with a defect."""
    if "=?" not in value:
        return value
    text, repaired = _decode_words_with(_WORD, value, what, defects)
    if "=?" in text and "?=" in text and _LOOSE_WORD.search(value):
        scratch = Defects()
        loose, _ = _decode_words_with(_LOOSE_WORD, value, what, scratch)
        if loose != text:
            for item in scratch.items:
                defects.add(item)
            defects.add(f"{what}: line break or space inside an encoded word repaired")
            return loose
    if repaired:
        defects.add(f"{what}: malformed encoded word repaired")
    return text


# --------------------------------------------------------------------------------------------- parameters

# One ';'-separated segment; a quoted string may hold ';' and may be left open at the end.
_SEGMENT = re.compile(r'(?:[^;"]|"(?:[^"\\]|\\.)*(?:"|\\?$))+', re.S)
_EXT_NAME = re.compile(r"^([^*]+)\*(?:(\d{1,4})(\*)?)?$")
_UNESCAPE = re.compile(r"\\(.)", re.S)
# The shape nearly every Content-Type and Content-Disposition has: a value, then ``name=value`` pairs, each value a
# token or a quoted string without escapes; no RFC 2231 ``*``, no stray ``;`` or quote.
_SIMPLE_PARAMS = re.compile(r'\s*([^\s;"=]+)\s*((?:;\s*[A-Za-z0-9_.-]+=(?:"[^"\\]*"|[^\s;"\\]*)\s*)*)(?:;\s*)?')
_SIMPLE_PARAM = re.compile(r';\s*([A-Za-z0-9_.-]+)=(?:"([^"\\]*)"|([^\s;"\\]*))')


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        inner = value[1:-1] if value.endswith('"') and len(value) > 1 else value[1:]
        return _UNESCAPE.sub(r"\1", inner)
    return value


def parse_params(value: str, what: str, defects: Defects) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; a=b; c*=utf-8''x`` into the lower-case main value and decoded parameters.

    RFC 2231 continuations and charsets are joined and decoded; RFC 2047 words inside a plain value
    (what many mailers put in ``name=``) are decoded too.
    """
    simple = _SIMPLE_PARAMS.fullmatch(value)
    if simple is not None:
        plain: dict[str, str] = {}
        for name, quoted, bare in _SIMPLE_PARAM.findall(simple.group(2)):
            plain.setdefault(name.lower(), quoted or bare)
        return simple.group(1).lower(), {name: decode_words(text, what, defects) for name, text in plain.items()}
    segments = _SEGMENT.findall(value)
    if not segments:
        return "", {}
    main = segments[0].strip().lower()
    rest = segments[1:]
    if " " in main and "=" in main:
        # "text/html charset=utf-8": a missing ';'.
        main, _, first = main.partition(" ")
        rest.insert(0, first)
        defects.add(f"{what}: missing ';' between parameters")
    plain = {}
    extended: dict[str, dict[int, tuple[str, bool]]] = {}
    for segment in rest:
        name, sep, raw = segment.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        match = _EXT_NAME.match(name)
        if match is None:
            plain.setdefault(name, _unquote(raw))
            continue
        base, index, star = match.groups()
        slots = extended.setdefault(base, {})
        number = int(index) if index is not None else 0
        slots.setdefault(number, (_unquote(raw), index is None or star is not None))
    params = {name: decode_words(text, what, defects) for name, text in plain.items()}
    for base, slots in extended.items():
        params[base] = _join_extended(slots, what, defects)
    return main, params


def _join_extended(slots: dict[int, tuple[str, bool]], what: str, defects: Defects) -> str:
    ordered = [slots[key] for key in sorted(slots)]
    if len(slots) > 1 and sorted(slots) != list(range(len(slots))):
        defects.add(f"{what}: parameter continuations out of sequence")
    charset = "us-ascii"
    first, first_encoded = ordered[0]
    if first_encoded:
        head = first.split("'", 2)
        if len(head) == 3:
            charset = head[0] or "us-ascii"
            ordered[0] = (head[2], True)
        else:
            defects.add(f"{what}: RFC 2231 value without charset; read as utf-8")
            charset = "utf-8"
    codec = _lookup(_clean_label(charset)) or "utf-8"
    chunks: list[bytes] = []
    for text, encoded in ordered:
        if encoded:
            chunks.append(unquote_to_bytes(text))
        else:
            chunks.append(text.encode(codec, "replace") if codec != "ascii" else text.encode("utf-8"))
    joined = decode_text(b"".join(chunks), charset, what, defects)
    return decode_words(joined, what, defects) if "=?" in joined else joined


# --------------------------------------------------------------------------------------------- bodies

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Deleting with these tables keeps (alphabet and '=') / counts what is neither data nor white space.
_B64_NOISE = bytes(sorted(set(range(256)) - set(_B64_ALPHABET) - set(b"=")))
_B64_GARBAGE = bytes(sorted(set(range(256)) - set(_B64_ALPHABET) - set(b"= \t\r\n")))

class TransferDecoder:
    """Incremental Content-Transfer-Encoding decoder: ``feed`` line-aligned slices, then ``finish``.

    A slice is given as ``(buf, start, end)`` so that the common case decodes straight from the
    message buffer without copying the encoded part first.
    """

    def feed(self, buf: bytes, start: int, end: int) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""

    def report(self, what: str, defects: Defects) -> None:
        """Add what had to be repaired, once the whole part has been fed."""


def _crlf(data: bytes) -> bytes:
    """Line ends in their canonical MIME form (CRLF), whatever the message file used."""
    if b"\n" not in data:
        return data
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


class IdentityDecoder(TransferDecoder):
    """7bit, 8bit and binary. Text line ends become CRLF unless ``canonical`` is off (binary)."""

    def __init__(self, canonical: bool) -> None:
        self.canonical = canonical

    def feed(self, buf: bytes, start: int, end: int) -> bytes:
        data = buf[start:end]
        return _crlf(data) if self.canonical else data


class QuotedPrintableDecoder(TransferDecoder):
    """Quoted-printable; soft line breaks vanish, hard ones become CRLF (RFC 2045, 6.7)."""

    def __init__(self, canonical: bool) -> None:
        self.canonical = canonical

    def feed(self, buf: bytes, start: int, end: int) -> bytes:
        data = binascii.a2b_qp(memoryview(buf)[start:end])
        return _crlf(data) if self.canonical else data


class Base64Decoder(TransferDecoder):
    """Base64 that survives line breaks, garbage characters, missing padding and concatenated blobs."""

    def __init__(self) -> None:
        self._carry = b""
        self.garbage = 0
        self.truncated = False
        self.unpadded = False

    def feed(self, buf: bytes, start: int, end: int) -> bytes:
        if not self._carry:
            fast = _clean_base64(buf, start, end)
            if fast is not None:
                return fast
        data = buf[start:end]
        self.garbage += len(data) - len(data.translate(None, _B64_GARBAGE))
        pieces = data.translate(None, _B64_NOISE).split(b"=")
        pieces[0] = self._carry + pieces[0]
        # Every piece but the last ended at padding: a complete blob (senders concatenate them).
        out = [self._padded(piece) for piece in pieces[:-1] if piece]
        last = pieces[-1]
        whole = len(last) - len(last) % 4
        out.append(binascii.a2b_base64(last[:whole]))
        self._carry = last[whole:]
        return b"".join(out)

    def _padded(self, piece: bytes) -> bytes:
        rest = len(piece) % 4
        if rest == 1:
            self.truncated = True
            piece = piece[:-1]
        elif rest:
            piece += b"=" * (4 - rest)
        return binascii.a2b_base64(piece) if piece else b""

    def finish(self) -> bytes:
        if not self._carry:
            return b""
        self.unpadded = len(self._carry) % 4 != 1
        data, self._carry = self._padded(self._carry), b""
        return data

    def report(self, what: str, defects: Defects) -> None:
        if self.garbage:
            defects.add(f"{what}: {self.garbage} characters that are not base64 ignored")
        if self.truncated:
            defects.add(f"{what}: base64 data cut short; last incomplete byte dropped")
        elif self.unpadded:
            defects.add(f"{what}: base64 padding missing; repaired")


def _well_formed_base64(buf: bytes, start: int, end: int) -> tuple[bytes, bytes] | None:
    """(the part without its line ends, its decoded bytes) if it is well-formed base64 (alphabet, padding only
    at the end); None otherwise, for the careful path.

    pybase64 (SIMD) checks and decodes in one pass, tens of times faster than ``binascii``: an inbox's
    attachments are most of its bytes.
    """
    cleaned = without_line_ends(buf, start, end)
    try:
        return cleaned, pybase64.b64decode(cleaned, validate=True)
    except ValueError:  # binascii.Error: a character outside the alphabet, or padding in the wrong place
        return None


def _clean_base64(buf: bytes, start: int, end: int) -> bytes | None:
    """Decode well-formed base64 in one C call; None when anything is unusual (the careful path runs)."""
    checked = _well_formed_base64(buf, start, end)
    return None if checked is None else checked[1]


def base64_as_is(buf: bytes, start: int, end: int) -> tuple[str, int] | None:
    """A well-formed base64 part as the base64 text of a record, and its decoded size.

    Encoding the decoded bytes again would cost another pass over the data for the same text.
    """
    checked = _well_formed_base64(buf, start, end)
    if checked is None:
        return None
    cleaned, data = checked
    return cleaned.decode("ascii"), len(data)


def make_decoder(cte: str, canonical: bool) -> TransferDecoder:
    """The decoder for a (lower-case) transfer encoding; ``canonical``: make text line ends CRLF."""
    if cte == "base64":
        return Base64Decoder()
    if cte == "quoted-printable":
        return QuotedPrintableDecoder(canonical)
    return IdentityDecoder(canonical and cte != "binary")


def decode_all(buf: bytes, start: int, end: int, cte: str, canonical: bool, what: str,
               defects: Defects) -> bytes:
    """Decode a whole part into memory (bodies, and attachments delivered inline)."""
    decoder = make_decoder(cte, canonical)
    if end - start <= CHUNK:
        data = decoder.feed(buf, start, end) + decoder.finish()
    else:
        pieces = [decoder.feed(buf, a, b) for a, b in line_chunks(buf, start, end, CHUNK, cte == "base64")]
        pieces.append(decoder.finish())
        data = b"".join(pieces)
    decoder.report(what, defects)
    return data


def line_chunks(buf: bytes, start: int, end: int, size: int = CHUNK,
                cut_anywhere: bool = False) -> Iterator[tuple[int, int]]:
    """``(start, end)`` slices of ``buf[start:end]`` of about ``size`` bytes, each cut after a line end.

    ``cut_anywhere`` (base64, whose decoder carries partial groups over) cuts a line longer than
    ``size`` too, so that base64 written without line breaks is still decoded in bounded pieces.
    """
    pos = start
    while pos < end:
        stop = min(end, pos + size)
        if stop < end:
            newline = buf.rfind(b"\n", pos, stop)
            if newline >= 0:
                stop = newline + 1
            elif not cut_anywhere:
                newline = buf.find(b"\n", stop, end)
                stop = end if newline < 0 else newline + 1
        yield pos, stop
        pos = stop


def exceeds(buf: bytes, start: int, end: int, cte: str, limit: int | None) -> int | None:
    """The estimated decoded size of a part when it is larger than ``limit``; None when it is not."""
    # Decoding never makes a part longer: a part whose encoded length is within the limit costs no count.
    if limit is None or end - start <= limit:
        return None
    estimate = estimate_decoded_size(buf, start, end, cte)
    return estimate if estimate > limit else None


def estimate_decoded_size(buf: bytes, start: int, end: int, cte: str) -> int:
    """The decoded size of a part, judged from its encoded bytes without decoding or copying them."""
    length = end - start
    if cte == "base64":
        core = length - buf.count(b"\n", start, end) - buf.count(b"\r", start, end)
        tail = buf[max(start, end - 8) : end].rstrip(b"\r\n \t")
        pads = len(tail) - len(tail.rstrip(b"="))
        return max(0, core * 3 // 4 - pads)
    if cte == "quoted-printable":
        # "=XY" is one byte and "=\n" none: each '=' saves two characters.
        return max(0, length - 2 * buf.count(b"=", start, end))
    return length
