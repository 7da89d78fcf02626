"""The same IMAP scenarios against two server implementations: Dovecot (the sandbox) and Cyrus.

They differ where a client notices: Cyrus answers a missing folder with words and no response code, offers
CRAM-MD5 and SCRAM beside PLAIN, and its folders below INBOX are ``INBOX/Child`` with ``/`` between levels.
Each scenario is written once and asserts what must hold on both; docs/interop.md says what differs.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from _mail import append_all, folder_state, make_message, message_id, unseen
from services.cyrus import CyrusServer

from mailconnector.activities.read import ReadEmail
from mailconnector.cli._exit_codes import exit_code_for, exit_code_of_test
from mailconnector.connection import Connection
from mailconnector.diagnostics import diagnose
from mailconnector.errors import AuthenticationError, ConfigError
from mailconnector.imap import ImapSession
from mailconnector.mime.compose import compose
from mailconnector.records.send import SendRequest
from mailconnector.sandbox import Sandbox

PASSWORDS = ['pä"ss\\wörd {5}', "пароль-Ω", "密码 和 空格", "plain ascii \\ \" {3}"]


@dataclass
class ImapServer:
    name: str
    ports: dict[str, int]  # security -> port: ssl, starttls, none
    ca_file: str
    login: Callable[[str], str]
    password: Callable[[str], str]
    set_password: Callable[[str, str], None]

    def connection(self, user: str, security: str = "ssl", **top: Any) -> Connection:
        data: dict[str, Any] = {
            "activities": "read",
            "auth": {"type": "basic", "username": self.login(user), "password": self.password(user)},
            "imap": {"host": "127.0.0.1", "port": self.ports[security], "security": security},
            "tls": {"ca_file": self.ca_file},
            "timeouts": {"connect": 5, "command": 30},
            **top,
        }
        return Connection.from_dict(data, name=f"{self.name}-{uuid.uuid4().hex[:6]}")


@pytest.fixture(params=["dovecot", "cyrus"])
def server(request: pytest.FixtureRequest) -> ImapServer:
    if request.param == "dovecot":
        sbx: Sandbox = request.getfixturevalue("sandbox")
        p = sbx.info.ports
        return ImapServer("dovecot", {"ssl": p["imaps"], "starttls": p["imap"], "none": p["imap"]},
                          sbx.info.ca_file, lambda u: sbx.user(u).address, lambda u: sbx.user(u).password,
                          sbx.set_password)
    cyrus: CyrusServer = request.getfixturevalue("cyrus")
    return ImapServer("cyrus", {"ssl": cyrus.ports["imaps"], "starttls": cyrus.ports["imap"],
                                "none": cyrus.ports["imap"]},
                      cyrus.ca_file, lambda u: u, lambda u: cyrus.users[u], cyrus.set_password)


@pytest.fixture
def folder(server: ImapServer) -> Iterator[str]:
    """A fresh folder of bob's on this server, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with ImapSession(server.connection("bob")) as imap:
        imap.create_folder(name)
    yield name
    with ImapSession(server.connection("bob")) as imap:
        made = [f.name for f in imap.list_folders() if f.name == name or f.name.startswith(name + "/")]
        for path in sorted(made, key=len, reverse=True):  # children first: Cyrus refuses [HASCHILDREN]
            imap.delete_folder(path)


# ---------------------------------------------------------------------------------------------- the Test
@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_the_connection_test_passes(server: ImapServer, security: str) -> None:
    report = diagnose(server.connection("alice", security))
    assert report.ok, [s.to_dict() for s in report.steps]
    steps = {s.name: s for s in report.steps}
    assert "offered: " in (steps["authentication"].detail or "")
    if security == "starttls":
        # What the session works with: the list the server gives once TLS is up.
        assert (steps["capabilities"].detail or "").startswith("after STARTTLS: ")
    greeting = steps["greeting"].detail or ""
    assert greeting.startswith("* OK") or greeting.startswith("[")
    assert len(greeting) <= 120 and not greeting.endswith(" …")


def test_a_missing_folder_is_a_configuration_error_on_every_server(server: ImapServer) -> None:
    """Dovecot says [NONEXISTENT]; Cyrus only "Mailbox does not exist": both are exit 3 with a hint."""
    missing = f"no-such-{uuid.uuid4().hex[:6]}"
    with ImapSession(server.connection("alice")) as imap, pytest.raises(ConfigError) as caught:
        imap.select(missing)
    assert exit_code_for(caught.value) == 3
    assert f"folder {missing!r} does not exist" in caught.value.message
    assert "mailconnector folders" in (caught.value.hint or "")

    report = diagnose(server.connection("alice"), folder=missing)
    failed = report.first_failure()
    assert failed is not None and failed.name == "folder can be selected" and exit_code_of_test(report) == 3


# ------------------------------------------------------------------------------------------- passwords
@pytest.mark.parametrize("password", PASSWORDS)
def test_passwords_in_any_script_log_in_over_every_security_mode(server: ImapServer, password: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    user = "hana"
    server.set_password(user, password)
    caplog.set_level(logging.DEBUG, logger="mailconnector.protocol.imap")
    used = {}
    for security in ("ssl", "starttls", "none"):
        with ImapSession(server.connection(user, security)) as imap:
            imap.select("INBOX", readonly=True)
            used[security] = imap.auth_mechanism
    # The LOGIN command where the password is ASCII (every server has it), else AUTHENTICATE PLAIN in UTF-8.
    assert set(used.values()) == {"LOGIN" if password.isascii() else "PLAIN"}
    for form in (password, base64.b64encode(password.encode()).decode(), password.encode().hex()):
        assert form not in caplog.text
    assert "LOGIN" in caplog.text or "AUTHENTICATE" in caplog.text  # the exchange was logged, redacted

    wrong = server.connection(user, "ssl", auth={"type": "basic", "username": server.login(user),
                                                 "password": password + "x"})
    with pytest.raises(AuthenticationError) as caught:
        ImapSession(wrong).connect()
    assert exit_code_for(caught.value) == 4 and password not in str(caught.value.to_dict())


def test_a_login_literal_carries_a_utf8_password_where_plain_is_not_offered(server: ImapServer) -> None:
    """A server without AUTH=PLAIN gets LOGIN with the password as a literal of UTF-8 bytes (RFC 3501 allows
    8-bit literals; a quoted string is ASCII only). Called directly: both servers here offer PLAIN."""
    password = PASSWORDS[0]
    server.set_password("hana", password)
    session = ImapSession(server.connection("hana", "ssl")).connect(login=False)
    try:
        session._utf8_login(server.login("hana"), password)
        assert session.select("INBOX", readonly=True).uidvalidity > 0
    finally:
        session.close()


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_challenge_response_mechanisms_on_cyrus(cyrus: CyrusServer, mechanism: str) -> None:
    """Cyrus offers them (the sandbox's Dovecot does not: they need clear passwords stored for the mechanism)."""
    server = ImapServer("cyrus", {"ssl": cyrus.ports["imaps"]}, cyrus.ca_file, lambda u: u,
                        lambda u: cyrus.users[u], cyrus.set_password)
    password = PASSWORDS[1]
    server.set_password("hana", password)
    session = ImapSession(server.connection("hana", "ssl")).connect(login=False)
    try:
        assert mechanism in session.auth_mechanisms()
        session._password_login(mechanism, "hana", password)
        assert session.select("INBOX", readonly=True).uidvalidity > 0
        assert session.auth_mechanism == mechanism
    finally:
        session.close()


# ------------------------------------------------------------------------------------------ read, after
@pytest.mark.parametrize("action", ["mark_read", "keep_unread", "move", "delete"])
def test_read_and_each_after_read_action(server: ImapServer, folder: str, action: str) -> None:
    conn = server.connection("bob")
    target = f"{folder}-done"
    raws = [make_message(f"{server.name} {action} {n}", text=f"body {n} — ünïcode\n") for n in range(3)]
    mids = [message_id(r) for r in raws]
    append_all(conn, folder, raws)
    after_read = f"move:{target}" if action == "move" else action
    with ImapSession(conn) as imap:
        imap.create_folder(target)
    try:
        with ReadEmail(conn, folder=folder, after_read=after_read) as reader:
            seen = []
            for n, item in enumerate(reader.items()):
                seen.append(item.record.message_id)
                assert item.record.text == f"body {n} — ünïcode\n"
                if n < 2:
                    item.ack()
        assert seen == mids
        state, moved = folder_state(conn, folder), folder_state(conn, target)
        expected = {
            "mark_read": ({mids[0]: {"\\Seen"}, mids[1]: {"\\Seen"}, mids[2]: set()}, {}),
            "keep_unread": ({m: set() for m in mids}, {}),
            "move": ({mids[2]: set()}, {mids[0]: {"\\Seen"}, mids[1]: {"\\Seen"}}),
            "delete": ({mids[2]: set()}, {}),
        }[action]
        assert (state, moved) == expected
        assert unseen(conn, folder) >= {mids[2]}
    finally:
        with ImapSession(conn) as imap:
            imap.delete_folder(target)


def test_nested_folders_follow_the_servers_hierarchy(server: ImapServer, folder: str) -> None:
    with ImapSession(server.connection("bob")) as imap:
        delimiter = imap.hierarchy_delimiter()
        assert delimiter == "/"  # Dovecot as configured, Cyrus with unixhierarchysep
        nested = f"{folder}/Läufe/2026"
        created = imap.ensure_folder(nested)
        assert created == [f"{folder}/Läufe", nested]
        assert imap.ensure_folder(nested) == []
        names = {f.name for f in imap.list_folders()}
        assert {folder, f"{folder}/Läufe", nested} <= names
        assert imap.select(nested).exists == 0


def test_idle_reports_new_mail_at_once(server: ImapServer, folder: str) -> None:
    conn = server.connection("bob")
    with ImapSession(conn) as imap:
        imap.select(folder)
        timer = threading.Timer(0.3, lambda: append_all(conn, folder, [make_message("wake up")]))
        started = time.monotonic()
        timer.start()
        try:
            assert imap.idle_wait(20)
        finally:
            timer.join()
        # Both servers push EXISTS during IDLE (Cyrus through its idled): well before the 20 s.
        assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------------- 8-bit headers
def test_non_ascii_headers_survive_every_server_when_the_connector_writes_them(server: ImapServer,
                                                                              folder: str) -> None:
    """Cyrus turns each 8-bit byte of a raw header into 'X' on APPEND (its ``munge8bit`` default); a message
    the connector composes carries non-ASCII only as RFC 2047 encoded words, so it reads back intact from
    every server. The raw case is asserted per server: it is the difference docs/interop.md describes."""
    conn = server.connection("bob")
    composed = compose(SendRequest.model_validate({
        "from": "Jörg Müller <jorg@example.test>", "to": ["Zoë <zoe@example.test>"],
        "subject": "Grüße aus Köln — 東京", "text": "Hällo\n",
        "attachments": [{"filename": "Bericht für März.txt", "content_base64": "eA=="}]}))
    raw_8bit = ("From: Jörg <j@example.test>\r\nTo: b@example.test\r\nSubject: Grüße aus Köln\r\n"
                "Message-ID: <raw8-" + uuid.uuid4().hex + "@example.test>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHällo\r\n").encode()
    append_all(conn, folder, [composed.as_bytes(), raw_8bit])
    with ReadEmail(conn, folder=folder, after_read="keep_unread", attachments="none") as reader:
        ours, raw = (item.record for item in reader.items())
    assert ours.subject == "Grüße aus Köln — 東京"
    assert ours.from_ is not None and ours.from_.name == "Jörg Müller"
    assert [a.filename for a in ours.attachments] == ["Bericht für März.txt"]
    assert ours.text == "Hällo\n"
    assert raw.subject == {"dovecot": "Grüße aus Köln", "cyrus": "GrXXXXe aus KXXln"}[server.name]
    assert raw.text == "Hällo\n"  # bodies are kept as they are on both
