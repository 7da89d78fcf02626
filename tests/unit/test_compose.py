"""The composer: every message is parsed back with the standard library and its tree and headers checked."""

from __future__ import annotations

import base64
import email
import re
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailconnector.errors import MessageError
from mailconnector.mime import _templates
from mailconnector.mime.compose import ComposedMessage, compose
from mailconnector.records.send import AttachmentSpec, SendRequest, TemplateSpec, parse_send_request

DATA = Path(__file__).resolve().parent.parent / "data" / "compose"
PNG = (DATA / "pixel.png").read_bytes()
PDF = (DATA / "blank.pdf").read_bytes()
B64_PNG = base64.b64encode(PNG).decode()
B64_PDF = base64.b64encode(PDF).decode()


def req(**fields: Any) -> SendRequest:
    fields.setdefault("from", "Shop <shop@example.test>")
    fields.setdefault("to", ["jane@example.test"])
    return SendRequest.model_validate(fields)


def raw(**fields: Any) -> SendRequest:
    """A request that skipped validation, as a caller building one by hand could make."""
    base: dict[str, Any] = {"from_": "shop@example.test", "to": ["jane@example.test"]}
    base.update(fields)
    return SendRequest.model_construct(**base)


def parse(composed: ComposedMessage) -> EmailMessage:
    data = composed.as_bytes()
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects
    return msg


def text_of(part: Message) -> str:
    """A text part's content with the wire's CRLF line ends read as newlines."""
    content = part.get_content()  # type: ignore[attr-defined]
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def tree(part: Message) -> Any:
    """The MIME structure as nested (content type, [children]) / content type."""
    if part.is_multipart():
        return (part.get_content_type(), [tree(p) for p in part.get_payload()])  # type: ignore[union-attr]
    return part.get_content_type()


def field_of(request: SendRequest, **kwargs: Any) -> str | None:
    with pytest.raises(MessageError) as info:
        compose(request, **kwargs)
    return info.value.field


# --------------------------------------------------------------------------- structure


def test_text_only() -> None:
    composed = compose(req(subject="Hi", text="Hello Jane"))
    msg = parse(composed)
    assert tree(msg) == "text/plain"
    assert text_of(msg) == "Hello Jane\n"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg.get_content_charset() == "utf-8"
    assert msg["MIME-Version"] == "1.0"


def test_html_only() -> None:
    msg = parse(compose(req(html="<p>Hi</p>")))
    assert tree(msg) == "text/html"
    assert text_of(msg) == "<p>Hi</p>\n"


def test_text_and_html_alternative_text_first() -> None:
    msg = parse(compose(req(text="plain", html="<p>rich</p>")))
    assert tree(msg) == ("multipart/alternative", ["text/plain", "text/html"])
    plain, rich = msg.iter_parts()
    assert text_of(plain) == "plain\n"
    assert text_of(rich) == "<p>rich</p>\n"


def test_attachments_wrap_the_body_in_mixed() -> None:
    msg = parse(compose(req(text="t", html="<p>h</p>", attachments=[
        {"filename": "blank.pdf", "content_base64": B64_PDF},
        {"filename": "notes.txt", "content_base64": base64.b64encode(b"n\n").decode()},
    ])))
    assert tree(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", "text/html"]), "application/pdf", "text/plain"])
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["blank.pdf", "notes.txt"]
    assert attachments[0].get_content() == PDF
    assert attachments[0]["Content-Disposition"].content_disposition == "attachment"


def test_inline_image_related_inside_alternative_inside_mixed() -> None:
    msg = parse(compose(req(
        text="t",
        html='<p><img src="cid:logo@example.test"></p>',
        attachments=[
            {"filename": "logo.png", "content_base64": B64_PNG, "inline": True, "content_id": "logo@example.test"},
            {"filename": "blank.pdf", "content_base64": B64_PDF},
        ],
    )))
    assert tree(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
        "application/pdf",
    ])
    related = msg.get_payload()[0].get_payload()[1]  # type: ignore[index,union-attr]
    assert related.get_param("type") == "text/html"
    image = related.get_payload()[1]
    assert image["Content-ID"] == "<logo@example.test>"
    assert image["Content-Disposition"].content_disposition == "inline"
    assert image.get_content() == PNG
    # The HTML part is what the related part starts with, and it references the image.
    assert "cid:logo@example.test" in related.get_payload()[0].get_content()


def test_inline_image_with_html_only_and_no_other_attachment() -> None:
    msg = parse(compose(req(html='<img src="cid:a">', attachments=[
        {"content_base64": B64_PNG, "content_type": "image/png", "inline": True, "content_id": "<a>"}])))
    assert tree(msg) == ("multipart/related", ["text/html", "image/png"])


def test_inline_image_without_html_is_sent_as_a_part_of_mixed() -> None:
    msg = parse(compose(req(text="t", attachments=[
        {"filename": "p.png", "content_base64": B64_PNG, "inline": True, "content_id": "p"}])))
    assert tree(msg) == ("multipart/mixed", ["text/plain", "image/png"])
    assert msg.get_payload()[1]["Content-ID"] == "<p>"  # type: ignore[index]


def test_attachments_only() -> None:
    msg = parse(compose(req(attachments=[{"filename": "blank.pdf", "content_base64": B64_PDF}])))
    assert tree(msg) == ("multipart/mixed", ["application/pdf"])


def test_no_body_at_all_is_an_empty_text_part() -> None:
    msg = parse(compose(req(subject="Subject only")))
    assert tree(msg) == "text/plain"
    assert text_of(msg) == "\n"


# --------------------------------------------------------------------------- envelope and headers


def test_bcc_only_in_recipients_and_recipients_deduplicated_in_order() -> None:
    composed = compose(req(
        to=["Jane <jane@example.test>", "bob@example.test"],
        cc=["jane@example.test", "carol@example.test"],
        bcc=["secret@example.test", "bob@example.test"],
    ))
    assert composed.recipients == ["jane@example.test", "bob@example.test", "carol@example.test",
                                   "secret@example.test"]
    data = composed.as_bytes()
    assert b"secret@example.test" not in data
    assert b"Bcc" not in data
    msg = parse(composed)
    assert msg["Bcc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["jane@example.test", "bob@example.test"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["jane@example.test", "carol@example.test"]


def test_bcc_alone_is_enough() -> None:
    composed = compose(req(to=[], bcc=["hidden@example.test"]))
    msg = parse(composed)
    assert composed.recipients == ["hidden@example.test"]
    assert msg["To"] is None


def test_envelope_from_is_bare_and_display_names_are_kept() -> None:
    composed = compose(req(**{"from": '"Doe, John" <john@example.test>'},
                           to=["Jane Q. Doe <jane@example.test>"], reply_to=["Help Desk <help@example.test>"]))
    assert composed.envelope_from == "john@example.test"
    msg = parse(composed)
    sender = msg["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Doe, John", "john@example.test")
    assert msg["To"].addresses[0].display_name == "Jane Q. Doe"
    assert msg["Reply-To"].addresses[0].addr_spec == "help@example.test"


def test_default_from_used_when_record_has_none() -> None:
    composed = compose(raw(from_=None), default_from="Conn <conn@example.test>")
    assert composed.envelope_from == "conn@example.test"
    assert parse(composed)["From"].addresses[0].display_name == "Conn"


def test_record_from_beats_default_from() -> None:
    assert compose(req(), default_from="conn@example.test").envelope_from == "shop@example.test"


def test_unicode_subject_display_names_and_filename_are_encoded() -> None:
    composed = compose(req(
        **{"from": "Jörg Müller <jorg@example.test>"},
        to=["Zoë Ärger <zoe@example.test>"],
        subject="Grüße aus Köln – ✿ und noch ein recht langer Betreff, damit gefaltet werden muss",
        text="Hällo",
        attachments=[{"filename": "résumé 履歴書.pdf", "content_base64": B64_PDF}],
    ))
    data = composed.as_bytes()
    assert data.isascii()
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: =?utf-8?" in head
    assert b"From: =?utf-8?" in head
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9" in data or b"filename*0*=utf-8''r%C3%A9sum%C3%A9" in data
    msg = parse(composed)
    assert str(msg["Subject"]) == "Grüße aus Köln – ✿ und noch ein recht langer Betreff, damit gefaltet werden muss"
    assert msg["From"].addresses[0].display_name == "Jörg Müller"
    assert msg["To"].addresses[0].display_name == "Zoë Ärger"
    attachment = next(msg.iter_attachments())
    assert attachment.get_filename() == "résumé 履歴書.pdf"


def test_long_unicode_headers_fold_within_78_and_keep_every_space() -> None:
    name = "Zoë Ärger-Überlänge von und zu Straßenbahnhaltestelle : Kundenservice ✿ Abteilung"
    subject = "Ihre Bestellung – " + " ".join(["größer"] * 30)
    composed = compose(req(**{"from": f'"{name}" <zoe@example.test>'}, subject=subject,
                           to=[f'"{name}" <to{i}@example.test>' for i in range(3)],
                           reply_to=[f'"{name}" <help@example.test>']))
    head = composed.as_bytes().split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert max(len(line) for line in head.split("\r\n")) <= 78
    msg = parse(composed)
    assert str(msg["Subject"]) == subject
    assert display_name_of(msg, "zoe@example.test") == name
    assert [a.addr_spec for a in msg["To"].addresses] == [f"to{i}@example.test" for i in range(3)]


def test_idn_domain_goes_ascii_without_smtputf8() -> None:
    composed = compose(req(to=["Bob <bob@exämple.test>"]))
    assert composed.needs_smtputf8 is False
    assert composed.recipients == ["bob@xn--exmple-cua.test"]
    assert b"bob@xn--exmple-cua.test" in composed.as_bytes()


def test_unicode_local_part_needs_smtputf8() -> None:
    composed = compose(req(to=["Jöhn <jöhn@example.test>"], subject="Grüße"))
    assert composed.needs_smtputf8 is True
    assert composed.recipients == ["jöhn@example.test"]
    data = composed.as_bytes()
    assert "jöhn@example.test".encode() in data
    assert "To: =?utf-8?b?SsO2aG4=?= <jöhn@example.test>".encode() in data  # the address itself stays UTF-8
    msg = email.message_from_string(data.decode("utf-8"), policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "jöhn@example.test"
    assert str(msg["Subject"]) == "Grüße"


def test_unicode_reply_to_also_needs_smtputf8() -> None:
    assert compose(req(reply_to=["jöhn@example.test"])).needs_smtputf8 is True


def test_threading_headers() -> None:
    msg = parse(compose(req(in_reply_to="orig@example.test", references=["a@example.test", "<b@example.test>"])))
    assert msg["In-Reply-To"] == "<orig@example.test>"
    assert msg["References"] == "<a@example.test> <b@example.test>"


def test_many_references_are_folded_between_ids() -> None:
    ids = [f"<{i:04d}.long.identifier@mail.example.test>" for i in range(6)]
    composed = compose(req(references=ids))
    head = composed.as_bytes().split(b"\r\n\r\n", 1)[0].decode()
    block = head[head.index("References:"):].split("\r\nMIME-Version")[0]
    assert all(len(line) <= 78 for line in block.split("\r\n"))
    assert re.sub(r"\r\n ", " ", block) == "References: " + " ".join(ids)


@pytest.mark.parametrize(
    ("priority", "x_priority", "importance"),
    [("high", "1 (Highest)", "high"), ("low", "5 (Lowest)", "low"), ("normal", None, None), (None, None, None)],
)
def test_priority(priority: str | None, x_priority: str | None, importance: str | None) -> None:
    msg = parse(compose(req(priority=priority)))
    assert msg["X-Priority"] == x_priority
    assert msg["Importance"] == importance


def test_message_id_generated_with_sender_domain_and_date_set() -> None:
    composed = compose(req(**{"from": "x@Mail.Exämple.test"}))
    assert re.fullmatch(r"<[^<>@\s]+@mail\.xn--exmple-cua\.test>", composed.message_id)
    msg = parse(composed)
    assert msg["Message-ID"] == composed.message_id
    assert msg["Date"].datetime.tzinfo is not None


def test_message_ids_are_unique() -> None:
    request = req()
    assert len({compose(request).message_id for _ in range(50)}) == 50


def test_given_message_id_is_normalised() -> None:
    assert compose(req(message_id="order-42@shop.example.test")).message_id == "<order-42@shop.example.test>"
    assert compose(raw(message_id=" <x@y> ")).message_id == "<x@y>"


def test_custom_headers_in_order_and_long_ascii_values_not_encoded() -> None:
    url = "<https://example.test/unsubscribe/" + "a1b2c3d4e5" * 12 + ">"
    composed = compose(req(headers={"X-Campaign": "spring ✿", "List-Unsubscribe": url + ", <mailto:u@example.test>",
                                    "X-Long": " ".join(["word"] * 40)}))
    data = composed.as_bytes()
    assert url.encode() in data  # a URL split into encoded words would break one-click unsubscribe
    msg = parse(composed)
    assert msg["X-Campaign"] == "spring ✿"
    assert msg["List-Unsubscribe"] == url + ", <mailto:u@example.test>"
    assert msg["X-Long"] == " ".join(["word"] * 40)
    names = [name for name, _ in msg.items()]
    assert names.index("X-Campaign") < names.index("List-Unsubscribe") < names.index("MIME-Version")


def test_long_plain_subject_is_folded_at_spaces() -> None:
    subject = " ".join(f"word{i}" for i in range(40))
    composed = compose(req(subject=subject))
    head = composed.as_bytes().split(b"\r\n\r\n", 1)[0].decode()
    assert all(len(line) <= 78 for line in head.split("\r\n"))
    assert "=?" not in head
    assert parse(composed)["Subject"] == subject


# --------------------------------------------------------------------------- bodies


def test_lines_end_in_crlf_and_stay_within_998() -> None:
    composed = compose(req(text="a\nb\r\nc\rd" + "x" * 3000, html="<p>" + "y" * 2000 + "</p>",
                           attachments=[{"filename": "blank.pdf", "content_base64": B64_PDF}]))
    data = composed.as_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    plain = next(p for p in parse(composed).walk() if p.get_content_type() == "text/plain")
    assert text_of(plain) == "a\nb\nc\nd" + "x" * 3000 + "\n"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"


def test_mostly_non_ascii_text_is_base64_some_is_quoted_printable() -> None:
    cjk = parse(compose(req(text="こんにちは世界" * 20)))
    assert cjk["Content-Transfer-Encoding"] == "base64"
    assert text_of(cjk) == "こんにちは世界" * 20 + "\n"
    latin_text = "Viele Grüße aus Köln, und bis bald im nächsten Jahr. " * 5
    latin = parse(compose(req(text=latin_text)))
    assert latin["Content-Transfer-Encoding"] == "quoted-printable"
    assert text_of(latin) == latin_text + "\n"


def test_control_characters_in_body_are_encoded_not_sent_raw() -> None:
    composed = compose(req(text="bell\x07 and nul\x00 here"))
    assert b"\x00" not in composed.as_bytes()
    assert text_of(parse(composed)) == "bell\x07 and nul\x00 here\n"


def test_body_is_never_8bit_even_with_smtputf8() -> None:
    composed = compose(req(to=["jöhn@example.test"], text="Grüße", html="<p>Grüße</p>"))
    body = composed.as_bytes().split(b"\r\n\r\n", 1)[1]
    assert body.isascii()


def test_a_line_starting_with_a_dot_or_from_is_kept() -> None:
    msg = parse(compose(req(text=".\nFrom here\n..x")))
    assert text_of(msg) == ".\nFrom here\n..x\n"


# --------------------------------------------------------------------------- attachments


def test_attachment_from_path_relative_to_base_dir_with_guessed_type() -> None:
    composed = compose(req(attachments=[{"path": "blank.pdf"}, {"path": str(DATA / "pixel.png")}]), base_dir=DATA)
    attachments = list(parse(composed).iter_attachments())
    assert [(a.get_content_type(), a.get_filename()) for a in attachments] == [
        ("application/pdf", "blank.pdf"), ("image/png", "pixel.png")]
    assert attachments[0].get_content() == PDF
    assert attachments[1].get_content() == PNG


def test_attachment_filename_overrides_path_name() -> None:
    composed = compose(req(attachments=[{"path": "blank.pdf", "filename": "Invoice 7.pdf"}]), base_dir=DATA)
    assert next(parse(composed).iter_attachments()).get_filename() == "Invoice 7.pdf"


def test_base64_with_whitespace_is_accepted() -> None:
    wrapped = "\n".join(B64_PDF[i:i + 60] for i in range(0, len(B64_PDF), 60)) + "\n"
    composed = compose(req(attachments=[{"filename": "a.pdf", "content_base64": wrapped}]))
    assert next(parse(composed).iter_attachments()).get_content() == PDF


def test_forwarded_message_attachment_is_embedded_7bit() -> None:
    composed = compose(req(text="see below", attachments=[{"path": "forwarded.eml"}]), base_dir=DATA)
    msg = parse(composed)
    assert tree(msg) == ("multipart/mixed", ["text/plain", ("message/rfc822", ["text/plain"])])
    part = msg.get_payload()[1]  # type: ignore[index]
    assert part["Content-Transfer-Encoding"] == "7bit"
    assert part.get_filename() == "forwarded.eml"
    assert part.get_content()["Subject"] == "The original"


def test_message_attachment_that_is_not_7bit_goes_as_bytes() -> None:
    eml = "Subject: ü\r\n\r\nGrüße\r\n".encode()
    composed = compose(req(attachments=[{"filename": "x.eml", "content_base64": base64.b64encode(eml).decode()}]))
    attachment = next(parse(composed).iter_attachments())
    assert attachment.get_content_type() == "application/octet-stream"
    assert attachment.get_content() == eml


def test_content_type_parameters_are_kept() -> None:
    composed = compose(req(attachments=[{"filename": "x.txt", "content_type": 'text/plain; charset="iso-8859-1"',
                                         "content_base64": base64.b64encode(b"caf\xe9").decode()}]))
    attachment = next(parse(composed).iter_attachments())
    assert attachment.get_content_type() == "text/plain"
    assert attachment.get_param("charset") == "iso-8859-1"
    assert attachment.get_payload(decode=True) == b"caf\xe9"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    request = req(attachments=[{"path": "blank.pdf"}, {"path": "nope.pdf"}])
    with pytest.raises(MessageError, match="file not found") as info:
        compose(request, base_dir=DATA)
    assert info.value.field == "attachments[1].path"


def test_directory_is_not_attached(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(MessageError, match="not a regular file") as info:
        compose(req(attachments=[{"path": "d"}]), base_dir=tmp_path)
    assert info.value.field == "attachments[0].path"


@pytest.mark.parametrize("value", ["not base64!", "AAA", "AA==AA==", "ÄÖÜ=", "A" * 5])
def test_bad_base64_names_the_field(value: str) -> None:
    with pytest.raises(MessageError, match="not valid base64") as info:
        compose(req(attachments=[{"filename": "ok.txt", "content_base64": "AA=="},
                                 {"filename": "a.bin", "content_base64": value}]))
    assert info.value.field == "attachments[1].content_base64"


# --------------------------------------------------------------------------- templates


def test_templates_render_with_data_and_replace_fields() -> None:
    composed = compose(req(
        subject="ignored", text="ignored", html="ignored",
        template={"subject": "Order {{ order }} for {{ name }}", "text": "Hi {{ name }} & co",
                  "html": "<p>Hi {{ name }}</p>"},
        data={"order": 42, "name": "<Jane & Co>"},
    ))
    msg = parse(composed)
    assert msg["Subject"] == "Order 42 for <Jane & Co>"
    plain, html = msg.iter_parts()
    assert text_of(plain) == "Hi <Jane & Co> & co\n"  # text is not escaped
    assert text_of(html) == "<p>Hi &lt;Jane &amp; Co&gt;</p>\n"  # HTML is


def test_template_files_relative_to_base_dir() -> None:
    composed = compose(req(template={"text_file": "greeting.txt.j2", "html_file": "greeting.html.j2"},
                           data={"name": "Jane", "order": 7}), base_dir=DATA)
    plain, html = parse(composed).iter_parts()
    assert text_of(plain) == "Hello Jane,\nYour order 7 has shipped.\n"
    assert "<p>Your order 7 has shipped.</p>" in html.get_content()


def test_template_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("one {{ x }}", encoding="utf-8")
    request = req(template={"text_file": "t.txt"}, data={"x": 1})
    assert text_of(parse(compose(request, base_dir=tmp_path))) == "one 1\n"
    path.write_text("second version {{ x }}", encoding="utf-8")
    assert text_of(parse(compose(request, base_dir=tmp_path))) == "second version 1\n"


def test_missing_template_file() -> None:
    assert field_of(req(template={"html_file": "nope.html"}), base_dir=DATA) == "template.html_file"


def test_undefined_variable_names_the_template_and_line() -> None:
    with pytest.raises(MessageError) as info:
        compose(req(template={"text": "line one\nHello {{ nme }}"}, data={"name": "x"}))
    assert info.value.field == "template.text"
    assert "line 2" in str(info.value)
    assert "'nme' is undefined" in str(info.value)


def test_template_syntax_error_names_the_template() -> None:
    request = raw(template=TemplateSpec.model_construct(subject=None, text=None, html="<p>{% if %}</p>",
                                                        text_file=None, html_file=None))
    with pytest.raises(MessageError, match="line 1") as info:
        compose(request)
    assert info.value.field == "template.html"


def test_rendered_subject_with_a_line_break_is_refused() -> None:
    request = req(template={"subject": "Hi {{ name }}"}, data={"name": "x\r\nBcc: evil@example.test"})
    assert field_of(request) == "template.subject"


def test_sandbox_blocks_internals_and_huge_values() -> None:
    assert field_of(req(template={"text": "{{ ''.__class__.__mro__ }}"})) == "template.text"
    with pytest.raises(MessageError, match="too large"):
        compose(req(template={"text": "{{ 'x' * 100000000 }}"}))
    with pytest.raises(MessageError, match="too large"):
        compose(req(template={"text": "{{ 2 ** 10000000 }}"}))


def test_templates_are_compiled_once() -> None:
    source = "cached {{ v }} template"
    first = _templates.compile_template(source, html=False)
    compose(req(template={"text": source}, data={"v": 1}))
    assert _templates.compile_template(source, html=False) is first


# --------------------------------------------------------------------------- hostile input


INJECTION = "x\r\nBcc: evil@example.test"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"from_": INJECTION}, "from"),
        ({"to": ["ok@example.test", INJECTION]}, "to[1]"),
        ({"cc": [INJECTION]}, "cc[0]"),
        ({"bcc": [INJECTION]}, "bcc[0]"),
        ({"reply_to": [INJECTION]}, "reply_to[0]"),
        ({"subject": INJECTION}, "subject"),
        ({"subject": "nul\x00"}, "subject"),
        ({"subject": "line\u2028separator"}, "subject"),
        ({"headers": {"X-Ok": "fine", "X-Bad": INJECTION}}, "headers.X-Bad"),
        ({"headers": {"X-Bad\r\nBcc": "v"}}, "headers.X-Bad\r\nBcc"),
        ({"headers": {"X-Bad: evil": "v"}}, "headers.X-Bad: evil"),
        ({"headers": {"From": "spoof@example.test"}}, "headers.From"),
        ({"headers": {"MIME-Version": "2.0"}}, "headers.MIME-Version"),
        ({"headers": {"Content-Transfer-Encoding": "8bit"}}, "headers.Content-Transfer-Encoding"),
        ({"priority": "low", "headers": {"X-Priority": "1"}}, "headers.X-Priority"),
        ({"message_id": "a@b\r\nBcc: evil@example.test"}, "message_id"),
        ({"message_id": "no-domain"}, "message_id"),
        ({"in_reply_to": INJECTION}, "in_reply_to"),
        ({"references": ["ok@x", INJECTION]}, "references[1]"),
        ({"references": INJECTION}, "references"),
    ],
)
def test_injection_is_refused_even_without_validation(fields: dict[str, Any], field: str) -> None:
    assert field_of(raw(**fields)) == field


def _attachment(**kw: Any) -> Any:
    base: dict[str, Any] = {"filename": None, "content_type": None, "content_base64": "AA==", "path": None,
                            "inline": False, "content_id": None}
    base.update(kw)
    return AttachmentSpec.model_construct(**base)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_attachment(filename="a" * 1000 + ".txt"), "attachments[0].filename"),
        (_attachment(filename="a\x00b.txt"), "attachments[0].filename"),
        (_attachment(filename="evil\r\nContent-Type: text/html"), "attachments[0].filename"),
        (_attachment(filename="../../etc/passwd"), "attachments[0].filename"),
        (_attachment(content_id="a\r\nb", inline=True), "attachments[0].content_id"),
        (_attachment(content_type="text/html\r\nX: y"), "attachments[0].content_type"),
        (_attachment(content_type="multipart/mixed"), "attachments[0].content_type"),
        (_attachment(content_base64="%%%"), "attachments[0].content_base64"),
        (_attachment(content_base64=None, path="a\x00b"), "attachments[0].path"),
        (_attachment(content_base64=None, path="dir/" + "p" * 300), "attachments[0].path"),
        (_attachment(content_base64=None, path="/nonexistent/dir/file.pdf"), "attachments[0].path"),
    ],
)
def test_hostile_attachments_without_validation(spec: Any, field: str) -> None:
    assert field_of(raw(attachments=[spec])) == field


def test_secret_looking_header_value_is_not_quoted() -> None:
    with pytest.raises(MessageError) as info:
        compose(raw(headers={"X-Api-Token": "tok-123456\nX: y"}))
    assert info.value.field == "headers.X-Api-Token"
    assert "tok-123456" not in str(info.value)


def test_hostile_records_through_validation_name_the_field() -> None:
    cases = {
        "attachments[0].filename": {"attachments": [{"filename": "f" * 1000, "content_base64": "AA=="}]},
        "subject": {"subject": INJECTION},
        "nonsense": {"nonsense": 1},
    }
    for field, extra in cases.items():
        with pytest.raises(MessageError) as info:
            parse_send_request({"to": "a@example.test", **extra}, index=0)
        assert info.value.field == field


def test_unvalidated_address_string_is_split() -> None:
    composed = compose(raw(to='"Doe, Jane" <jane@example.test>, bob@example.test'))
    assert composed.recipients == ["jane@example.test", "bob@example.test"]
    assert field_of(raw(cc="ok@example.test,\r\nBcc: evil@example.test")) == "cc"


def test_no_recipient_names_to() -> None:
    assert field_of(req(to=[], cc="", bcc=None)) == "to"


def test_no_sender_names_from() -> None:
    with pytest.raises(MessageError, match="no sender") as info:
        compose(raw(from_=None))
    assert info.value.field == "from"


def test_invalid_default_from_names_from() -> None:
    assert field_of(raw(from_=None), default_from="not-an-address") == "from"


@pytest.mark.parametrize("address", ["bob@@example.test", "bob", "bob@example", "a b@example.test", "<>"])
def test_invalid_addresses_without_validation(address: str) -> None:
    assert field_of(raw(cc=[address])) == "cc[0]"


# --------------------------------------------------------------------------- the fast writer


SHAPES: list[dict[str, Any]] = [
    {"text": "t"},
    {"html": "<p>h</p>", "subject": "Ünïcode ✿"},
    {"text": "t", "html": "<p>h</p>", "cc": ["Zoë <z@example.test>"], "headers": {"X-A": "b"}},
    {"text": "t", "html": '<img src="cid:i">', "attachments": [
        {"filename": "i.png", "content_base64": B64_PNG, "inline": True, "content_id": "i"},
        {"filename": "résumé.pdf", "content_base64": B64_PDF}]},
    {"text": "t", "attachments": [{"path": "forwarded.eml"}]},
    {"to": ["jöhn@example.test"], "subject": "Grüße", "text": "x" * 2000},
]


@pytest.mark.parametrize("shape", SHAPES)
def test_fast_writer_matches_the_standard_generator(shape: dict[str, Any]) -> None:
    composed = compose(req(**shape), base_dir=DATA)
    chosen = policy.SMTPUTF8 if composed.needs_smtputf8 else policy.SMTP
    assert composed.as_bytes() == composed.message.as_bytes(policy=chosen.clone(refold_source="none"))


def test_fast_writer_hands_unusual_shapes_to_the_standard_generator() -> None:
    composed = compose(req(text="t", attachments=[{"filename": "a.pdf", "content_base64": B64_PDF}]))
    composed.message.preamble = "This is a multi-part message in MIME format."
    data = composed.as_bytes()
    assert data.startswith(composed.message.as_bytes(policy=policy.SMTP)[:20])
    assert b"This is a multi-part message in MIME format." in data
    assert tree(email.message_from_bytes(data, policy=policy.default)) == (
        "multipart/mixed", ["text/plain", "application/pdf"])


# --------------------------------------------------------------------------- round trip property

_header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1, max_size=120,
).map(lambda s: " ".join(s.split())).filter(bool)


def display_name_of(msg: EmailMessage, address: str) -> str:
    """Decode From's display name with the RFC 2047 decoder of email.header.

    (policy.default's address parser puts a space between two adjacent encoded words of a long
    display name, which RFC 2047 says to ignore; our bytes are right, that reader is not.)
    """
    folded = dict(msg.raw_items())["From"]
    phrase = str(folded).replace("\r\n", "").replace("\n", "").rsplit(f" <{address}>", 1)[0]
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return str(make_header(decode_header(phrase)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_header_text, name=_header_text, body=st.text(max_size=400))
def test_round_trip_subject_name_and_body(subject: str, name: str, body: str) -> None:
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    request = req(**{"from": f"{quoted} <sender@example.test>"}, subject=subject, text=body or None)
    msg = parse(compose(request))
    assert str(msg["Subject"]) == subject
    assert display_name_of(msg, "sender@example.test") == name
    # A blank value means "not given" (CSV cells), which leaves an empty body.
    expected = body.replace("\r\n", "\n").replace("\r", "\n") if body.strip() else ""
    if not expected.endswith("\n"):
        expected += "\n"
    assert text_of(msg) == expected
