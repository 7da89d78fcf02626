"""Property: every record the send schema accepts survives send → Postfix → Dovecot → read with equal subject,
bodies and attachments. Through the real sandbox, so the examples are few in CI (30); the slow run is in
docs/reliability.md. Text is arbitrary Unicode without control characters (odd scripts, combining marks,
emoji, bidi marks, lone line separators in bodies), HTML is markup around such text, attachments are random
bytes under Unicode names.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import wait_for
from hypothesis import HealthCheck, given, settings, strategies as st

from mailconnector.activities.read import ReadEmail
from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import MessageError
from mailconnector.imap import ImapSession
from mailconnector.records.send import parse_send_request

USER = "carol"
MakeConn = Callable[..., Connection]

# No controls, surrogates or unassigned code points; everything else goes, bidi and zero-width marks included.
_chars = st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co"))
_line_chars = st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co", "Zl", "Zp"))
subjects = st.text(_line_chars, min_size=1, max_size=120).filter(lambda s: s.strip() != "")
bodies = st.text(st.one_of(_chars, st.just("\n")), max_size=2000)
names = st.text(_line_chars, min_size=1, max_size=60).filter(
    lambda s: s.strip() not in ("", ".", "..") and not any(c in s for c in "/\\"))
attachments = st.lists(st.tuples(names, st.binary(max_size=3000)), max_size=3)


def _norm(body: str) -> str:
    """What a body becomes on the wire and back: CRLF or CR line ends read as LF, and a final newline."""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def _fetch(conn: Connection, folder: str, message_id: str) -> Any:
    with ReadEmail(conn, folder=folder, after_read="keep_unread", include_read=True,
                   criteria={"header": {"Message-ID": message_id}}) as reader:
        return [item.record for item in reader]




@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(subject=subjects, text=st.one_of(st.none(), bodies), html=st.one_of(st.none(), bodies),
       files=attachments)
def test_send_then_read_gives_back_the_same_record(make_conn: MakeConn, subject: str, text: str | None,
                                                   html: str | None, files: list[tuple[str, bytes]]) -> None:
    message_id = f"<prop-{uuid.uuid4().hex}@example.test>"
    record: dict[str, Any] = {
        "to": f"{USER}@example.test", "subject": subject, "message_id": message_id,
        "text": text, "html": None if html is None else f"<html><body><p>{html}</p></body></html>",
        "attachments": [{"filename": n, "content_base64": base64.b64encode(b).decode()} for n, b in files],
    }
    try:
        parse_send_request(record, index=0)
    except MessageError:
        return  # not accepted by the schema: not part of the property
    [r] = SendEmail(make_conn(), concurrency=1).send([record])
    assert r.status == "sent", r.error
    reader = make_conn(USER)
    [got] = wait_for(lambda: _fetch(reader, "INBOX", message_id), timeout=15)
    assert got.subject == subject.strip()
    if text is not None and text.strip():  # a blank value means "not given" in a record
        assert got.text == _norm(text)
    if html is not None:
        assert got.html == _norm(record["html"])
    # The reader trims white space around a file name (part of making names safe); nothing else changes.
    sent = [(n.strip(), b) for n, b in files]
    received = [(a.original_filename, base64.b64decode(a.content_base64 or "")) for a in got.attachments]
    assert received == sent
    with ImapSession(reader) as imap:  # leave the mailbox as it was
        imap.select("INBOX")
        imap.delete(imap.search(["HEADER", "Message-ID", message_id]))


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(subject=subjects, text=st.one_of(st.none(), bodies), html=st.one_of(st.none(), bodies),
       files=attachments)
def test_send_then_read_long_run(make_conn: MakeConn, subject: str, text: str | None, html: str | None,
                                 files: list[tuple[str, bytes]]) -> None:
    test_send_then_read_gives_back_the_same_record.hypothesis.inner_test(  # type: ignore[attr-defined]
        make_conn, subject, text, html, files)
