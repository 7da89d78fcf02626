"""The parser's byte scans: the compiled ones (mime/_scans_c.c) give what their Python twins give, on
arbitrary input and on every message of the golden corpus, and the twins keep the parser whole where
the install could not compile them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from mailconnector.activities.read import record_json
from mailconnector.mime import _parse_decode, _parse_structure, _scans, parse
from mailconnector.mime.parse import parse_message
from mailconnector.records.read import ParseOptions

EML = Path(__file__).resolve().parents[1] / "data" / "eml"

needs_compiled = pytest.mark.skipif(not _scans.COMPILED, reason="the C scans were not built")


def test_the_install_built_the_compiled_scans() -> None:
    """./dev setup installs a C compiler where the machine has none, so the suite always tests both; a user
    without one still gets a working parser (the extension is optional), which the twins' tests cover."""
    assert _scans.COMPILED
    from mailconnector.mime import _scans_c

    assert _scans.well_formed_fields is _scans_c.well_formed_fields
    assert _scans.split_multipart is _scans_c.split_multipart
    assert _scans.lf_lines is _scans_c.lf_lines
    assert _scans.without_line_ends is _scans_c.without_line_ends
    assert _scans.utf8_text is _scans_c.utf8_text


def _window(cut: st.DataObject | None, size: int) -> tuple[int, int]:
    """The whole input, or (drawn) a slice of it, as the parser passes offsets: 0 <= start <= end <= size."""
    if cut is None:
        return 0, size
    start = cut.draw(st.integers(0, size))
    return start, cut.draw(st.integers(start, size))


_FIELD_PIECES = [b"Subject", b"X-A", b"From ", b"a", b":", b": ", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\n ", b"\r\n\t",
                 b"value", b"=?utf-8?q?x?=", b"\xc3\xa9", b"\x00", b"\x0b", b"\x0c", b"\x7f", b"~", b";", b"a b", b"9"]


@needs_compiled
@settings(max_examples=2000, deadline=None)
@given(block=st.lists(st.sampled_from(_FIELD_PIECES), max_size=40).map(b"".join), cut=st.data())
@example(block=b"Subject: a\r\n\tb\r\nX-Y :  c \r\nTo: d", cut=None)
@example(block=b"A:\t\r\n\t\r\n", cut=None)
@example(block=b"A: x\r\n", cut=None)
def test_compiled_fields_are_the_python_fields(block: bytes, cut: st.DataObject | None) -> None:
    start, end = _window(cut, len(block))
    assert _scans.well_formed_fields(block, start, end) == _scans.py_well_formed_fields(block, start, end)


_BODY_PIECES = [b"--b", b"--", b"b", b"--b--", b"\r\n", b"\n", b"\r", b" ", b"\t", b"text", b"-", b"--bb", b"x--b",
                b"QUJD", b"=", b"\x00"]


@needs_compiled
@settings(max_examples=2000, deadline=None)
@given(body=st.lists(st.sampled_from(_BODY_PIECES), max_size=40).map(b"".join),
       boundary=st.sampled_from([b"b", b"bb", b"-", b"b b", b"", b"=_Part_1.2"]), cut=st.data())
@example(body=b"pre\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue", boundary=b"b", cut=None)
@example(body=b"--b--", boundary=b"b", cut=None)
@example(body=b"--b \t\r\nx\r\n--b", boundary=b"b", cut=None)
def test_compiled_parts_are_the_python_parts(body: bytes, boundary: bytes, cut: st.DataObject | None) -> None:
    start, end = _window(cut, len(body))
    assert (_scans.split_multipart(body, start, end, boundary)
            == _scans.py_split_multipart(body, start, end, boundary))


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(data=st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"\xc3\xa9", b"\r\r\n", b"\n\r"]),
                     max_size=40).map(b"".join))
@example(data=b"")
@example(data=b"end\r")
def test_compiled_line_ends_are_the_python_line_ends(data: bytes) -> None:
    assert _scans.lf_lines(data) == _scans.py_lf_lines(data)


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(data=st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"QUJD", b"=", b"\n\r", b" "]), max_size=40).map(b"".join),
       cut=st.data())
@example(data=b"", cut=None)
def test_compiled_base64_lines_are_the_python_ones(data: bytes, cut: st.DataObject | None) -> None:
    start, end = _window(cut, len(data))
    assert _scans.without_line_ends(data, start, end) == _scans.py_without_line_ends(data, start, end)


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(text=st.text(max_size=40).map(lambda t: t * 20) | st.text(max_size=300), cut=st.integers(0, 3))
@example(text="r\u00e9sum\u00e9 " * 100, cut=0)
@example(text="\u20ac\U0001f600 " * 100, cut=0)
def test_compiled_utf8_text_is_the_python_decoding(text: str, cut: int) -> None:
    """The same text (and the same error for bytes that are not UTF-8), and the UTF-8 form the compiled
    decoding keeps with the text is exactly its encoding: what str.encode and the record's JSON read."""
    from pydantic_core import to_json

    data = text.encode("utf-8")
    if cut and data:  # cut inside a character, or a stray byte: not UTF-8
        data = data[: len(data) - cut] if cut < 3 else data + b"\xff"
    try:
        expected = _scans.py_utf8_text(data)
    except UnicodeDecodeError as exc:
        with pytest.raises(UnicodeDecodeError) as raised:
            _scans.utf8_text(data)
        assert str(raised.value) == str(exc)
        return
    decoded = _scans.utf8_text(data)
    assert decoded == expected
    assert to_json(decoded) == to_json(expected)
    assert decoded.encode("utf-8") == data
    assert json.loads(to_json(decoded)) == expected


@needs_compiled
def test_compiled_scans_take_only_bytes_and_sane_offsets() -> None:
    """The parser's buffers are always bytes; anything else is a bug to be told, not bytes to be guessed."""
    from mailconnector.mime import _scans_c

    for bad in (bytearray(b"A: b"), memoryview(b"A: b"), "A: b"):
        with pytest.raises(TypeError):
            _scans_c.well_formed_fields(bad, 0, 4)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            _scans_c.split_multipart(bad, 0, 4, b"b")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            _scans_c.lf_lines(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            _scans_c.without_line_ends(bad, 0, 4)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            _scans_c.utf8_text(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _scans_c.split_multipart(b"--b", 0, 3, "b")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _scans_c.well_formed_fields(b"A: b", 0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="negative"):
        _scans_c.well_formed_fields(b"A: b", -1, 4)
    with pytest.raises(OverflowError):
        _scans_c.split_multipart(b"--b", 0, 2**70, b"b")
    # An end past the buffer reads no byte beyond it (the parser never asks; memory safety does).
    assert _scans_c.well_formed_fields(b"A: b", 0, 1000) == [("a", b"b")]
    assert _scans_c.split_multipart(b"--b\r\nx", 0, 1000, b"b") == ([(5, 6)], False)
    assert _scans_c.without_line_ends(b"QU\r\nJD", 0, 1000) == b"QUJD"
    assert _scans_c.without_line_ends(b"QU\r\nJD", 5, 2) == b""


class _Bytes(bytes):
    """A bytes subclass, as a caller's own message type might be."""


@needs_compiled
def test_compiled_scans_read_a_bytes_subclass_as_bytes() -> None:
    raw = _Bytes(b"A: b\r\n\r\n")
    assert _scans.well_formed_fields(raw, 0, 6) == [("a", b"b")]
    assert parse_message(_Bytes(b"Subject: x\r\n\r\nbody\r\n")).subject == "x"


@pytest.fixture
def python_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser with the Python twins, as an install without a C compiler runs it."""
    monkeypatch.setattr(_parse_structure, "well_formed_fields", _scans.py_well_formed_fields)
    monkeypatch.setattr(parse, "split_multipart", _scans.py_split_multipart)
    monkeypatch.setattr(_parse_decode, "lf_lines", _scans.py_lf_lines)
    monkeypatch.setattr(_parse_decode, "without_line_ends", _scans.py_without_line_ends)
    monkeypatch.setattr(_parse_decode, "utf8_text", _scans.py_utf8_text)


def _records(options: ParseOptions | None = None) -> dict[str, object]:
    return {path.stem: parse_message(path.read_bytes(), options).model_dump(mode="json", by_alias=True)
            for path in sorted(EML.glob("*.eml"))}


def _lines() -> dict[str, bytes]:
    """Each corpus message's record as the JSON line `mailconnector read` writes."""
    return {path.stem: record_json(parse_message(path.read_bytes())) for path in sorted(EML.glob("*.eml"))}


@needs_compiled
def test_the_corpus_reads_the_same_with_the_python_twins(request: pytest.FixtureRequest) -> None:
    compiled, compiled_lines = _records(), _lines()
    request.getfixturevalue("python_scans")
    twins = _records()
    assert len(twins) >= 45
    assert twins == compiled
    assert _lines() == compiled_lines


def test_the_python_twins_read_the_corpus_as_expected(python_scans: None) -> None:
    """Without the compiled scans the golden corpus still reads as its expected records."""
    expected_dir = EML.parent / "expected"
    for name, record in _records().items():
        expected = json.loads((expected_dir / f"{name}.json").read_text(encoding="utf-8"))
        assert record == expected, name
