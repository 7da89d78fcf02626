"""The MIME parser: golden corpus, attachment delivery modes, limits, and the never-raises promise."""

from __future__ import annotations

import base64
import json
import os
import random
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from mailconnector.errors import ConfigError, MessageError
from mailconnector.mime._parse_dates import parse_date
from mailconnector.mime._parse_decode import Base64Decoder, Defects, decode_words, parse_params
from mailconnector.mime._parse_fields import parse_address_list
from mailconnector.mime.parse import parse_message
from mailconnector.records.read import ParseOptions, ReadRecord, read_record_schema

DATA = Path(__file__).resolve().parents[1] / "data"
EML = DATA / "eml"
EXPECTED = DATA / "expected"
CORPUS = sorted(path.stem for path in EML.glob("*.eml"))
# The parser's own safety net: if this appears, a bug was hidden behind a minimal record.
PARSER_FAILED = "the parser failed"


def load(name: str) -> bytes:
    return (EML / f"{name}.eml").read_bytes()


def dump(record: ReadRecord) -> dict[str, object]:
    return record.model_dump(mode="json", by_alias=True)


def attachment_bytes(record: ReadRecord, index: int) -> bytes:
    content = record.attachments[index].content_base64
    assert content is not None
    return base64.b64decode(content)


def message(*parts: str) -> bytes:
    return "\r\n".join(parts).encode("utf-8")


# --------------------------------------------------------------------------------------------- corpus


def test_corpus_is_complete() -> None:
    assert len(CORPUS) >= 45
    assert sorted(path.stem for path in EXPECTED.glob("*.json")) == CORPUS


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_message_matches_expected_record(name: str) -> None:
    expected = json.loads((EXPECTED / f"{name}.json").read_text(encoding="utf-8"))
    record = parse_message(load(name))
    assert dump(record) == expected
    assert not any(PARSER_FAILED in defect for defect in record.defects)
    json.dumps(dump(record))


@pytest.mark.parametrize("name", [n for n in CORPUS if n not in ("binary-garbage", "lf-line-endings")])
def test_line_ends_do_not_change_the_record(name: str) -> None:
    """A message read from an LF file and the same message read over IMAP (CRLF) give one record."""
    raw = load(name)
    as_lf = raw.replace(b"\r\n", b"\n")
    crlf_record, lf_record = dump(parse_message(raw)), dump(parse_message(as_lf))
    crlf_record.pop("size")
    lf_record.pop("size")
    assert lf_record == crlf_record


def test_attachment_bytes_are_the_original_bytes() -> None:
    record = parse_message(load("mixed-attachments"))
    assert attachment_bytes(record, 0).startswith(b"%PDF-1.4\n")
    assert attachment_bytes(record, 0).endswith(b"%%EOF\n")
    assert attachment_bytes(record, 1) == b"id,name\r\n1,alpha\r\n2,beta"
    png = parse_message(load("related-inline-image"))
    assert attachment_bytes(png, 0).startswith(b"\x89PNG\r\n\x1a\n")
    assert png.attachments[0].size == len(attachment_bytes(png, 0))


def test_forwarded_message_is_one_attachment_not_flattened() -> None:
    record = parse_message(load("forwarded-message"))
    assert [a.content_type for a in record.attachments] == ["message/rfc822"]
    assert record.attachments[0].filename == "Original question.eml"
    inner = parse_message(attachment_bytes(record, 0))
    assert inner.subject == "Original question"
    assert inner.text == "Can you check the numbers?\n"
    assert record.text == "Forwarding Carol's message, attached whole."


def test_nested_bodies_are_found_in_any_layout() -> None:
    record = parse_message(load("related-mixed-alternative"))
    assert record.text == "Deeply nested body text."
    assert record.html is not None and "cid:pic@example.test" in record.html
    assert [(a.filename, a.inline, a.content_id) for a in record.attachments] == [
        ("nested.pdf", False, None),
        ("attachment.png", True, "pic@example.test"),
    ]


def test_calendar_and_tnef_are_attachments() -> None:
    invite = parse_message(load("calendar-invite"))
    assert invite.text and invite.html
    assert [a.content_type for a in invite.attachments] == ["text/calendar"]
    assert attachment_bytes(invite, 0).startswith(b"BEGIN:VCALENDAR\r\n")
    tnef = parse_message(load("winmail-dat"))
    assert [(a.filename, a.content_type) for a in tnef.attachments] == [("winmail.dat", "application/ms-tnef")]


# --------------------------------------------------------------------------------------------- directory mode


def test_directory_mode_writes_safe_unique_files(tmp_path: Path) -> None:
    options = ParseOptions(attachments="directory", directory=tmp_path)
    record = parse_message(load("hostile-filenames"), options)
    names = [a.filename for a in record.attachments]
    assert names == [
        "passwd", "shadow", "evil.exe", "_CON.txt", "_nul", "_LPT1.tar.gz", "bashrc", "trailing dots",
        "invoicefdp.exe", "x" * 146 + ".pdf", "report.pdf", "report (1).pdf", "Report.PDF", "tab here.txt",
    ]
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    for index, attachment in enumerate(record.attachments):
        assert attachment.content_base64 is None
        assert attachment.path is not None
        path = Path(attachment.path)
        assert path.parent == tmp_path
        assert path.read_bytes() == f"payload {index}".encode()
        assert attachment.size == len(f"payload {index}")
    assert record.attachments[0].original_filename == "../../etc/passwd"


def test_directory_mode_names_made_here(tmp_path: Path) -> None:
    raw = message(
        "From: a@example.test",
        "Subject: names",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain",
        "",
        "body",
        *[
            line
            for name in ["a\x00b.txt", "/abs/olute.txt", "AUX.log", "z" * 1000 + ".csv", "", "..\\..\\up.ini"]
            for line in [
                "--b",
                "Content-Type: text/plain",
                f'Content-Disposition: attachment; filename="{name}"',
                "",
                "content",
            ]
        ],
        "--b--",
        "",
    )
    record = parse_message(raw, ParseOptions(attachments="directory", directory=tmp_path))
    names = [a.filename for a in record.attachments]
    assert names[:3] == ["ab.txt", "olute.txt", "_AUX.log"]
    assert len(names[3]) == 150 and names[3].endswith(".csv")
    assert names[4:] == ["attachment.txt", "up.ini"]
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    assert all(Path(a.path or "").parent == tmp_path for a in record.attachments)


def test_directory_mode_never_follows_an_existing_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"untouched")
    target = tmp_path / "dir"
    target.mkdir()
    (target / "report.pdf").symlink_to(outside)
    record = parse_message(load("mixed-attachments"), ParseOptions(attachments="directory", directory=target))
    assert record.attachments[0].filename == "report (1).pdf"
    assert outside.read_bytes() == b"untouched"


def test_directory_is_made_with_the_first_attachment_only(tmp_path: Path) -> None:
    later = tmp_path / "per-message"
    parse_message(load("alternative"), ParseOptions(attachments="directory", directory=later))
    assert not later.exists()
    record = parse_message(load("mixed-attachments"), ParseOptions(attachments="directory", directory=later))
    assert sorted(os.listdir(later)) == ["data.csv", "report.pdf"]
    assert [Path(a.path or "").parent for a in record.attachments] == [later, later]


def test_directory_write_failure_raises_message_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    impossible = blocker / "sub"  # below a regular file: no one can create it, not even root
    with pytest.raises(MessageError) as caught:
        parse_message(load("mixed-attachments"), ParseOptions(attachments="directory", directory=impossible))
    assert caught.value.field == "attachments[0]"
    assert isinstance(caught.value.__cause__, OSError)


def test_directory_mode_streams_a_big_attachment(tmp_path: Path) -> None:
    payload = random.Random(1).randbytes(8 * 1024 * 1024)
    raw = message(
        "From: a@example.test",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: application/octet-stream",
        'Content-Disposition: attachment; filename="big.bin"',
        "Content-Transfer-Encoding: base64",
        "",
        base64.encodebytes(payload).decode("ascii").replace("\n", "\r\n"),
        "--b--",
        "",
    )
    tracemalloc.start()
    try:
        record = parse_message(raw, ParseOptions(attachments="directory", directory=tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big.bin").read_bytes() == payload
    assert record.attachments[0].size == len(payload)
    # Decoded in chunks: far less than one extra copy of the attachment is ever held.
    assert peak < len(payload) // 2


def test_directory_mode_streams_base64_without_line_breaks(tmp_path: Path) -> None:
    payload = random.Random(2).randbytes(8 * 1024 * 1024 + 1)
    raw = message("From: a@example.test", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                  "", base64.b64encode(payload).decode("ascii"))
    tracemalloc.start()
    try:
        record = parse_message(raw, ParseOptions(attachments="directory", directory=tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert Path(record.attachments[0].path or "").read_bytes() == payload
    assert record.defects == ["no 'date' header"]
    assert peak < len(payload) // 2  # pieces of about a megabyte, not the whole part


# --------------------------------------------------------------------------------------------- limits


def test_none_mode_gives_metadata_only() -> None:
    record = parse_message(load("mixed-attachments"), ParseOptions(attachments="none"))
    inline = parse_message(load("mixed-attachments"))
    assert [a.content_base64 for a in record.attachments] == [None, None]
    assert [a.size for a in record.attachments] == [a.size for a in inline.attachments]
    assert all(a.skipped is None and a.path is None for a in record.attachments)


@pytest.mark.parametrize("mode", ["inline", "none", "directory"])
def test_max_attachment_bytes_skips_bigger_parts(mode: str, tmp_path: Path) -> None:
    options = ParseOptions(attachments=mode, directory=tmp_path, max_attachment_bytes=50)  # type: ignore[arg-type]
    record = parse_message(load("mixed-attachments"), options)
    pdf, csv = record.attachments
    assert pdf.skipped == "larger than max_attachment_bytes (50)"
    assert pdf.content_base64 is None and pdf.path is None
    assert 90 <= pdf.size <= 100  # estimated from the encoded length (the real size is 95)
    assert csv.skipped is None and csv.size == 24
    if mode == "directory":
        assert os.listdir(tmp_path) == ["data.csv"]


def test_part_exactly_at_the_limit_is_delivered() -> None:
    record = parse_message(load("mixed-attachments"), ParseOptions(max_attachment_bytes=95))
    assert record.attachments[0].skipped is None
    assert len(attachment_bytes(record, 0)) == 95


def test_huge_skipped_part_is_never_decoded() -> None:
    encoded = ("QUFB" * 19 + "\r\n") * 300_000  # about 23 MB of base64
    raw = message("From: a@example.test", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
                  "", encoded)
    tracemalloc.start()
    try:
        began = time.perf_counter()
        record = parse_message(raw, ParseOptions(max_attachment_bytes=1024))
        elapsed = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.attachments[0].skipped == "larger than max_attachment_bytes (1024)"
    assert record.attachments[0].size == 300_000 * 57
    assert peak < 1024 * 1024
    assert elapsed < 2


def test_huge_declared_sizes_are_ignored() -> None:
    tracemalloc.start()
    try:
        record = parse_message(load("huge-declared-size"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.attachments[0].size == 16
    assert peak < 1024 * 1024


# --------------------------------------------------------------------------------------------- depth


def test_deep_nesting_is_cut_at_max_depth_quickly() -> None:
    raw = load("nested-1000")
    began = time.perf_counter()
    record = parse_message(raw)
    assert time.perf_counter() - began < 1
    assert record.defects == ["multipart nesting deeper than 100 levels; the rest kept as one attachment"]
    assert attachment_bytes(record, 0).startswith(b'Content-Type: multipart/mixed; boundary="n100"')


def test_all_1000_levels_can_be_descended_without_recursion() -> None:
    began = time.perf_counter()
    record = parse_message(load("nested-1000"), ParseOptions(max_depth=5000))
    assert time.perf_counter() - began < 1
    assert record.text == "The innermost text."
    assert record.defects == []


def test_max_depth_zero_keeps_the_whole_body_opaque() -> None:
    record = parse_message(load("alternative"), ParseOptions(max_depth=0))
    assert record.text is None
    assert [a.content_type for a in record.attachments] == ["multipart/alternative"]


# --------------------------------------------------------------------------------------------- options


def test_include_raw() -> None:
    raw = load("text-only")
    record = parse_message(raw, ParseOptions(include_raw=True))
    assert record.raw_base64 is not None
    assert base64.b64decode(record.raw_base64) == raw
    assert record.raw_path is None
    assert parse_message(raw).raw_base64 is None


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        ParseOptions(attachments="directory")
    with pytest.raises(ConfigError):
        ParseOptions(attachments="everywhere")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ParseOptions(max_attachment_bytes=-1)


def test_schema_uses_serialised_names() -> None:
    schema = read_record_schema()
    assert "from" in schema["properties"] and "from_" not in schema["properties"]
    assert "AttachmentInfo" in json.dumps(schema)
    record = parse_message(load("alternative"))
    assert ReadRecord.model_validate(dump(record)) == record


# --------------------------------------------------------------------------------------------- never raises


@pytest.mark.parametrize("raw", [b"", b"\r\n", b"\n\n\n", b":", b"From ", b"\x00" * 100, b"\r" * 50, b"--"])
def test_degenerate_input(raw: bytes) -> None:
    record = parse_message(raw)
    assert record.size == len(raw)
    assert not any(PARSER_FAILED in defect for defect in record.defects)


def test_other_bytes_like_input() -> None:
    raw = load("alternative")
    assert parse_message(bytearray(raw)).text == parse_message(raw).text  # type: ignore[arg-type]
    assert parse_message(memoryview(raw)).html == parse_message(raw).html  # type: ignore[arg-type]


def test_defects_are_bounded() -> None:
    raw = message("From: a@example.test", *[f"X-{n}: =?x-nope-{n}?q?=FF?=" for n in range(1000)], "", "body")
    record = parse_message(raw)
    assert len(record.defects) <= 201
    assert record.defects[-1].endswith("more defects not listed")


def _mutate(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        action = rng.randrange(4)
        where = rng.randrange(len(buf) + 1)
        if action == 0 and buf:
            del buf[where : where + rng.randint(1, 64)]
        elif action == 1:
            buf[where:where] = rng.randbytes(rng.randint(1, 16))
        elif action == 2:
            buf[where:where] = rng.choice([b"\r\n", b"\n--", b"=?utf-8?b?", b"?=", b"\r\n\r\n", b'"', b"<", b";"])
        else:
            del buf[where:]
    return bytes(buf)


def _assert_total(raw: bytes) -> None:
    record = parse_message(raw)
    assert isinstance(record, ReadRecord)
    assert record.size == len(raw)
    assert not any(PARSER_FAILED in defect for defect in record.defects)
    json.dumps(dump(record))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    _assert_total(raw)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([n for n in CORPUS if n != "nested-1000"]), st.integers(0, 2**32))
def test_damaged_corpus_messages_never_raise(name: str, seed: int) -> None:
    _assert_total(_mutate(load(name), seed))


# --------------------------------------------------------------------------------------------- fields


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fri, 01 Mar 2024 10:00:00 +0100", "2024-03-01T10:00:00+01:00"),
        ("1 Mar 2024 10:00 -0000", "2024-03-01T10:00:00+00:00"),
        ("Fri, 1 Mar 2024 10:00:00 +0100 (CET)", "2024-03-01T10:00:00+01:00"),
        ("Fri,  1 Mar 99 23:59:60 PDT", "1999-03-01T23:59:59-07:00"),
        ("Friday, 01-Mar-2024 10:00:00 GMT", "2024-03-01T10:00:00+00:00"),
        ("Fri Mar  1 10:00:00 2024", "2024-03-01T10:00:00+00:00"),
        ("Fri, 32 Mar 2024 10:00:00 +0100", None),
        ("Fri, 01 Mar 2024 10:00:00 +9999", None),
        ("", None),
    ],
)
def test_dates(value: str, expected: str | None) -> None:
    defects = Defects()
    assert parse_date(value, defects) == expected
    if expected is None:
        assert defects.items


def test_date_without_zone_is_utc_with_a_defect() -> None:
    defects = Defects()
    assert parse_date("Fri, 01 Mar 2024 10:00:00", defects) == "2024-03-01T10:00:00+00:00"
    assert defects.items == ["date 'Fri, 01 Mar 2024 10:00:00' has no time zone; read as UTC"]


def _addresses(value: str) -> tuple[list[tuple[str, str]], list[str]]:
    defects = Defects()
    found = parse_address_list(value, "to", defects, lambda text: decode_words(text, "to", defects))
    return found, defects.items


def test_addresses() -> None:
    assert _addresses('"Doe, Jane" <jane@x.test>, =?utf-8?q?J=C3=B6rg?= <j@x.test>, plain@x.test') == (
        [("Doe, Jane", "jane@x.test"), ("Jörg", "j@x.test"), ("", "plain@x.test")], [])
    assert _addresses("Team: a@x.test, b@x.test;, c@x.test")[0] == [("", "a@x.test"), ("", "b@x.test"),
                                                                     ("", "c@x.test")]
    assert _addresses("a@x.test (Alice (the) Admin)")[0] == [("Alice (the) Admin", "a@x.test")]
    assert _addresses("<@relay.test:route@x.test>")[0] == [("", "route@x.test")]
    assert _addresses("")[0] == []
    found, defects = _addresses("Broken <x.test")
    assert found == [("Broken", "x.test")]
    assert "to: '<' without '>'" in defects and "to: 'x.test' is not a complete address" in defects


@settings(max_examples=1000, deadline=None)
@given(value=st.lists(st.sampled_from(["a@x.test", "b.c@y.test", "Ann", "Bob Lee", "=?utf-8?q?J=C3=B6rg?=",
                                       "=?utf-8?b?w6k=?=", "<", ">", "<a@x.test>", ",", ", ", " ", "  ", "\t", "\xa0",
                                       "\x1c", "@", '"', '"Doe, Jane"', "\\", "(c)", ":", ";", "[1.2.3.4]", "é",
                                       "=?", "?="]), max_size=12).map("".join))
@example("Reader <reader@example.test>, carol@example.test")
@example("A  B <a@x.test>")
@example("a@x.test[1.2.3.4], b@y.test")
def test_plain_mailboxes_are_read_by_expressions_as_the_tokenizer_reads_them(value: str) -> None:
    """The fast paths (one plain mailbox, or a list of them) give the tokenizer's pairs and defects."""
    from mailconnector.mime._parse_fields import _tokenized_addresses

    fast_defects, slow_defects = Defects(), Defects()
    fast = parse_address_list(value, "to", fast_defects, lambda text: decode_words(text, "to", fast_defects))
    slow = _tokenized_addresses(value, "to", slow_defects, lambda text: decode_words(text, "to", slow_defects))
    assert fast == slow
    assert fast_defects.result() == slow_defects.result()


def test_addresses_survive_hostile_lengths() -> None:
    began = time.perf_counter()
    _addresses(" " * 50_000 + "x")
    _addresses('"' * 20_000)
    _addresses("(" * 20_000)
    _addresses("<" * 20_000)
    assert time.perf_counter() - began < 1


def test_rfc2231_and_encoded_word_parameters() -> None:
    defects = Defects()
    main, params = parse_params(
        "attachment; filename*0*=utf-8''%E2%82%AC; filename*1=\" rate.pdf\"; name=\"=?utf-8?q?x=C3=A9?=\"",
        "disposition", defects)
    assert main == "attachment"
    assert params == {"filename": "€ rate.pdf", "name": "xé"}
    assert defects.items == []


_LINE_CHARSETS = [None, "", "us-ascii", "utf-8", "utf-8-sig", "iso-8859-1", "windows-1252", "koi8-r", "shift_jis",
                  "gb2312", "gb18030", "euc-jp", "big5", "cp949", "hz", "utf-16", "utf-16-le", "utf-32", "utf-7",
                  "iso-2022-jp", "cp037", "x-unknown", "ascii\"junk"]


@settings(max_examples=1000, deadline=None)
@given(data=st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b" ", b"\xc3\xa9", b"\xc3", b"\x00", b"\xff\xfe",
                                      b"\x1b$B", b"\x1b(B", b"+AGE-", b"\x0d\x25", b"\x82", b"\x8e", b"\xa1", b"~{",
                                      b"~}", b"\x81\x30", b"\xef\xbb"]), max_size=40).map(b"".join),
       charset=st.sampled_from(_LINE_CHARSETS))
def test_line_ends_made_lf_on_bytes_give_what_decoding_then_replacing_gives(data: bytes, charset: str | None) -> None:
    """The fast path (CRs dropped from the bytes before decoding) is taken only where it cannot change the
    text or the defects: a lone CR, or a charset whose bytes 0x0D/0x0A are not always CR and LF, goes the
    slow way."""
    from mailconnector.mime._parse_decode import decode_lines, decode_text

    slow_defects, fast_defects = Defects(), Defects()
    slow = decode_text(data, charset, "part", slow_defects).replace("\r\n", "\n")
    assert decode_lines(data, charset, "part", fast_defects) == slow
    assert fast_defects.result() == slow_defects.result()


@settings(max_examples=500, deadline=None)
@given(block=st.lists(st.sampled_from([b"Subject", b"X-A", b"From ", b":", b": ", b" ", b"\t", b"\r", b"\n", b"\r\n",
                                       b"value", b"=?utf-8?q?x?=", b"\xc3\xa9", b"\x00", b"a b"]),
                       max_size=30).map(b"".join),
       body=st.sampled_from([b"", b"\r\nbody\r\n", b"\nbody"]))
def test_the_one_match_per_field_path_reads_headers_as_the_line_by_line_reading_does(block: bytes, body: bytes) -> None:
    from mailconnector.mime import _parse_structure as structure

    buf = block + body
    fast_defects, slow_defects = Defects(), Defects()
    fast = structure.header_block(buf, 0, len(buf), fast_defects, "message headers")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(structure, "well_formed_fields", lambda *args: None)
        slow = structure.header_block(buf, 0, len(buf), slow_defects, "message headers")
    assert fast == slow
    assert fast_defects.result() == slow_defects.result()


def test_well_formed_fields_are_read_one_match_each_and_anything_else_is_left_to_the_careful_reading() -> None:
    from mailconnector.mime._parse_structure import well_formed_fields

    block = b"Subject: a\r\n\tb\r\nX-Y :  c \r\nTo: d"
    assert well_formed_fields(block, 0, len(block)) == [("subject", b"a b"), ("x-y", b"c"), ("to", b"d")]
    for odd in (b" indented: x\r\n", b"From someone\r\nA: b\r\n", b"A: b\r\nno colon\r\n", b"\xc3\xa9: x\r\n"):
        assert well_formed_fields(odd, 0, len(odd)) is None


@settings(max_examples=800, deadline=None)
@given(value=st.lists(st.sampled_from(["text/plain", "Multipart/Mixed", ";", "; ", " ", "\t", "charset", "CharSet",
                                       "=", '"', '\\', "name*", "*0*", "=?utf-8?q?x?=", "a b", "é", "''",
                                       "boundary=x=y", "utf-8"]), max_size=14).map("".join))
@example('Text/Plain; CharSet=UTF-8; Format="flowed"')
@example('attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9?=.pdf"; filename=second; size=3;')
def test_the_simple_parameter_path_reads_what_the_general_one_reads(value: str) -> None:
    import re

    from mailconnector.mime import _parse_decode

    fast_defects, slow_defects = Defects(), Defects()
    fast = parse_params(value, "part", fast_defects)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_parse_decode, "_SIMPLE_PARAMS", re.compile(r"(?!)"))
        slow = parse_params(value, "part", slow_defects)
    assert fast == slow
    assert fast_defects.result() == slow_defects.result()


def test_base64_decoder_handles_concatenated_blobs_and_chunks() -> None:
    decoder = Base64Decoder()
    data = b"SGk=SGk=\r\nSGVsbG8="
    out = decoder.feed(data, 0, 10) + decoder.feed(data, 10, len(data)) + decoder.finish()
    assert out == b"HiHiHello"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), width=st.integers(1, 120), damage=st.none() | st.tuples(st.integers(0, 10**6),
       st.sampled_from(list(b"=*. \t-_\x00\xff\r\nA"))))
def test_the_fast_base64_path_agrees_with_the_standard_library(data: bytes, width: int,
                                                                damage: tuple[int, int] | None) -> None:
    """The well-formed path (pybase64) takes exactly the well-formed parts (whole groups of four, the
    alphabet, padding only at the end) and decodes them as binascii does; anything else goes to the careful
    path, which lists the repairs."""
    import binascii
    import re

    from mailconnector.mime._parse_decode import base64_as_is, decode_all

    text = base64.b64encode(data)
    encoded = bytearray(b"\r\n".join(text[i:i + width] for i in range(0, len(text), width)) + b"\r\n")
    if damage is not None and encoded:
        encoded[damage[0] % len(encoded)] = damage[1]
    buf = bytes(encoded)
    cleaned = buf.replace(b"\r", b"").replace(b"\n", b"")
    well_formed = len(cleaned) % 4 == 0 and re.fullmatch(rb"[A-Za-z0-9+/]*={0,2}", cleaned) is not None
    expected = binascii.a2b_base64(cleaned) if well_formed else None
    as_is = base64_as_is(buf, 0, len(buf))
    if expected is None:
        assert as_is is None
    else:
        assert as_is == (cleaned.decode("ascii"), len(expected))
        defects = Defects()
        assert decode_all(buf, 0, len(buf), "base64", False, "part", defects) == expected
        assert defects.result() == []
