"""Hostile send records: header injection in every field, oversized and odd values, wrong types.

Every field of the send record is classified below; a field added to the schema without a place in one of
the two lists fails ``test_every_record_field_is_classified``, so no new field escapes the injection check.
Records go through the whole Send Email activity in dry-run mode (validation, defaults, templates,
composition), where one bad record must fail alone, naming its field, while the others are written.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest

from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import MessageError
from mailconnector.records.send import SendRequest, parse_send_request

INJECTIONS = {
    "crlf": "x\r\nBcc: evil@example.test",
    "lf": "x\nBcc: evil@example.test",
    "cr": "x\rBcc: evil@example.test",
    "nul": "x\x00Bcc: evil@example.test",
    "nel": "x\u0085Bcc: evil@example.test",
    "line-separator": "x\u2028Bcc: evil@example.test",
}

# field -> (how to put a hostile string into a record, the field path the error must name)
HEADER_FIELDS: dict[str, tuple[Any, str]] = {
    "from": (lambda bad: {"from": f"a{bad}@example.test"}, "from"),
    "to": (lambda bad: {"to": ["ok@example.test", f"b{bad}@example.test"]}, "to[1]"),
    "cc": (lambda bad: {"cc": [f"Name {bad} <c@example.test>"]}, "cc[0]"),
    "bcc": (lambda bad: {"bcc": [f"d{bad}@example.test"]}, "bcc[0]"),
    "reply_to": (lambda bad: {"reply_to": [f"e{bad}@example.test"]}, "reply_to[0]"),
    "subject": (lambda bad: {"subject": f"hello {bad}"}, "subject"),
    "headers": (lambda bad: {"headers": {"X-Custom": f"v {bad}"}}, "headers.X-Custom"),
    "headers (name)": (lambda bad: {"headers": {f"X-A{bad}": "v"}}, "headers."),
    "in_reply_to": (lambda bad: {"in_reply_to": f"<a{bad}@example.test>"}, "in_reply_to"),
    "references": (lambda bad: {"references": ["<ok@example.test>", f"<r{bad}@example.test>"]}, "references[1]"),
    "message_id": (lambda bad: {"message_id": f"<m{bad}@example.test>"}, "message_id"),
    "attachments.filename": (
        lambda bad: {"attachments": [{"filename": f"a{bad}.txt", "content_base64": "aGk="}]},
        "attachments[0].filename"),
    "attachments.content_type": (
        lambda bad: {"attachments": [{"filename": "a.txt", "content_type": f"text/plain{bad}",
                                      "content_base64": "aGk="}]}, "attachments[0].content_type"),
    "attachments.content_id": (
        lambda bad: {"html": "<img src=cid:x>", "attachments": [
            {"filename": "a.png", "content_id": f"x{bad}@example.test", "inline": True, "content_base64": "aGk="}]},
        "attachments[0].content_id"),
    "attachments.path": (lambda bad: {"attachments": [{"path": f"a{bad}.txt"}]}, "attachments[0].path"),
    "template.subject": (lambda bad: {"template": {"subject": "Hi {{ name }}"}, "data": {"name": bad}},
                         "template.subject"),
    "template.text_file": (lambda bad: {"template": {"text_file": f"t{bad}.txt"}}, "template.text_file"),
    "template.html_file": (lambda bad: {"template": {"html_file": f"t{bad}.html"}}, "template.html_file"),
}
# Fields that never reach a header, or are checked through the ones above.
NOT_HEADERS = {
    "id": "echoed in the response only",
    "text": "a body: line breaks are content (encoded quoted-printable or base64)",
    "html": "a body",
    "priority": "one of three words (validated as a literal)",
    "data": "template variables: checked where they land (template.subject)",
    "template": "its parts are listed above",
    "attachments": "its parts are listed above",
}


def test_every_record_field_is_classified() -> None:
    names = {info.alias or name for name, info in SendRequest.model_fields.items()}
    classified = {f.split(".")[0].split(" ")[0] for f in HEADER_FIELDS} | set(NOT_HEADERS)
    assert names <= classified, f"classify these new record fields: {sorted(names - classified)}"


def dry_conn() -> Connection:
    return Connection.from_dict({
        "auth": {"type": "basic", "username": "alice@example.test", "password": "not-used-in-dry-run"},
        "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"}, "from_address": "alice@example.test",
        "activities": "send"}, name="dry")


@pytest.mark.parametrize("kind", INJECTIONS)
@pytest.mark.parametrize("field", HEADER_FIELDS)
def test_injection_in_every_field_fails_that_record_only(tmp_path: Path, field: str, kind: str) -> None:
    build, where = HEADER_FIELDS[field]
    bad = {"to": "victim@example.test", "subject": "s", "text": "t", **build(INJECTIONS[kind])}
    good = {"to": "victim@example.test", "subject": "fine", "text": "t"}
    out = tmp_path / "eml"
    responses = sorted(SendEmail(dry_conn(), dry_run=out, base_dir=tmp_path).send([good, bad, good]),
                       key=lambda r: r.index)
    assert [r.status for r in responses] == ["dry_run", "failed", "dry_run"]
    error = responses[1].error
    assert error is not None and error.type == "MessageError" and error.retryable is False
    assert error.field is not None and error.field.startswith(where), (error.field, error.message)
    for path in out.iterdir():  # nothing of the hostile record was written, and no header was injected
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert msg["Bcc"] is None and msg["Subject"] == "fine"


@pytest.mark.parametrize("kind", ["crlf", "lf", "nul"])
def test_injection_through_activity_defaults_is_refused_too(tmp_path: Path, kind: str) -> None:
    activity = SendEmail(dry_conn(), dry_run=tmp_path, base_dir=tmp_path,
                         defaults={"subject": "ok", "headers": {"X-Batch": "1"}})
    [r] = activity.send([{"to": "v@example.test", "text": "t", "headers": {"X-Batch": INJECTIONS[kind]}}])
    assert r.status == "failed" and r.error is not None and r.error.field == "headers.X-Batch"


# --------------------------------------------------------------------------- oversized values


def _lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n")


@pytest.mark.parametrize("record", [
    pytest.param({"subject": "word " * 5000}, id="subject-25000-chars"),
    pytest.param({"subject": "x" * 20000}, id="subject-one-20000-char-word"),
    pytest.param({"subject": "é" * 10000}, id="subject-10000-non-ascii"),
    pytest.param({"headers": {"X-Long": "y" * 5000}}, id="header-value-one-5000-char-word"),
    pytest.param({"headers": {f"X-H{i}": "v" * 50 for i in range(500)}}, id="500-headers"),
    pytest.param({"to": [f"user{i}@example.test" for i in range(1000)]}, id="1000-recipients"),
    pytest.param({"to": [f"{'Ñame ' * 40}<a@example.test>"]}, id="display-name-200-chars"),
    pytest.param({"text": "z" * 100000}, id="body-one-100000-char-line"),
    pytest.param({"attachments": [{"filename": "é" * 250 + ".txt", "content_base64": "aGk="}]},
                 id="filename-250-non-ascii"),
])
def test_oversized_values_fold_within_998_octets_or_fail_clearly(tmp_path: Path, record: dict[str, Any]) -> None:
    full = {"to": "v@example.test", "subject": "s", "text": "t", **record}
    [r] = SendEmail(dry_conn(), dry_run=tmp_path, base_dir=tmp_path).send([full])
    if r.status == "failed":
        assert r.error is not None and r.error.type == "MessageError" and r.error.field, r.error
        return
    assert r.status == "dry_run" and r.eml_path is not None
    raw = Path(r.eml_path).read_bytes()
    assert max(len(line) for line in _lines(raw)) <= 998
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if "subject" in record:
        assert str(msg["Subject"]).strip() == record["subject"].strip()


def test_a_1000_character_filename_is_refused_with_its_field() -> None:
    with pytest.raises(MessageError) as info:
        parse_send_request({"to": "v@example.test", "attachments": [
            {"filename": "a" * 1000 + ".txt", "content_base64": "aGk="}]}, index=0)
    assert info.value.field == "attachments[0].filename"


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(("record", "field"), [
    ({"to": 5}, "to"),
    ({"to": [1, 2]}, "to[0]"),
    ({"to": {"a": "b"}}, "to"),
    ({"to": "v@example.test", "subject": ["a"]}, "subject"),
    ({"to": "v@example.test", "text": {"x": 1}}, "text"),
    ({"to": "v@example.test", "attachments": "not a list"}, "attachments"),
    ({"to": "v@example.test", "attachments": [5]}, "attachments[0]"),
    ({"to": "v@example.test", "attachments": [{"filename": "a", "content_base64": 12}]},
     "attachments[0].content_base64"),
    ({"to": "v@example.test", "headers": ["X-A: 1"]}, "headers"),
    ({"to": "v@example.test", "headers": {"X-A": None}}, "headers.X-A"),
    ({"to": "v@example.test", "priority": 3}, "priority"),
    ({"to": "v@example.test", "priority": "urgent"}, "priority"),
    ({"to": "v@example.test", "template": 5}, "template"),
    ({"to": "v@example.test", "data": [1]}, "data"),
    ({"to": "v@example.test", "message_id": 42}, "message_id"),
    ({"to": "v@example.test", "references": 7}, "references"),
    ({"to": "v@example.test", "unknown_field": 1}, "unknown_field"),
    ({"to": "not an address"}, "to[0]"),
    ({"to": "a@@example.test"}, "to[0]"),
    ({"to": "a@example..test"}, "to[0]"),
    ({"to": "<>"}, "to[0]"),
    ({"to": "a@" + "x" * 300 + ".test"}, "to[0]"),
])
def test_wrong_types_and_malformed_addresses_fail_the_record_naming_the_field(
        tmp_path: Path, record: dict[str, Any], field: str) -> None:
    good = {"to": "v@example.test", "text": "t"}
    responses = sorted(SendEmail(dry_conn(), dry_run=tmp_path, base_dir=tmp_path).send([record, good]),
                       key=lambda r: r.index)
    assert [r.status for r in responses] == ["failed", "dry_run"]
    error = responses[0].error
    assert error is not None and error.type == "MessageError" and error.field == field, error


@pytest.mark.parametrize("record", [None, 5, "a string", ["a", "list"], b"bytes"])
def test_a_record_that_is_not_an_object_fails_alone(tmp_path: Path, record: Any) -> None:
    good = {"to": "v@example.test", "text": "t"}
    responses = sorted(SendEmail(dry_conn(), dry_run=tmp_path, base_dir=tmp_path).send([record, good]),
                       key=lambda r: r.index)
    assert [r.status for r in responses] == ["failed", "dry_run"]
    assert responses[0].error is not None and responses[0].error.type == "MessageError"
