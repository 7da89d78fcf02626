"""Pure helpers of Read Email: UID sets, the FETCH answer reader, raw search strings."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from mailconnector._imap_fetch import internal_date, parse_fetch, uid_sets
from mailconnector.activities._search import Criteria, _tokenize_search
from mailconnector.errors import ConfigError


def test_uid_sets_are_compact_and_bounded() -> None:
    assert uid_sets([5, 1, 2, 3, 9, 3, 10, 12]) == ["1:3,5,9:10,12"]
    assert uid_sets([]) == []
    scattered = list(range(1, 20_000, 2))
    sets = uid_sets(scattered, max_length=1000)
    assert all(len(s) <= 1000 for s in sets) and len(sets) > 1
    back = [int(u) for s in sets for u in s.split(",")]
    assert back == scattered


def test_parse_fetch_reads_imaplib_answers() -> None:
    data = [
        (b'1 (UID 7 FLAGS (\\Seen $Label) INTERNALDATE " 1-Mar-2024 10:00:00 +0100" RFC822.SIZE 5 BODY[] {5}',
         b"hello"),
        b")",
        b"3 (FLAGS (\\Deleted))",  # unsolicited: another session changed a flag
        (b"2 (UID 9 BODY[] {3}", b"abc"),
        b' FLAGS () INTERNALDATE "29-Feb-2024 23:59:59 -0530" RFC822.SIZE 3)',  # items after the literal
    ]
    messages = parse_fetch(data)
    assert messages is not None
    first, second = messages
    assert (first.uid, first.raw, first.flags, first.size) == (7, b"hello", ("\\Seen", "$Label"), 5)
    assert first.internal_date == dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert (second.uid, second.raw, second.flags, second.size) == (9, b"abc", (), 3)
    assert second.internal_date is not None and second.internal_date.utcoffset() == -dt.timedelta(hours=5, minutes=30)


def test_parse_fetch_gives_up_on_shapes_it_does_not_know() -> None:
    assert parse_fetch([b'1 (UID 7 RFC822.SIZE 0 BODY[] "")']) is None  # a body as a quoted string
    assert parse_fetch([(b"1 (RFC822.SIZE 3 BODY[] {3}", b"abc"), b")"]) is None  # no UID
    assert internal_date(b"31-Foo-2024 10:00:00 +0000") is None
    assert internal_date(b"31-Feb-2024 10:00:00 +0000") is None


def test_raw_search_strings_split_into_criteria() -> None:
    assert _tokenize_search('OR (SUBJECT "Köln") (FROM "a b")') == [
        b"OR", b"(SUBJECT", "Köln".encode(), b")", b"(FROM", b"a b", b")"]
    assert _tokenize_search('((FROM x) NOT SEEN)') == [b"((FROM", b"x)", b"NOT", b"SEEN)"]
    assert _tokenize_search(r'SUBJECT "say \"hi\""') == [b"SUBJECT", b'say "hi"']
    for bad in ("(FROM x", "FROM x)", "()", 'SUBJECT "open'):
        with pytest.raises(ConfigError):
            _tokenize_search(bad)


def test_criteria_to_imap() -> None:
    search, charset = Criteria.model_validate({"from": "ann@example.test", "since": "2024-03-01",
                                               "header": {"X-Ticket": "T-1"}}).to_imap(unread=True)
    assert search == ["UNSEEN", "FROM", "ann@example.test", "SINCE", "1-Mar-2024", "HEADER", "X-Ticket", "T-1"]
    assert charset is None
    assert Criteria(raw="SUBJECT hello").to_imap(unread=True) == ("UNSEEN SUBJECT hello", None)
    assert Criteria(subject="x y", raw="LARGER 10").to_imap(unread=False) == ('SUBJECT "x y" LARGER 10', None)
    search, _ = Criteria(before=dt.date(2024, 12, 9), raw="SMALLER 5").to_imap(unread=False)
    assert search == 'BEFORE "9-Dec-2024" SMALLER 5'  # a date may be quoted (RFC 3501)
    search, charset = Criteria(subject="Grüße", raw="LARGER 10").to_imap(unread=True)
    assert (search, charset) == (["UNSEEN", "SUBJECT", "Grüße", b"LARGER", b"10"], "UTF-8")
    assert Criteria().to_imap(unread=False) == (["ALL"], None)


def test_record_json_is_model_dump_json_in_utf8() -> None:
    from mailconnector.activities.read import record_json
    from mailconnector.records.read import Address, ReadRecord

    record = ReadRecord(from_=Address(name="Ännchen", address="a@example.test"), subject="Grüße", text="x\n")
    line = record_json(record)
    assert line == record.model_dump_json().encode("utf-8")
    assert b'"from":{"name":"\xc3\x84nnchen"' in line and b"\n" not in line


@pytest.mark.parametrize("value", ["move:Archive\n", "mark_read\n", "move:\n", "delete ", "move:"])
def test_after_read_with_a_trailing_newline_or_no_folder_is_refused(value: str) -> None:
    from mailconnector.activities.read import ReadSettings

    with pytest.raises(ValidationError):
        ReadSettings(after_read=value)
