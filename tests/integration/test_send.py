"""Send Email against the real sandbox: Postfix takes each message and delivers it into Dovecot, and every
test reads the delivered bytes back over IMAP to check the MIME tree and the headers the recipient gets.

Delivery is asynchronous, so reads poll with a deadline. Each test marks its messages with a unique token
in the subject. Nothing here is ever addressed outside ``example.test`` through an authenticated session:
the sandbox would accept it for relay.
"""

from __future__ import annotations

import base64
import email
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterable
from email import policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from faults import C2S, FaultProxy

from mailconnector.activities.files import iter_records
from mailconnector.activities.send import SendEmail, SendSettings
from mailconnector.connection import Connection
from mailconnector.errors import RecipientsRefusedError
from mailconnector.imap import ImapSession
from mailconnector.records.send import SendDefaults, SendResponse
from mailconnector.sandbox import Sandbox
from mailconnector.smtp import SmtpSession
from mailconnector.state import Store

DATA = Path(__file__).resolve().parent.parent / "data" / "compose"
PNG = (DATA / "pixel.png").read_bytes()
PDF = (DATA / "blank.pdf").read_bytes()
ENVELOPE_HEADERS = {"return-path", "delivered-to", "received"}  # added by Postfix and Dovecot on delivery

MakeConn = Callable[..., Connection]


# --------------------------------------------------------------------------- helpers


def token() -> str:
    return uuid.uuid4().hex


def send(conn: Connection, records: Iterable[Any], **settings: Any) -> list[SendResponse]:
    """Every response, in input order."""
    settings.setdefault("backoff", 0.05)
    responses = list(SendEmail(conn, **settings).send(records))
    return sorted(responses, key=lambda r: r.index)


def via(sandbox: Sandbox, proxy: FaultProxy, user: str = "alice", **top: Any) -> Connection:
    """A connection to the plain ``smtp`` port (AUTH offered, no TLS) through ``proxy``, so it sees the bytes."""
    data = sandbox.connection_dict(user, smtp="smtp")
    data["smtp"]["port"] = proxy.port
    data.update(top)
    return Connection.from_dict(data, name=f"{user}-via-proxy-{uuid.uuid4().hex[:6]}")


def delivered(conn: Connection, tok: str, *, count: int = 1, timeout: float = 10.0) -> list[bytes]:
    """The raw messages whose subject holds ``tok``, once at least ``count`` of them arrived."""

    def look() -> list[bytes] | None:
        with ImapSession(conn) as imap:
            imap.select("INBOX", readonly=True)
            uids = imap.search(["SUBJECT", tok])
            if len(uids) < count:
                return None
            return [m.raw for m in imap.fetch(uids)]

    found: list[bytes] = wait_for(look, timeout=timeout)
    return found


def count_now(conn: Connection, tok: str) -> int:
    with ImapSession(conn) as imap:
        imap.select("INBOX", readonly=True)
        return len(imap.search(["SUBJECT", tok]))


def one(conn: Connection, tok: str) -> tuple[bytes, EmailMessage]:
    raws = delivered(conn, tok)
    assert len(raws) == 1, f"expected one message with {tok}, got {len(raws)}"
    msg = email.message_from_bytes(raws[0], policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return raws[0], msg


def tree(part: Message) -> Any:
    """The MIME structure: a content type, or (multipart type, [children])."""
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        return part.get_content_type(), [tree(c) for c in children if isinstance(c, Message)]
    return part.get_content_type()


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def composed_headers(msg: EmailMessage) -> list[tuple[str, str]]:
    """The headers the connector wrote (without what the servers added on delivery)."""
    return [(k, str(v)) for k, v in msg.items() if k.lower() not in ENVELOPE_HEADERS]


def leaves(msg: EmailMessage) -> list[EmailMessage]:
    return [p for p in msg.walk() if isinstance(p, EmailMessage) and not p.is_multipart()]


def body_text(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


# --------------------------------------------------------------------------- bodies and structure


def test_text_only_is_a_single_7bit_text_part(make_conn: MakeConn) -> None:
    tok = token()
    [r] = send(make_conn(), [{"to": "bob@example.test", "subject": f"text {tok}", "text": "Hello Bob,\nbye.\n"}])
    assert r.status == "sent" and r.accepted == ["bob@example.test"] and r.attempts == 1 and r.error is None

    raw, msg = one(make_conn("bob"), tok)
    assert tree(msg) == "text/plain"
    assert msg["Content-Type"] == 'text/plain; charset="utf-8"'
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg["MIME-Version"] == "1.0"
    assert msg["From"] == "alice@example.test" and msg["To"] == "bob@example.test"
    assert msg["Subject"] == f"text {tok}"
    assert msg["Message-ID"] == r.message_id
    assert msg["Date"] is not None
    assert body_text(msg) == "Hello Bob,\nbye.\n"
    assert b"\r\n\r\nHello Bob,\r\nbye.\r\n" in raw


def test_html_only_is_a_single_html_part(make_conn: MakeConn) -> None:
    tok = token()
    html = "<html><body><h1>Hi</h1><p>A &amp; B</p></body></html>"
    [r] = send(make_conn(), [{"to": "bob@example.test", "subject": f"html {tok}", "html": html}])
    assert r.status == "sent"

    _, msg = one(make_conn("bob"), tok)
    assert tree(msg) == "text/html"
    assert msg.get_content_charset() == "utf-8"
    assert body_text(msg).rstrip("\n") == html


def test_text_and_html_make_multipart_alternative_plain_first(make_conn: MakeConn) -> None:
    tok = token()
    [r] = send(make_conn(), [{"to": "bob@example.test", "subject": f"both {tok}", "text": "plain version",
                              "html": "<p>rich version</p>"}])
    assert r.status == "sent"

    _, msg = one(make_conn("bob"), tok)
    assert tree(msg) == ("multipart/alternative", ["text/plain", "text/html"])
    plain, rich = leaves(msg)
    assert body_text(plain).strip() == "plain version"
    assert body_text(rich).strip() == "<p>rich version</p>"


def test_attachments_binary_and_unicode_names_arrive_byte_for_byte(make_conn: MakeConn, tmp_path: Path) -> None:
    tok = token()
    blob = os.urandom(70_000) + b"\x00\r\n.\r\n\x00"  # binary, with what would end the SMTP data in clear
    (tmp_path / "data.bin").write_bytes(blob)
    csv_bytes = "name;city\nZoë;Zürich\n".encode()
    record = {
        "to": "bob@example.test", "subject": f"attachments {tok}", "text": "see attached",
        "attachments": [
            {"path": "data.bin"},
            {"filename": "rapport.pdf", "content_base64": base64.b64encode(PDF).decode()},
            {"filename": "données été 東京.csv", "content_base64": base64.b64encode(csv_bytes).decode()},
        ],
    }
    [r] = send(make_conn(), [record], base_dir=tmp_path)
    assert r.status == "sent", r.error

    raw, msg = one(make_conn("bob"), tok)
    assert tree(msg) == ("multipart/mixed", ["text/plain", "application/octet-stream", "application/pdf",
                                             "text/csv"])
    _, binary, pdf, csv_part = leaves(msg)
    assert binary.get_filename() == "data.bin" and binary.get_content_disposition() == "attachment"
    assert binary["Content-Transfer-Encoding"] == "base64"
    assert binary.get_content() == blob
    assert pdf.get_filename() == "rapport.pdf" and pdf.get_content() == PDF
    assert csv_part.get_filename() == "données été 東京.csv"
    payload = csv_part.get_payload(decode=True)
    assert payload == csv_bytes
    # The Unicode name travels as an RFC 2231 parameter: the headers stay ASCII (no SMTPUTF8 needed).
    assert header_block(raw).isascii()
    assert b"filename*=utf-8''donn%C3%A9es%20%C3%A9t%C3%A9%20%E6%9D%B1%E4%BA%AC.csv" in raw


def test_inline_images_sit_in_multipart_related_with_their_content_id(make_conn: MakeConn) -> None:
    tok = token()
    record = {
        "to": "bob@example.test", "subject": f"inline {tok}", "text": "logo below",
        "html": '<p>Our logo:</p><img src="cid:logo@example.test">',
        "attachments": [
            {"filename": "logo.png", "content_base64": base64.b64encode(PNG).decode(), "inline": True,
             "content_id": "<logo@example.test>"},
            {"filename": "terms.pdf", "content_base64": base64.b64encode(PDF).decode()},
        ],
    }
    [r] = send(make_conn(), [record])
    assert r.status == "sent", r.error

    _, msg = one(make_conn("bob"), tok)
    assert tree(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
        "application/pdf",
    ])
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    assert related.get_param("type") == "text/html"
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo@example.test>"
    assert image.get_content_disposition() == "inline"
    assert image.get_payload(decode=True) == PNG
    html = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    assert isinstance(html, EmailMessage)
    assert 'src="cid:logo@example.test"' in body_text(html)


def test_unicode_everywhere_is_encoded_for_7bit_and_decodes_back(make_conn: MakeConn) -> None:
    tok = token()
    subject = f"Grüße 🎉 — 你好 — Ωμέγα {tok}"
    text = "Grüße aus Zürich 🎉\n你好，世界\nΚαλημέρα\n"
    html = "<p>Grüße 🎉 你好</p>"
    record = {
        "from": "Zoë Ångström <alice@example.test>",
        "to": ["Björk Guðmundsdóttir <bob@example.test>"],
        "cc": ["李小龍 <carol@example.test>"],
        "reply_to": ["Équipe Support <alice@example.test>"],
        "subject": subject, "text": text, "html": html,
        "headers": {"X-Note": "déjà vu ✓"},
    }
    [r] = send(make_conn(), [record])
    assert r.status == "sent" and sorted(r.accepted) == ["bob@example.test", "carol@example.test"]

    for reader in ("bob", "carol"):
        raw, msg = one(make_conn(reader), tok)
        # ASCII addresses only, so no SMTPUTF8: every header is 7-bit (RFC 2047 encoded words).
        assert header_block(raw).isascii()
        assert msg["Subject"] == subject
        assert msg["From"].addresses[0].display_name == "Zoë Ångström"
        assert msg["To"].addresses[0].display_name == "Björk Guðmundsdóttir"
        assert msg["Cc"].addresses[0].display_name == "李小龍"
        assert msg["Reply-To"].addresses[0].display_name == "Équipe Support"
        assert msg["X-Note"] == "déjà vu ✓"
        plain, rich = leaves(msg)
        assert plain["Content-Transfer-Encoding"] in ("base64", "quoted-printable")
        assert body_text(plain) == text
        assert body_text(rich).strip() == html


def test_custom_threading_and_priority_headers_are_written_as_given(make_conn: MakeConn) -> None:
    tok = token()
    unsubscribe = "<https://example.test/unsubscribe/" + "x" * 100 + ">"
    record = {
        "to": "bob@example.test", "subject": f"Re: thread {tok}", "text": "reply",
        "message_id": f"<reply-{tok}@example.test>",
        "in_reply_to": "<original-1@example.test>",
        "references": "<root-0@example.test> <original-1@example.test>",
        "priority": "high",
        "headers": {"X-Campaign-Id": "spring-2024", "List-Unsubscribe": unsubscribe, "X-Count": 42},
    }
    [r] = send(make_conn(), [record])
    assert r.status == "sent" and r.message_id == f"<reply-{tok}@example.test>"

    raw, msg = one(make_conn("bob"), tok)
    assert msg["Message-ID"] == f"<reply-{tok}@example.test>"
    assert msg["In-Reply-To"] == "<original-1@example.test>"
    assert msg["References"] == "<root-0@example.test> <original-1@example.test>"
    assert msg["X-Priority"] == "1 (Highest)" and msg["Importance"] == "high"
    assert msg["X-Campaign-Id"] == "spring-2024" and msg["X-Count"] == "42"
    # A long URL is never turned into encoded words; it stays one token on one line.
    assert f"List-Unsubscribe: {unsubscribe}\r\n".encode() in raw


def test_bcc_is_delivered_but_never_written_into_the_headers(make_conn: MakeConn) -> None:
    tok = token()
    [r] = send(make_conn(), [{"to": "bob@example.test", "bcc": ["carol@example.test", "dave@example.test"],
                              "subject": f"bcc {tok}", "text": "secret copies"}])
    assert r.status == "sent"
    assert r.accepted == ["bob@example.test", "carol@example.test", "dave@example.test"]

    for reader in ("bob", "carol", "dave"):
        _, msg = one(make_conn(reader), tok)
        assert msg["Bcc"] is None
        written = composed_headers(msg)
        assert not any(k.lower() == "bcc" for k, _ in written)
        assert not any("carol" in v or "dave" in v for _, v in written), written
        assert msg["Message-ID"] == r.message_id


# --------------------------------------------------------------------------- refusals


def test_an_unknown_local_recipient_gives_partial_with_the_servers_code(make_conn: MakeConn) -> None:
    tok = token()
    [r] = send(make_conn(), [{"to": ["bob@example.test", "nobody-here@example.test"], "subject": f"partial {tok}",
                              "text": "x"}])
    assert r.status == "partial"
    assert r.accepted == ["bob@example.test"]
    [refused] = r.refused
    assert refused.address == "nobody-here@example.test"
    assert refused.code == 550 and "User unknown" in refused.text
    assert r.error is None and r.attempts == 1
    assert len(delivered(make_conn("bob"), tok)) == 1


def test_every_recipient_refused_fails_at_once_without_retry(make_conn: MakeConn) -> None:
    [r] = send(make_conn(), [{"to": ["ghost1@example.test", "ghost2@example.test"], "subject": "nobody",
                              "text": "x"}], retries=3)
    assert r.status == "failed" and r.attempts == 1
    assert r.error is not None and r.error.type == "RecipientsRefusedError"
    assert r.error.code == 550 and r.error.retryable is False
    assert {x.address for x in r.refused} == {"ghost1@example.test", "ghost2@example.test"}
    assert all(x.code == 550 for x in r.refused)


@pytest.mark.parametrize("port_name", ["smtp", "smtp_notls"])
def test_relaying_to_another_domain_without_login_is_refused(sandbox: Sandbox, make_conn: MakeConn,
                                                             port_name: str) -> None:
    conn = make_conn(smtp=port_name)
    data = b"From: alice@example.test\r\nTo: someone@elsewhere.example\r\nSubject: relay\r\n\r\nx\r\n"
    with SmtpSession(conn).connect(login=False) as session:
        with pytest.raises(RecipientsRefusedError) as info:
            session.send("alice@example.test", ["someone@elsewhere.example"], data)
        assert info.value.code == 554 and "Relay access denied" in info.value.text
        assert info.value.retryable is False
        # The session is still usable after the refusal (the transaction was reset).
        assert session.noop()


def test_the_activity_always_logs_in_and_says_so_where_no_login_is_offered(make_conn: MakeConn) -> None:
    responses = send(make_conn(smtp="smtp_notls"), [{"to": "bob@example.test", "subject": "x", "text": "y"}] * 3,
                     concurrency=1)
    assert [r.status for r in responses] == ["failed"] * 3
    for r in responses:
        assert r.error is not None and r.error.type == "AuthenticationError"
        assert "offers no authentication" in r.error.message
    assert sum(r.attempts for r in responses) == 1


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_wrong_password_fails_every_record_quickly_with_the_auth_error(make_conn: MakeConn,
                                                                       concurrency: int) -> None:
    conn = make_conn(auth={"password": "not-the-password-123"})
    started = time.monotonic()
    responses = send(conn, [{"to": "bob@example.test", "subject": f"n{i}", "text": "x"} for i in range(12)],
                     concurrency=concurrency, retries=5)
    elapsed = time.monotonic() - started
    assert [r.status for r in responses] == ["failed"] * 12
    for r in responses:
        assert r.error is not None and r.error.type == "AuthenticationError" and r.error.retryable is False
        assert "535" in r.error.message and "not-the-password-123" not in r.error.message
    # One login per worker at most: the first refusal stops the others from trying.
    assert 1 <= sum(r.attempts for r in responses) <= concurrency
    assert elapsed < 5


# --------------------------------------------------------------------------- nothing twice


def test_a_rerun_of_the_same_input_leaves_exactly_one_copy_of_each(make_conn: MakeConn, tmp_path: Path) -> None:
    tok = token()
    records = [
        {"to": "erin@example.test", "subject": f"rerun {tok} a", "text": "no id: derived from the input key"},
        {"to": "erin@example.test", "subject": f"rerun {tok} b", "text": "no id either"},
        {"id": f"order-{tok}", "to": "erin@example.test", "subject": f"rerun {tok} c", "text": "with an id"},
        {"message_id": f"<m-{tok}@example.test>", "to": "erin@example.test", "subject": f"rerun {tok} d",
         "text": "with a message_id"},
    ]
    conn = make_conn(name=f"rerun-{tok[:8]}")  # derived Message-IDs depend on the connection's name
    first = sorted(SendEmail(conn, store=Store(tmp_path / "state.db"), backoff=0.05).send(records, input_key=tok),
                   key=lambda r: r.index)
    assert [r.status for r in first] == ["sent"] * 4
    erin = make_conn("erin")
    assert len(delivered(erin, tok, count=4)) == 4

    # A new process would build a new activity, connection object and store handle: so does the rerun.
    again = make_conn(name=f"rerun-{tok[:8]}")
    second = sorted(SendEmail(again, store=Store(tmp_path / "state.db"), backoff=0.05)
                    .send(records, input_key=tok), key=lambda r: r.index)
    assert [r.status for r in second] == ["skipped_duplicate"] * 4
    assert [r.message_id for r in second] == [r.message_id for r in first]
    assert all(r.attempts == 0 for r in second)

    # A message sent after the rerun arrives; by then a duplicate from the rerun would have arrived too.
    send(make_conn(), [{"to": "erin@example.test", "subject": f"sentinel {tok}", "text": "x"}])
    delivered(erin, f"sentinel {tok}")
    for suffix in "abcd":
        assert count_now(erin, f"rerun {tok} {suffix}") == 1


def test_the_same_message_id_twice_in_one_input_is_sent_once(make_conn: MakeConn) -> None:
    tok = token()
    mid = f"<dup-{tok}@example.test>"
    responses = send(make_conn(), [{"message_id": mid, "to": "bob@example.test", "subject": f"dup {tok}",
                                    "text": "x"}] * 2, concurrency=1)
    assert [r.status for r in responses] == ["sent", "skipped_duplicate"]
    assert len(delivered(make_conn("bob"), tok)) == 1


# --------------------------------------------------------------------------- bad input


def test_each_bad_record_fails_alone_naming_record_and_field(make_conn: MakeConn, tmp_path: Path) -> None:
    tok = token()

    def good(n: int) -> dict[str, Any]:
        return {"to": "frank@example.test", "subject": f"good {tok} {n}", "text": "fine"}

    bad: list[tuple[dict[str, Any], str | None, str]] = [
        ({"subject": "no recipient", "text": "x"}, "to", "at least one recipient"),
        ({"to": ["frank@example.test", "not an address"], "text": "x"}, "to[1]", "not an address"),
        ({"to": "frank@example.test", "attachments": [{"path": "missing.pdf"}]}, "attachments[0].path",
         "file not found"),
        ({"to": "frank@example.test", "attachments": [{"filename": "a.bin", "content_base64": "@@not base64@@"}]},
         "attachments[0].content_base64", "not valid base64"),
        ({"to": "frank@example.test", "subjet": "typo", "text": "x"}, "subjet", "did you mean 'subject'"),
        ({"to": "frank@example.test", "headers": {"X-Evil": "a\r\nBcc: victim@example.test"}, "text": "x"},
         "headers.X-Evil", "line break"),
        ({"to": "frank@example.test", "subject": "ok\r\nBcc: victim@example.test", "text": "x"}, "subject",
         "line break"),
        ({"to": "frank@example.test", "template": {"subject": "Hello {{ name"}, "data": {"name": "x"}},
         "template.subject", "line 1"),
        ({"to": "frank@example.test", "template": {"text": "Dear {{ nmae }}"}, "data": {"name": "x"}},
         "template.text", "nmae"),
    ]
    records: list[dict[str, Any]] = []
    expected: dict[int, tuple[str | None, str]] = {}
    for n, (record, field, words) in enumerate(bad):
        records.append(good(n))
        if n % 2:
            record = {"id": f"rec-{n}", **record}
        expected[len(records)] = (field, words)
        records.append(record)
    records.append(good(len(bad)))

    responses = send(make_conn(), records, base_dir=tmp_path)
    for r in responses:
        if r.index not in expected:
            assert r.status == "sent", (r.index, r.error)
            continue
        field, words = expected[r.index]
        assert r.status == "failed" and r.attempts == 0, r
        assert r.error is not None and r.error.type == "MessageError" and r.error.retryable is False
        assert r.error.field == field, (r.index, r.error)
        assert words in r.error.message, (r.index, r.error.message)
        label = f"record 'rec-{(r.index - 1) // 2}'" if ((r.index - 1) // 2) % 2 else f"record {r.index}"
        assert r.error.message.startswith(label), (label, r.error.message)
        if field is not None:
            assert field in r.error.message
    assert len(delivered(make_conn("frank"), f"good {tok}", count=len(bad) + 1)) == len(bad) + 1


def test_unreadable_lines_of_jsonl_and_csv_fail_alone(make_conn: MakeConn) -> None:
    tok = token()
    jsonl = (
        f'{{"to": "frank@example.test", "subject": "jsonl {tok} 0", "text": "a"}}\n'
        '{"to": "frank@example.test", "subject": broken json}\n'
        "\n"
        f'{{"to": "frank@example.test", "subject": "jsonl {tok} 2", "text": "c"}}\n'
        '["not", "an", "object"]\n'
    ).encode()
    responses = send(make_conn(), list(iter_records(jsonl, name="in.jsonl")))
    assert [r.status for r in responses] == ["sent", "failed", "sent", "failed"]
    assert responses[1].error is not None
    assert responses[1].error.message.startswith("record 1 (line 2): invalid JSON")
    assert responses[3].error is not None and "record 3 (line 5)" in responses[3].error.message

    csv_data = (
        "to,subject,text\n"
        f"frank@example.test,csv {tok} 0,hello\n"
        f"frank@example.test,csv {tok} 1,hello,one cell too many\n"
        f'frank@example.test,"csv {tok} 2, with a comma",hello\n'
    ).encode()
    responses = send(make_conn(), list(iter_records(csv_data, name="in.csv")))
    assert [r.status for r in responses] == ["sent", "failed", "sent"]
    assert responses[1].error is not None and responses[1].error.type == "MessageError"
    assert responses[1].error.message.startswith("record 1 (line 3): more cells than header columns")
    frank = make_conn("frank")
    assert len(delivered(frank, f"jsonl {tok}", count=2)) == 2
    assert len(delivered(frank, f"csv {tok}", count=2)) == 2


# --------------------------------------------------------------------------- dry run


def test_dry_run_writes_eml_files_and_opens_no_connection(sandbox: Sandbox, make_conn: MakeConn,
                                                          tmp_path: Path) -> None:
    tok = token()
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        conn = via(sandbox, proxy)
        records = [{"to": "bob@example.test", "subject": f"dry {tok} {i}", "text": f"body {i}",
                    "attachments": [{"filename": "p.png", "content_base64": base64.b64encode(PNG).decode()}]}
                   for i in range(3)]
        records.append({"subject": "bad one", "text": "no recipient"})
        responses = send(conn, records, dry_run=tmp_path / "out")
        assert proxy.connections == []
    assert [r.status for r in responses] == ["dry_run"] * 3 + ["failed"]
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert [Path(r.eml_path or "") for r in responses[:3]] == files
    for i, (r, path) in enumerate(zip(responses, files, strict=False)):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert msg["Message-ID"] == r.message_id and msg["Subject"] == f"dry {tok} {i}"
        assert tree(msg) == ("multipart/mixed", ["text/plain", "image/png"])
        assert r.accepted == ["bob@example.test"]
    time.sleep(0.3)
    assert count_now(make_conn("bob"), f"dry {tok}") == 0


# --------------------------------------------------------------------------- SIZE


def test_the_real_server_advertises_its_size_limit(make_conn: MakeConn) -> None:
    with SmtpSession(make_conn()) as session:
        assert session.max_size == 50 * 1024 * 1024


def test_a_message_over_the_servers_size_is_refused_before_it_is_sent(sandbox: Sandbox, make_conn: MakeConn) -> None:
    """The proxy lowers the SIZE the real Postfix advertises (to 100 kB) instead of building a 51 MB message;
    the client must refuse before MAIL FROM. The real 50 MB limit is checked by the slow test below."""
    tok = token()
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        proxy.replace(b"SIZE 52428800\r\n", b"SIZE 100000\r\n")
        conn = via(sandbox, proxy)
        big = base64.b64encode(os.urandom(90_000)).decode()  # ~122 kB once base64-encoded
        responses = send(conn, [
            {"to": "bob@example.test", "subject": f"size {tok} big", "text": "x",
             "attachments": [{"filename": "big.bin", "content_base64": big}]},
            {"to": "bob@example.test", "subject": f"size {tok} small", "text": "x"},
        ], concurrency=1)
        sent = proxy.transcript(C2S)
    big_r, small_r = responses
    assert big_r.status == "failed" and big_r.attempts == 1
    assert big_r.error is not None and big_r.error.type == "ServerResponseError"
    assert big_r.error.code == 552 and big_r.error.retryable is False
    assert "the server accepts at most 100,000 (SIZE)" in big_r.error.message
    assert small_r.status == "sent"
    assert sent.count(b"MAIL FROM") == 1  # only the small one was offered
    assert b"big.bin" not in sent
    delivered(make_conn("bob"), f"size {tok} small")
    assert count_now(make_conn("bob"), f"size {tok} big") == 0


@pytest.mark.slow
def test_a_51_mb_message_is_refused_by_the_real_limit_before_it_is_sent(make_conn: MakeConn, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(51 * 1024 * 1024))
    started = time.monotonic()
    responses = sorted(SendEmail(make_conn(), base_dir=tmp_path).send(
        [{"to": "bob@example.test", "subject": "51 MB", "text": "x", "attachments": [{"path": "big.bin"}]}]),
        key=lambda r: r.index)
    [r] = responses
    assert r.status == "failed" and r.error is not None and r.error.code == 552
    assert "the server accepts at most 52,428,800 (SIZE)" in r.error.message
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- SMTPUTF8


def test_an_internationalised_address_is_offered_with_smtputf8(sandbox: Sandbox, make_conn: MakeConn) -> None:
    """What can be asserted honestly: the sandbox's Dovecot 2.3 LMTP does not offer SMTPUTF8, so Postfix
    bounces such a message after accepting it, and no test user has a non-ASCII name. So the test shows
    what the client puts on the wire (through the proxy) and that the real Postfix answers it: the
    final 250 for a UTF-8 sender, a 550 naming the UTF-8 recipient. ASCII messages never carry SMTPUTF8."""
    tok = token()
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        conn = via(sandbox, proxy)
        responses = send(conn, [
            {"from": "Bjørn <bjørn@example.test>", "to": "bob@example.test", "subject": f"utf8 {tok}",
             "text": "hé"},
            {"to": "bøb@example.test", "subject": f"utf8 {tok} 2", "text": "x"},
            {"to": "bob@example.test", "subject": f"ascii {tok}", "text": "x"},
        ], concurrency=1)
        wire = proxy.transcript(C2S)
    utf8_sender, utf8_rcpt, ascii_r = responses
    assert utf8_sender.status == "sent" and utf8_sender.accepted == ["bob@example.test"]
    assert utf8_rcpt.status == "failed"
    assert [(x.address, x.code) for x in utf8_rcpt.refused] == [("bøb@example.test", 550)]
    assert "bøb@example.test" in utf8_rcpt.refused[0].text
    assert ascii_r.status == "sent"

    lines = wire.split(b"\r\n")
    mails = [line for line in lines if line.startswith(b"MAIL FROM:")]
    assert len(mails) == 3
    assert mails[0].startswith("MAIL FROM:<bjørn@example.test> ".encode()) and mails[0].endswith(b" SMTPUTF8")
    assert mails[1].startswith(b"MAIL FROM:<alice@example.test> ") and mails[1].endswith(b" SMTPUTF8")
    assert b"SMTPUTF8" not in mails[2]
    assert "RCPT TO:<bøb@example.test>".encode() in lines
    # The header carries the address in UTF-8 itself (only the display name is an encoded word).
    assert "From: =?utf-8?b?QmrDuHJu?= <bjørn@example.test>\r\n".encode() in wire
    # The ASCII message is delivered; the UTF-8 one cannot be (see above).
    delivered(make_conn("bob"), f"ascii {tok}")


def test_without_pipelining_commands_go_one_by_one_utf8_included(sandbox: Sandbox, make_conn: MakeConn) -> None:
    tok = token()
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        proxy.replace(b"250-PIPELINING\r\n", b"")
        conn = via(sandbox, proxy)
        responses = send(conn, [
            {"to": ["bob@example.test", "ghost@example.test"], "subject": f"nopipe {tok}", "text": "x"},
            {"from": "bjørn@example.test", "to": "bob@example.test", "subject": f"nopipe utf8 {tok}", "text": "x"},
        ], concurrency=1)
        s2c = proxy.transcript("s2c")
    assert b"PIPELINING" in s2c  # the server offered it; the client never saw it
    first, second = responses
    assert first.status == "partial" and [x.code for x in first.refused] == [550]
    assert second.status == "sent", second.error
    raws = delivered(make_conn("bob"), f"nopipe {tok}")
    assert len(raws) == 1


# --------------------------------------------------------------------------- connections and pacing


def test_connections_are_reused_one_per_worker(sandbox: Sandbox, make_conn: MakeConn) -> None:
    tok = token()
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        conn = via(sandbox, proxy)
        responses = send(conn, [{"to": "carol@example.test", "subject": f"reuse {tok} {i}", "text": str(i)}
                                for i in range(12)], concurrency=3)
        proxy.wait_idle()
        connections = proxy.connections
        wire = proxy.transcript(C2S)
    assert [r.status for r in responses] == ["sent"] * 12
    assert 1 <= len(connections) <= 3
    assert wire.count(b"AUTH PLAIN") == len(connections)
    assert wire.count(b"MAIL FROM") == 12
    assert len(delivered(make_conn("carol"), f"reuse {tok}", count=12)) == 12


def test_rate_limit_paces_the_messages(make_conn: MakeConn) -> None:
    started = time.monotonic()
    responses = send(make_conn(), [{"to": "dave@example.test", "subject": "paced", "text": "x"}] * 6,
                     concurrency=3, rate_limit=20)
    assert [r.status for r in responses] == ["sent"] * 6
    assert time.monotonic() - started >= 5 / 20


def test_settings_give_defaults_and_records_override_them(make_conn: MakeConn) -> None:
    tok = token()
    settings = SendSettings(defaults=SendDefaults.model_validate(
        {"to": ["dave@example.test"], "subject": f"default subject {tok}", "headers": {"X-Source": "settings"}}))
    responses = sorted(SendEmail(make_conn(), settings, backoff=0.05).send([
        {"text": "uses every default"},
        {"to": "erin@example.test", "subject": f"own subject {tok}", "text": "overrides",
         "headers": {"x-source": "record"}},
    ]), key=lambda r: r.index)
    assert [r.status for r in responses] == ["sent", "sent"]
    _, first = one(make_conn("dave"), f"default subject {tok}")
    assert first["X-Source"] == "settings"
    _, second = one(make_conn("erin"), f"own subject {tok}")
    assert second["x-source"] == "record" and second["To"] == "erin@example.test"


def test_send_one_and_closing_early_leave_no_connection_open(sandbox: Sandbox, make_conn: MakeConn) -> None:
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as proxy:
        conn = via(sandbox, proxy)
        r = SendEmail(conn).send_one({"to": "bob@example.test", "subject": "one", "text": "x"})
        assert r.status == "sent"
        stream = SendEmail(conn, concurrency=2).send(
            [{"to": "bob@example.test", "subject": f"early {i}", "text": "x"} for i in range(10)])
        assert isinstance(stream, Generator)
        assert next(stream).status == "sent"
        stream.close()  # the consumer stops after one response
        proxy.wait_idle(timeout=5)
        assert all(c.closed.is_set() for c in proxy.connections)
