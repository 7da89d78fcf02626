"""Send request / defaults / response models and the record-level error messages (records/send.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mailconnector.errors import MessageError, RecipientsRefusedError, TransportError
from mailconnector.records.send import (
    AttachmentSpec,
    ErrorInfo,
    SendDefaults,
    SendRequest,
    SendResponse,
    TemplateSpec,
    apply_defaults,
    guess_content_type,
    parse_send_request,
    send_request_schema,
    send_response_schema,
)


def parse(data: dict[str, Any], index: int = 3) -> SendRequest:
    return parse_send_request(data, index=index)


def error_of(data: dict[str, Any], index: int = 3) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse_send_request(data, index=index)
    return info.value


# --------------------------------------------------------------------------- accepted shapes


def test_full_record_from_json() -> None:
    req = parse({
        "id": "r-1",
        "from": "Shop <shop@example.test>",
        "to": ["Jane Doe <jane@example.test>", "bob@example.test"],
        "cc": "carol@example.test",
        "bcc": [],
        "reply_to": "help@example.test",
        "subject": "Hello",
        "text": "Hi",
        "html": "<p>Hi</p>",
        "attachments": [{"filename": "a.pdf", "content_base64": "JVBERg=="}],
        "headers": {"X-Campaign": "spring"},
        "in_reply_to": "orig@example.test",
        "references": ["<a@example.test>", "b@example.test"],
        "priority": "high",
        "message_id": "m1@example.test",
        "template": {"subject": "Hi {{ name }}"},
        "data": {"name": "Jane"},
    })
    assert req.id == "r-1"
    assert req.from_ == "Shop <shop@example.test>"
    assert req.to == ["Jane Doe <jane@example.test>", "bob@example.test"]
    assert req.cc == ["carol@example.test"]
    assert req.reply_to == ["help@example.test"]
    assert req.in_reply_to == "<orig@example.test>"
    assert req.references == ["<a@example.test>", "<b@example.test>"]
    assert req.message_id == "<m1@example.test>"
    assert req.attachments[0].content_type == "application/pdf"
    assert req.template is not None and req.template.subject == "Hi {{ name }}"


def test_csv_style_strings() -> None:
    req = parse({
        "id": 42,
        "from": "",
        "to": '"Doe, Jane" <jane@example.test>, bob@example.test; carol@example.test',
        "cc": "",
        "subject": "",
        "priority": "LOW",
        "references": "<a@x> <b@x>",
        "message_id": "",
        "in_reply_to": "",
        "headers": '{"X-Tag": "7"}',
        "data": '{"n": 1}',
        "attachments": '[{"path": "report.csv"}]',
        "template": "",
    })
    assert req.id == "42"
    assert req.from_ is None
    assert req.to == ['"Doe, Jane" <jane@example.test>', "bob@example.test", "carol@example.test"]
    assert req.cc == []
    assert req.subject is None
    assert req.priority == "low"
    assert req.references == ["<a@x>", "<b@x>"]
    assert req.message_id is None and req.in_reply_to is None
    assert req.headers == {"X-Tag": "7"}
    assert req.data == {"n": 1}
    assert req.attachments[0].path == "report.csv"
    assert req.attachments[0].content_type == "text/csv"
    assert req.template is None


def test_list_items_are_single_addresses_so_unquoted_commas_are_names() -> None:
    req = parse({"to": ["Doe, Jane <jane@example.test>"]})
    assert req.to == ["Doe, Jane <jane@example.test>"]


def test_from_by_field_name_and_dump_by_alias() -> None:
    req = SendRequest(from_="a@example.test", to=["b@example.test"])
    dumped = req.model_dump()
    assert dumped["from"] == "a@example.test"
    assert "from_" not in dumped


def test_header_values_from_numbers() -> None:
    assert parse({"to": "a@example.test", "headers": {"X-Count": 3}}).headers == {"X-Count": "3"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.pdf", "application/pdf"),
        ("a.PNG", "image/png"),
        ("a.tar.gz", "application/gzip"),
        ("a.unknown-ext", "application/octet-stream"),
        (None, "application/octet-stream"),
    ],
)
def test_guess_content_type(name: str | None, expected: str) -> None:
    assert guess_content_type(name) == expected


def test_attachment_content_type_kept_when_given_and_guessed_from_path_otherwise() -> None:
    given = AttachmentSpec(filename="x.bin", content_type="image/png", content_base64="AA==")
    assert given.content_type == "image/png"
    from_path = AttachmentSpec(path="dir/photo.jpg")
    assert from_path.content_type == "image/jpeg"
    assert from_path.display_name == "photo.jpg"


@pytest.mark.parametrize("cid", ["logo@example.test", "<logo@example.test>", " <logo@example.test> "])
def test_content_id_with_or_without_brackets(cid: str) -> None:
    spec = AttachmentSpec(content_base64="AA==", inline=True, content_id=cid)
    assert spec.content_id == "logo@example.test"


def test_content_type_with_parameters() -> None:
    spec = AttachmentSpec(content_base64="AA==", content_type='text/plain; charset="utf-8"')
    assert spec.content_type == 'text/plain; charset="utf-8"'


# --------------------------------------------------------------------------- errors


def test_error_names_record_index_field_and_value() -> None:
    err = error_of({"to": "a@example.test, bob@@example"})
    assert str(err).startswith("record 3: to[1]: 'bob@@example' is not a valid address: ")
    assert err.field == "to[1]"


def test_error_names_record_by_id() -> None:
    err = error_of({"id": "abc", "to": "bob@@example"})
    assert str(err).startswith("record 'abc': to[0]: ")


def test_unknown_field_is_named_with_a_suggestion() -> None:
    err = error_of({"to": "a@example.test", "subjct": "x"})
    assert str(err) == "record 3: subjct: unknown field (did you mean 'subject'?)"
    assert err.field == "subjct"


def test_unknown_nested_field() -> None:
    err = error_of({"to": "a@example.test", "attachments": [{"path": "a", "fileneme": "b"}]})
    assert err.field == "attachments[0].fileneme"
    assert "did you mean 'filename'" in str(err)


def test_all_errors_are_listed_first_is_the_field() -> None:
    err = error_of({"to": "bad", "priority": "urgent", "subject": "a\nb"})
    text = str(err)
    assert "to[0]:" in text and "priority:" in text and "subject:" in text
    assert "(got 'urgent')" in text
    assert err.field == "to[0]"


def test_values_of_secret_looking_headers_are_not_quoted() -> None:
    err = error_of({"to": "a@example.test", "headers": {"Authorization": "Bearer s3cr3t-value\r\nX: y"}})
    assert err.field == "headers.Authorization"
    assert "s3cr3t" not in str(err)
    assert "U+000D" in str(err)


def test_long_values_are_truncated_in_messages() -> None:
    err = error_of({"to": "x" * 5000})
    assert len(str(err)) < 400


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({"to": ["a@example.test", "x\r\nBcc: e@example.test"]}, "to[1]", "U+000D"),
        ({"to": "a@example.test", "cc": "c@example.test\nBcc: e@example.test"}, "cc", "U+000A"),
        ({"to": "a@example.test", "bcc": ["b@@x"]}, "bcc[0]", "not a valid address"),
        ({"to": "a@example.test", "reply_to": ["r\r@example.test"]}, "reply_to[0]", "U+000D"),
        ({"to": "a@example.test", "from": "f@example.test\r\nX: y"}, "from", "U+000D"),
        ({"to": "a@example.test", "subject": "x\r\nBcc: evil@example.test"}, "subject", "U+000D"),
        ({"to": "a@example.test", "subject": "nul\x00"}, "subject", "U+0000"),
        ({"to": "a@example.test", "headers": {"X-A": "x\ny"}}, "headers.X-A", "U+000A"),
        ({"to": "a@example.test", "headers": {"X-A\r\nBcc": "y"}}, "headers.X-A\r\nBcc", "not valid"),
        ({"to": "a@example.test", "headers": {"X A": "y"}}, "headers.X A", "not valid"),
        ({"to": "a@example.test", "headers": {"Bcc": "e@example.test"}}, "headers.Bcc", "set by the composer"),
        ({"to": "a@example.test", "headers": {"content-type": "text/html"}}, "headers.content-type",
         "set by the composer"),
        ({"to": "a@example.test", "priority": "high", "headers": {"Importance": "low"}}, "headers.Importance",
         "conflicts"),
        ({"to": "a@example.test", "message_id": "a@b\r\nX: y"}, "message_id", "U+000D"),
        ({"to": "a@example.test", "message_id": "no-at-sign"}, "message_id", "left@right"),
        ({"to": "a@example.test", "in_reply_to": "a@b\n"}, "in_reply_to", "U+000A"),
        ({"to": "a@example.test", "references": ["ok@x", "a@b\r\n"]}, "references[1]", "U+000D"),
        ({"to": "a@example.test", "references": "a@x\r\nb@x"}, "references", "U+000D"),
        ({"to": "a@example.test", "attachments": [{"filename": "a" * 1000, "content_base64": "AA=="}]},
         "attachments[0].filename", "1000 characters"),
        ({"to": "a@example.test", "attachments": [{"filename": "a\x00b.txt", "content_base64": "AA=="}]},
         "attachments[0].filename", "U+0000"),
        ({"to": "a@example.test", "attachments": [{"filename": "a\r\n.txt", "content_base64": "AA=="}]},
         "attachments[0].filename", "U+000D"),
        ({"to": "a@example.test", "attachments": [{"filename": "../etc/passwd", "content_base64": "AA=="}]},
         "attachments[0].filename", "bare file name"),
        ({"to": "a@example.test", "attachments": [{"path": "a\x00b"}]}, "attachments[0].path", "U+0000"),
        ({"to": "a@example.test", "attachments": [{"content_base64": "AA==", "inline": True,
                                                   "content_id": "a\r\nb"}]},
         "attachments[0].content_id", "U+000D"),
        ({"to": "a@example.test", "attachments": [{"content_base64": "AA==", "content_type": "nonsense"}]},
         "attachments[0].content_type", "MIME type"),
        ({"to": "a@example.test", "attachments": [{"content_base64": "AA==", "content_type": "multipart/mixed"}]},
         "attachments[0].content_type", "multipart"),
        ({"to": "a@example.test", "attachments": [{"filename": "a"}]}, "attachments[0]", "neither"),
        ({"to": "a@example.test", "attachments": [{"path": "a", "content_base64": "AA=="}]}, "attachments[0]",
         "both"),
        ({"to": "a@example.test", "attachments": [{"content_base64": "AA==", "inline": True}]},
         "attachments[0].content_id", "required when inline"),
        ({"to": "a@example.test", "attachments": [
            {"content_base64": "AA==", "inline": True, "content_id": "x"},
            {"content_base64": "AA==", "inline": True, "content_id": "<x>"}]},
         "attachments[1].content_id", "used by two"),
        ({"to": "a@example.test", "template": {"html": "<p>\n{{ name }\n"}}, "template.html", "line 2"),
        ({"to": "a@example.test", "template": {"text": "x", "text_file": "t.txt"}}, "template.text_file",
         "only one"),
        ({"to": "a@example.test", "template": '{"subject": '}, "template", "not valid JSON"),
        ({"to": 5}, "to", "list of addresses"),
        ({"to": "a@example.test", "priority": "urgent"}, "priority", "'high', 'normal' or 'low'"),
    ],
)
def test_bad_fields_are_named(record: dict[str, Any], field: str, fragment: str) -> None:
    err = error_of(record)
    assert err.field == field
    assert f"record 3: {field}: " in str(err)
    assert fragment in str(err)


def test_nothing_but_a_mapping() -> None:
    with pytest.raises(MessageError, match="record 0"):
        parse_send_request(["not", "a", "dict"], index=0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- defaults


def test_no_defaults_returns_the_record() -> None:
    req = parse({"to": "a@example.test"})
    assert apply_defaults(req, None) is req


def test_record_values_win_and_empty_ones_take_the_default() -> None:
    defaults = SendDefaults.model_validate({
        "from": "shop@example.test",
        "to": ["ops@example.test"],
        "cc": ["audit@example.test"],
        "subject": "Default subject",
        "text": "default body",
        "priority": "low",
    })
    req = parse({"to": "jane@example.test", "cc": "", "subject": "", "text": "mine"})
    merged = apply_defaults(req, defaults)
    assert merged.from_ == "shop@example.test"
    assert merged.to == ["jane@example.test"]  # replaced, not appended
    assert merged.cc == ["audit@example.test"]
    assert merged.subject == "Default subject"
    assert merged.text == "mine"
    assert merged.priority == "low"
    assert req.from_ is None  # the input record is not modified


def test_default_lists_are_copied() -> None:
    defaults = SendDefaults.model_validate({"to": ["ops@example.test"]})
    merged = apply_defaults(parse({"subject": "x"}), defaults)
    merged.to.append("x@example.test")
    assert defaults.to == ["ops@example.test"]


def test_headers_merge_case_insensitively_record_wins() -> None:
    defaults = SendDefaults.model_validate({"headers": {"X-Campaign": "default", "X-Source": "shop"}})
    merged = apply_defaults(parse({"to": "a@example.test", "headers": {"x-campaign": "mine"}}), defaults)
    assert merged.headers == {"X-Source": "shop", "x-campaign": "mine"}


def test_data_merges_record_wins() -> None:
    defaults = SendDefaults.model_validate({"data": {"company": "ACME", "name": "customer"}})
    merged = apply_defaults(parse({"to": "a@example.test", "data": {"name": "Jane"}}), defaults)
    assert merged.data == {"company": "ACME", "name": "Jane"}


def test_template_precedence_per_field() -> None:
    defaults = SendDefaults.model_validate({
        "template": {"subject": "Order {{ n }}", "text": "default text {{ n }}", "html": "<p>{{ n }}</p>"},
    })
    # The record's plain subject beats the default's subject template; its html template beats the default's.
    req = parse({"to": "a@example.test", "subject": "Mine", "template": {"html": "<b>{{ n }}</b>"}})
    merged = apply_defaults(req, defaults)
    assert merged.template is not None
    assert merged.template.subject is None
    assert merged.template.text == "default text {{ n }}"
    assert merged.template.html == "<b>{{ n }}</b>"
    assert merged.subject == "Mine"


def test_template_file_in_record_beats_default_inline_template() -> None:
    defaults = SendDefaults.model_validate({"template": {"html": "<p>default</p>"}})
    merged = apply_defaults(parse({"to": "a@example.test", "template": {"html_file": "mine.html"}}), defaults)
    assert merged.template is not None
    assert (merged.template.html, merged.template.html_file) == (None, "mine.html")


def test_defaults_have_no_message_id_or_id() -> None:
    with pytest.raises(ValidationError):
        SendDefaults.model_validate({"message_id": "a@b"})
    with pytest.raises(ValidationError):
        SendDefaults.model_validate({"id": "x"})


def test_template_spec_is_empty() -> None:
    assert TemplateSpec().is_empty()
    assert not TemplateSpec(subject="x").is_empty()


# --------------------------------------------------------------------------- responses and schemas


def test_response_dump() -> None:
    resp = SendResponse(index=0, message_id="<a@b>", status="partial", accepted=["a@example.test"],
                        refused=[{"address": "b@example.test", "code": 550, "text": "no such user"}],  # type: ignore[list-item]
                        attempts=1, elapsed_ms=12.5)
    data = resp.model_dump(mode="json")
    assert data["refused"] == [{"address": "b@example.test", "code": 550, "text": "no such user"}]
    assert data["error"] is None and data["eml_path"] is None


def test_error_info_from_exceptions() -> None:
    info = ErrorInfo.from_exception(MessageError("bad", field="to[0]", hint="fix it"))
    assert (info.type, info.message, info.retryable, info.field, info.hint) == (
        "MessageError", "to[0]: bad", False, "to[0]", "fix it")
    refused = ErrorInfo.from_exception(RecipientsRefusedError("all refused", refused={"a@x": (450, "later")}))
    assert (refused.code, refused.retryable) == (450, True)
    transport = ErrorInfo.from_exception(TransportError("reset"))
    assert transport.retryable is True and transport.code is None
    plain = ErrorInfo.from_exception(KeyError("k"))
    assert plain.type == "KeyError" and plain.retryable is False


def test_request_schema_uses_aliases_and_accepts_strings_for_lists() -> None:
    schema = send_request_schema()
    props = schema["properties"]
    assert "from" in props and "from_" not in props
    assert schema.get("additionalProperties") is False
    to_types = {option.get("type") for option in props["to"]["anyOf"]}
    assert {"array", "string"} <= to_types
    assert "AttachmentSpec" in schema["$defs"]


def test_response_schema_lists_statuses() -> None:
    schema = send_response_schema()
    assert set(schema["properties"]["status"]["enum"]) >= {"sent", "partial", "failed", "skipped_duplicate"}
    assert "index" in schema["required"]
