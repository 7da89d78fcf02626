"""The golden corpus through the whole Read Email path: APPEND every ``tests/data/eml`` message to a
folder, read them all back over IMAP, and compare each record with ``tests/data/expected``.

The parsed fields must equal the golden record; the IMAP fields (uid, uidvalidity, folder, flags,
received_at, size) come from the server. Dovecot stores a message as written except for two repairs it
makes on APPEND: a bare CR or LF becomes CRLF, and a NUL byte becomes 0x80. The test checks that these
are the only changes; where they change what the parser sees, the record must be what the parser makes
of the stored bytes.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _mail import append_all

from mailconnector.activities.read import ReadEmail
from mailconnector.connection import Connection
from mailconnector.mime.parse import parse_message

DATA = Path(__file__).resolve().parents[1] / "data"
NAMES = sorted(p.stem for p in (DATA / "eml").glob("*.eml"))
IMAP_FIELDS = {"uid", "uidvalidity", "folder", "flags", "received_at", "size", "raw_path", "raw_base64"}


def as_stored(raw: bytes) -> bytes:
    """What Dovecot keeps of an appended message."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw).replace(b"\0", b"\x80")


def expected(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "expected" / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def corpus(make_conn: Callable[..., Connection],
           fresh_folder: Callable[[str], str]) -> tuple[Connection, str, list[int]]:
    conn = make_conn("carol")
    folder = fresh_folder("carol")
    uids = append_all(conn, folder, [(DATA / "eml" / f"{n}.eml").read_bytes() for n in NAMES])
    return conn, folder, uids


def test_the_corpus_is_there() -> None:
    assert len(NAMES) >= 50
    assert all((DATA / "expected" / f"{n}.json").exists() for n in NAMES)


def test_every_corpus_message_reads_as_its_golden_record(corpus: tuple[Connection, str, list[int]]) -> None:
    conn, folder, uids = corpus
    with ReadEmail(conn, folder=folder, after_read="keep_unread", include_raw=True, batch_size=7) as reader:
        records = [item.record.model_dump(mode="json", by_alias=True) for item in reader.items()]
        validity = reader._uidvalidity()
    assert len(records) == len(NAMES)  # every message yields a record, however malformed

    repaired = []
    for name, uid, got in zip(NAMES, uids, records, strict=True):
        original = (DATA / "eml" / f"{name}.eml").read_bytes()
        stored = base64.b64decode(got["raw_base64"])
        assert stored == as_stored(original), name
        # The IMAP fields are the server's.
        assert (got["uid"], got["uidvalidity"], got["folder"]) == (uid, validity, folder), name
        assert got["size"] == len(stored), name
        assert "\\Seen" not in got["flags"], name
        assert got["received_at"] and re.search(r"[+-]\d\d:\d\d$", got["received_at"]), name
        parsed = {k: v for k, v in got.items() if k not in IMAP_FIELDS}
        golden = {k: v for k, v in expected(name).items() if k not in IMAP_FIELDS}
        if parsed == golden:
            continue
        # Only where the server's repair changed what the parser sees may the record differ, and then it
        # is the parser's record of the stored bytes.
        assert stored != original, f"{name}: {_diff(parsed, golden)}"
        mine = parse_message(stored).model_dump(mode="json", by_alias=True)
        assert parsed == {k: v for k, v in mine.items() if k not in IMAP_FIELDS}, name
        assert {k for k in golden if golden[k] != parsed[k]} <= {"text", "html", "defects", "headers"}, name
        repaired.append(name)
    # The messages with NUL bytes; the one with bare LFs reads the same after the repair.
    assert set(repaired) <= {"binary-garbage", "nul-byte"}, repaired


def test_corpus_attachments_to_a_directory(corpus: tuple[Connection, str, list[int]], tmp_path: Path) -> None:
    conn, folder, _ = corpus
    out = tmp_path / "files"
    with ReadEmail(conn, folder=folder, after_read="keep_unread", attachments="directory", directory=out,
                   max_attachment_bytes=None) as reader:
        records = [item.record for item in reader.items()]
    written: set[Path] = set()
    for name, record in zip(NAMES, records, strict=True):
        golden = expected(name)["attachments"]
        assert len(record.attachments) == len(golden), name
        folders = set()
        for got, want in zip(record.attachments, golden, strict=True):
            assert got.path is not None and got.skipped is None, name
            path = Path(got.path)
            folders.add(path.parent)
            assert out.resolve() in path.resolve().parents, name  # never outside the directory
            assert path.read_bytes() == base64.b64decode(want["content_base64"]), (name, want["filename"])
            assert got.size == want["size"], name
            assert (got.filename == want["filename"]
                    or Path(got.filename).stem.startswith(Path(want["filename"]).stem[:20])), name
            assert path.name == got.filename
            written.add(path)
        assert len(folders) <= 1, name  # one sub-directory per message
    # No two attachments share a file, and nothing else was written.
    assert written == {p for p in out.rglob("*") if p.is_file()}
    assert sum(len(r.attachments) for r in records) == len(written)


def _diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {got.get(k)!r} != {want.get(k)!r}" for k in want if got.get(k) != want.get(k))[:2000]
