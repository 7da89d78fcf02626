"""imaplib and IMAPClient below their public API, gathered here: what the IMAP session needs that neither
library offers publicly (a greeting check before imaplib reads a byte, a UTF-8 password as a literal, the
fetch answer without IMAPClient's Python tokenizer, the lines on the wire).

Everything that reaches into a private name of either library is in this module, so that a new release
is checked in one place. pyproject.toml bounds imapclient below its next major version; imaplib ships
with Python. `./dev test-latest` runs the IMAP tests against the newest releases (docs/testing.md).
"""

from __future__ import annotations

import imaplib
import re
import select
import socket
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient.imap4 import IMAP4WithTimeout

from ._net import await_greeting

__all__ = [
    "Client",
    "authenticate",
    "clean",
    "during_tcp_connect",
    "forget_capabilities",
    "login_with_literal",
    "readable",
    "send_uid_fetch",
    "set_line_hook",
    "uid_fetch_answer",
    "unexpected",
]


class _PlainIMAP4(IMAP4WithTimeout):  # type: ignore[misc]
    """imaplib over a plain socket that waits for the greeting itself, to tell an implicit-TLS port at once."""

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)
        try:
            await_greeting(sock, self.host, self.port, self._timeout or 60.0, "IMAP")
        except BaseException:
            sock.close()
            raise
        return sock


class Client(IMAPClient):  # type: ignore[misc]
    """IMAPClient whose plain connections check the greeting before imaplib reads it."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        if self.ssl or self.stream:
            created: imaplib.IMAP4 = super()._create_IMAP4()
            return created
        return _PlainIMAP4(self.host, self.port, getattr(self._timeout, "connect", None))


def forget_capabilities(client: IMAPClient) -> None:
    """The capability list changes after STARTTLS and after a login: make IMAPClient ask again."""
    client._cached_capabilities = None


def authenticate(client: IMAPClient, mechanism: str, respond: Callable[[bytes], bytes | None]) -> None:
    """``AUTHENTICATE`` through imaplib, whose callback sees every challenge (an OAuth2 refusal comes as one),
    then the connection marked logged in, as IMAPClient's own logins do."""
    client._imap.authenticate(mechanism, respond)
    client._imap.state = "AUTH"
    forget_capabilities(client)


def login_with_literal(client: IMAPClient, user: str, password: bytes) -> tuple[str, list[Any]]:
    """``LOGIN user {n}`` with the password as a literal (UTF-8 that a quoted string may not hold); the
    connection is marked logged in when the server says OK."""
    imap = client._imap
    imap.literal = password  # imaplib sends it as {n} after the other arguments
    try:
        typ, data = imap._simple_command("LOGIN", imap._quote(user))
    finally:
        imap.literal = None
    if typ == "OK":
        imap.state = "AUTH"
        forget_capabilities(client)
    return typ, data


def send_uid_fetch(client: IMAPClient, uid_set: str, items: str) -> bytes:
    """Send ``UID FETCH`` as IMAPClient sends it, and read nothing yet: the server prepares its answer while
    the caller works. The tag is for :func:`uid_fetch_answer`, which must come before any other command."""
    tag: bytes = client._imap._command("UID", "FETCH", uid_set, items)
    return tag


def uid_fetch_answer(client: IMAPClient, tag: bytes) -> tuple[str, list[Any]]:
    """The answer to the ``UID FETCH`` sent with ``tag``, as imaplib read it: (status, FETCH data), without
    IMAPClient's response parser, a tokenizer in Python that costs a quarter of a millisecond per message."""
    imap = client._imap
    typ, data = imap._command_complete("FETCH", tag)
    if typ != "OK":
        return typ, data
    _, data = imap._untagged_response(typ, data, "FETCH")
    return typ, [d for d in data if d is not None]


def set_line_hook(client: IMAPClient, hook: Callable[[str], None] | None) -> None:
    """Hand every line imaplib sends (``> ...``, ``write literal ...``) and reads (``< ...``) to ``hook``; with
    None, imaplib's debugging is off (it formats every line when on: costly on large fetches)."""
    imap = client._imap
    if hook is None:
        imap.debug = 0
        return
    imap.debug = 4  # the lines sent and received; 5 adds imaplib's own parsing notes

    def mesg(text: Any, secs: Any = None) -> None:
        hook(text.decode("ascii", "replace") if isinstance(text, bytes) else str(text))

    imap._mesg = mesg


def readable(client: IMAPClient) -> bool:
    """The socket has something to read right now (after a read found nothing: the peer closed it)."""
    try:
        return bool(select.select([client.socket()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def during_tcp_connect(exc: BaseException) -> bool:
    """True when the exception was raised while opening the TCP connection (``socket.create_connection``):
    IMAPClient's constructor connects and reads the greeting, and a timeout does not say which."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "create_connection":
            return True
        tb = tb.tb_next
    return False


def unexpected(text: str) -> str:
    """The line imaplib could not take as a greeting: ``unexpected response: b'220 ...'``, or (a line starting
    with ``+``, as POP3's ``+OK``) the greeting's repr as the whole error."""
    m = re.match(r"(?:unexpected response: )?b?(['\"])(.*)\1$", text, re.DOTALL)
    return unrepr(m.group(2)) if m else text


def clean(exc: object) -> str:
    """An imaplib error's text without the ``b'...'`` of the bytes it was made from."""
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text


def unrepr(text: str) -> str:
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        return text[2:-1]
    return text
