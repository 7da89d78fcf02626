"""Hostile and malformed messages read by the parser: every one gives a record (repairs listed in ``defects``),
nesting is bounded without recursion, huge parts are stopped at the limit without being decoded into memory,
and attachment names from the message can never escape the attachment directory.

Arbitrary bytes: a property test (a few thousand cases in CI) and a longer run behind ``-m slow``; the
command and the count are in docs/reliability.md.
"""

from __future__ import annotations

import base64
import os
import sys
import time
import tracemalloc
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailconnector.mime.parse import parse_message
from mailconnector.records.read import ParseOptions, ReadRecord

PARSER_FAILED = "the parser failed"


def total(raw: bytes, options: ParseOptions | None = None) -> ReadRecord:
    record = parse_message(raw, options)
    assert isinstance(record, ReadRecord) and record.size == len(raw)
    assert not any(PARSER_FAILED in d for d in record.defects), record.defects
    record.model_dump_json()
    return record


# --------------------------------------------------------------------------- bytes and charsets


@pytest.mark.parametrize("raw", [
    pytest.param(b"Subject: a\x00b\r\nFrom: x\x00@example.test\r\n\r\nbody\x00with nul\r\n", id="nul-everywhere"),
    pytest.param(b"Subject: Gr\xfc\xdfe \xff\xfe\r\nFrom: J\xf6rg <j@example.test>\r\n\r\n\x80\x81\xff body\r\n",
                 id="raw-8bit-headers-and-body"),
    pytest.param(b"Subject: =?x-unknown?B?SGVsbG8=?=\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n"
                 b"caf\xe9\r\n", id="unknown-charset"),
    pytest.param(b"Content-Type: text/plain; charset=\"" + b"a" * 5000 + b"\"\r\n\r\nbody\r\n",
                 id="charset-name-5000-chars"),
    pytest.param(b"Subject: =?utf-8?B?////?= =?utf-8?Q?=ZZ=?= =?utf-7?B?+AOk-?=\r\n\r\nx\r\n",
                 id="invalid-encoded-words"),
    pytest.param(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 b"!!!not base64 at all###\r\n", id="invalid-base64-body"),
    pytest.param(b"Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfe\x00", id="odd-length-utf16"),
    pytest.param(b"Content-Type: text/html; charset=\"\r\n\r\n<meta charset=bogus-cs>\xe9\r\n", id="empty-charset"),
    pytest.param(b"X-Long: " + b"a" * 200_000 + b"\r\nSubject: after\r\n\r\nbody\r\n", id="header-line-200-KB"),
    pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"\r\nbody\r\n", id="20000-headers"),
    pytest.param(b"Subject: " + b"=?utf-8?B?w6k=?= " * 20_000 + b"\r\n\r\nx\r\n", id="20000-encoded-words"),
])
def test_bad_bytes_and_charsets_give_a_record(raw: bytes) -> None:
    started = time.perf_counter()
    record = total(raw)
    assert time.perf_counter() - started < 2.0
    assert "\x00" not in (record.subject + (record.text or ""))


@pytest.mark.parametrize(("value", "defect_word"), [
    ("Thu, 31 Feb 2024 10:00:00 +0000", "date"),
    ("yesterday at noon", "date"),
    ("Mon, 99 Jan 99999 99:99:99 +9999", "date"),
    ("\x00\x01\x02", "date"),
    ("9" * 500, "date"),
])
def test_malformed_dates_are_null_with_a_defect(value: str, defect_word: str) -> None:
    record = total(f"Date: {value}\r\nFrom: a@example.test\r\n\r\nx\r\n".encode("latin-1"))
    assert record.date is None
    assert any(defect_word in d for d in record.defects)


@pytest.mark.parametrize("value", [
    "<<<>>>", "a@b@c", "\"unterminated <a@example.test>", "(((comment) a@example.test", ",,,;;;", "@", "<@>",
    "a" * 10000 + "@example.test", "=?utf-8?B?AAAA?= <x@example.test>", "Group: a@x, b@y;, <c@z>",
])
def test_malformed_addresses_give_a_record(value: str) -> None:
    record = total(f"From: {value}\r\nTo: {value}\r\n\r\nx\r\n".encode())
    for address in [*record.to, *([record.from_] if record.from_ else [])]:
        assert "\r" not in address.address and "\n" not in address.address


# --------------------------------------------------------------------------- structure


def nested(depth: int) -> bytes:
    out = [b"From: a@example.test\r\nSubject: deep\r\n"]
    for i in range(depth):
        out.append(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\ninnermost\r\n")
    for i in reversed(range(depth)):
        out.append(b"--b%d--\r\n" % i)
    return b"".join(out)


def test_multiparts_nested_1000_deep_are_bounded_without_recursion() -> None:
    raw = nested(1000)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150)  # a recursive descent of 1000 levels could not run under this
    try:
        started = time.perf_counter()
        record = total(raw)
    finally:
        sys.setrecursionlimit(limit)
    assert time.perf_counter() - started < 2.0
    assert any("nesting deeper than" in d for d in record.defects)
    assert len(record.attachments) == 1  # the rest kept as one attachment, not dropped


# --------------------------------------------------------------------------- huge parts


def huge_base64_message(decoded_size: int) -> bytes:
    chunk = base64.encodebytes(os.urandom(57 * 1000)).replace(b"\n", b"\r\n")  # 57,000 bytes per block
    blocks = decoded_size // 57_000
    return (b"From: a@example.test\r\nSubject: huge\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--B\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + chunk * blocks + b"--B--\r\n")


@pytest.mark.parametrize("mode", ["inline", "none", "directory"])
def test_a_part_far_beyond_the_limit_is_skipped_without_being_decoded(tmp_path: Path, mode: str) -> None:
    raw = huge_base64_message(40 * 1024 * 1024)  # 40 MB decoded, 54 MB encoded
    limit = 1024 * 1024
    options = ParseOptions(attachments=mode, directory=tmp_path if mode == "directory" else None,  # type: ignore[arg-type]
                           max_attachment_bytes=limit)
    tracemalloc.start()
    try:
        record = total(raw, options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [attachment] = record.attachments
    assert attachment.skipped is not None and "max_attachment_bytes" in attachment.skipped
    assert attachment.content_base64 is None and attachment.path is None
    assert attachment.size > 39 * 1024 * 1024  # estimated from the encoded length
    assert peak < 4 * 1024 * 1024, f"{peak:,} bytes allocated while parsing"
    assert list(tmp_path.iterdir()) == []  # nothing written for a skipped part


# --------------------------------------------------------------------------- attachment names


HOSTILE_NAMES = [
    "../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\system32\\evil.dll", "C:\\Windows\\evil.exe",
    "\\\\server\\share\\x.txt", "..", ".", "", "CON", "nul.txt", "COM1.log", "LPT9", "aux.tar.gz",
    "a\x00b.txt", "name\r\nX-Injected: 1.txt", "\u202eexe.pdf", "a" * 1000 + ".pdf", "é" * 600 + ".txt",
    "trailing dots...", "trailing space ", "~/.ssh/authorized_keys", "file:name?*<>|.txt", "\x1b[31mred.txt",
]


def message_with_names(names: list[str]) -> bytes:
    parts = [b"From: a@example.test\r\nSubject: names\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"]
    for name in names:
        encoded = "".join(c if c.isalnum() and c.isascii() else "".join(f"%{b:02X}" for b in c.encode())
                          for c in name)
        parts.append(b"--B\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Disposition: attachment; filename*=utf-8''" + encoded.encode() + b"\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n")
    parts.append(b"--B--\r\n")
    return b"".join(parts)


_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def test_hostile_attachment_names_land_inside_the_directory_with_safe_names(tmp_path: Path) -> None:
    target = tmp_path / "attachments"
    target.mkdir()
    record = total(message_with_names(HOSTILE_NAMES), ParseOptions(attachments="directory", directory=target))
    assert len(record.attachments) == len(HOSTILE_NAMES)
    written = sorted(p.name for p in target.iterdir())
    assert len(written) == len(HOSTILE_NAMES)  # no collision lost a file
    for attachment in record.attachments:
        assert attachment.path is not None
        path = Path(attachment.path)
        assert path.resolve().parent == target.resolve(), path
        assert path.read_bytes() == b"hi"
        name = attachment.filename
        assert name == path.name and name not in ("", ".", "..")
        assert not any(c in name for c in "/\\\x00\r\n") and name.isprintable()
        assert len(name.encode()) <= 255
        assert name.split(".")[0].strip().lower() not in _RESERVED, name
        assert unicodedata.category(name[0]) != "Cf" and "\u202e" not in name
    assert {a.original_filename for a in record.attachments} >= {"/etc/passwd", "CON"}
    assert not (tmp_path / "etc").exists() and not Path("/etc/passwd.1").exists()


# --------------------------------------------------------------------------- arbitrary bytes


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_the_parser_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    total(raw)


_PIECES = [b"\r\n", b"\n", b"\r\n\r\n", b"--B", b"--B--", b"Content-Type: multipart/mixed; boundary=B",
           b"Content-Type: message/rfc822", b"Content-Transfer-Encoding: base64", b"quoted-printable",
           b"=?utf-8?B?", b"?=", b"filename*0*=utf-8''", b"charset=", b"\x00", b"\xff", b"=\r\n", b": ", b"\t"]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=20)), max_size=60))
def test_the_parser_never_raises_on_mime_shaped_garbage(pieces: list[bytes]) -> None:
    total(b"".join(pieces))


@pytest.mark.slow
@settings(max_examples=200_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=4000),
                 st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=40)), max_size=200)
                 .map(b"".join)))
def test_the_parser_never_raises_long_fuzz(raw: bytes) -> None:
    total(raw)
