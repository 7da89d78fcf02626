"""Attachment names from hostile senders must become harmless, readable file names."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mailconnector.mime._safe_names import MAX_NAME_BYTES, MAX_NAME_CHARS, extension_for, safe_filename, unique_path

RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\System32\\evil.exe", "evil.exe"),
        ("C:evil.exe", "C_evil.exe"),
        ("\\\\server\\share\\x.doc", "x.doc"),
        ("dir/", "attachment.bin"),
        ("..", "attachment.bin"),
        ("...", "attachment.bin"),
        (".bashrc", "bashrc"),
        ("  spaced   out  .txt", "spaced out.txt"),
        ("trailing dots. . .", "trailing dots"),
        ("name.", "name"),
        ("a\x00b\x01c\x7f.txt", "abc.txt"),
        ("tab\there\nnewline.txt", "tab here newline.txt"),
        ('what?<is>:this|"*.txt', "what__is__this___.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("COM1.log", "_COM1.log"),
        ("lpt9", "_lpt9"),
        ("con .txt", "_con.txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10.txt", "COM10.txt"),
    ],
)
def test_hostile_names_become_safe(given_name: str, expected: str) -> None:
    assert safe_filename(given_name, "application/octet-stream") == expected


def test_empty_name_gets_extension_from_content_type() -> None:
    assert safe_filename("", "application/pdf") == "attachment.pdf"
    assert safe_filename(None, "text/calendar") == "attachment.ics"
    assert safe_filename("", "message/rfc822") == "attachment.eml"
    assert safe_filename("", "image/jpeg") == "attachment.jpg"
    assert safe_filename("", None) == "attachment.bin"
    assert safe_filename("", "application/x-never-heard-of-it") == "attachment.bin"


def test_extension_table_does_not_depend_on_host_files() -> None:
    assert extension_for("application/ms-tnef") == ".dat"
    assert extension_for("multipart/mixed") == ".eml"
    assert extension_for("TEXT/PLAIN") == ".txt"


def test_long_name_is_cut_keeping_the_extension() -> None:
    name = safe_filename("x" * 1000 + ".pdf", None)
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith("x.pdf")


def test_long_multibyte_name_fits_in_bytes() -> None:
    name = safe_filename("日本語" * 200 + ".xlsx", None)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.startswith("日本語日本語") and name.endswith(".xlsx")


def test_names_are_nfc() -> None:
    decomposed = "Cafe\u0301.txt"
    assert safe_filename(decomposed, None) == "Café.txt"
    assert safe_filename(decomposed, None) == unicodedata.normalize("NFC", decomposed)


def test_unique_path_numbers_collisions(tmp_path: Path) -> None:
    first = unique_path(tmp_path, "report.pdf")
    assert first == tmp_path / "report.pdf"
    first.write_bytes(b"1")
    second = unique_path(tmp_path, "report.pdf")
    assert second.name == "report (1).pdf"
    second.write_bytes(b"2")
    assert unique_path(tmp_path, "report.pdf").name == "report (2).pdf"


def test_unique_path_keeps_compound_extensions(tmp_path: Path) -> None:
    (tmp_path / "logs.tar.gz").write_bytes(b"")
    assert unique_path(tmp_path, "logs.tar.gz").name == "logs (1).tar.gz"
    (tmp_path / "noext").write_bytes(b"")
    assert unique_path(tmp_path, "noext").name == "noext (1)"


def test_unique_path_stays_within_the_length_limit(tmp_path: Path) -> None:
    name = safe_filename("y" * 400 + ".txt", None)
    (tmp_path / name).write_bytes(b"")
    other = unique_path(tmp_path, name)
    assert other.name.endswith(" (1).txt")
    assert len(other.name) <= MAX_NAME_CHARS


def test_unique_path_treats_a_dangling_symlink_as_taken(tmp_path: Path) -> None:
    (tmp_path / "a.txt").symlink_to(tmp_path / "missing-target")
    assert unique_path(tmp_path, "a.txt").name == "a (1).txt"


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec=None), max_size=400))
def test_any_text_gives_a_safe_name(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    name = safe_filename(text, "application/pdf")
    assert name
    assert "/" not in name and "\\" not in name
    assert not any(ord(char) < 32 or 0x7F <= ord(char) <= 0x9F or 0xD800 <= ord(char) <= 0xDFFF for char in name)
    assert not name.startswith(".")
    assert not name.endswith((".", " "))
    assert len(name) <= MAX_NAME_CHARS
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.split(".")[0].rstrip(" ").upper() not in RESERVED
    assert unicodedata.normalize("NFC", name) == name
    # The name can really be created, and lands where it was meant to.
    folder = tmp_path_factory.mktemp("names")
    target = unique_path(folder, name)
    target.write_bytes(b"x")
    assert target.parent == folder
    assert os.listdir(folder) == [target.name]


def test_lone_surrogates_are_dropped() -> None:
    assert safe_filename("a\udcffb.txt", None) == "ab.txt"
