"""The Cyrus fixture gives a real server: a user with an awkward password logs in over implicit TLS,
APPENDs and finds the message, and IDLE reports a delivery from another connection (idled runs).

A missing install step fails here (it does not skip): run tests/services/fetch_cyrus.sh."""

from __future__ import annotations

import imaplib
import ssl
import uuid

import pytest
from services.cyrus import CyrusServer

AWKWARD = 'pä"ss\\wörd {5}'


@pytest.fixture(scope="module", autouse=True)
def awkward_users(cyrus: CyrusServer) -> None:
    for login, password in (("awk1", AWKWARD), ("awk2", "пароль")):
        if login not in cyrus.users:
            cyrus.add_user(login, password)


def _login(server: CyrusServer, user: str) -> imaplib.IMAP4_SSL:
    """LOGIN with the password as a literal (imaplib would refuse non-ASCII in a quoted string)."""
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], timeout=10,
                             ssl_context=ssl.create_default_context(cafile=server.ca_file))
    imap.literal = server.users[user].encode()  # type: ignore[assignment]  # typeshed says str; imaplib wants bytes
    status, _ = imap._simple_command("LOGIN", user)
    assert status == "OK"
    imap.state = "AUTH"
    return imap


def test_login_append_select(cyrus: CyrusServer) -> None:
    assert cyrus.version.startswith("3.6")
    subject = f"hello {uuid.uuid4().hex}"
    imap = _login(cyrus, "awk1")
    try:
        status, data = imap.append("INBOX", None, None, f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        assert status == "OK" and b"APPENDUID" in data[0]
        assert imap.select("INBOX")[0] == "OK"
        status, found = imap.search(None, "SUBJECT", f'"{subject}"')
        assert status == "OK" and len(found[0].split()) == 1
    finally:
        imap.logout()


def test_authenticate_plain_with_utf8_password(cyrus: CyrusServer) -> None:
    imap = imaplib.IMAP4(cyrus.host, cyrus.ports["imap"], timeout=10)
    try:
        imap.starttls(ssl.create_default_context(cafile=cyrus.ca_file))
        status, _ = imap.authenticate("PLAIN", lambda _: b"\0awk2\0" + cyrus.users["awk2"].encode())
        assert status == "OK"
    finally:
        imap.logout()


def test_idle_sees_a_new_message(cyrus: CyrusServer) -> None:
    idler = _login(cyrus, "awk2")
    try:
        _, data = idler.select("INBOX")
        before = int(data[0] or b"0")
        tag = idler._new_tag()
        idler.send(tag + b" IDLE\r\n")
        assert idler.readline().startswith(b"+")
        cyrus.deliver("awk2", b"Subject: wake up\r\n\r\nnew mail\r\n")
        idler.sock.settimeout(10)  # idled pushes it at once (about 50 ms); without idled it would take 60 s
        try:
            while not (line := idler.readline()).endswith(b" EXISTS\r\n"):
                assert line.startswith(b"* "), line  # other untagged news (RECENT, FETCH) may come first
        except TimeoutError:
            pytest.fail("IDLE saw nothing within 10 s")
        assert line.strip() == f"* {before + 1} EXISTS".encode()
        idler.send(b"DONE\r\n")
        while not (line := idler.readline()).startswith(tag):
            pass
        assert line.startswith(tag + b" OK")
    finally:
        idler.logout()
