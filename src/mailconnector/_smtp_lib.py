"""smtplib below its public API, gathered here: the hooks the SMTP session overrides (how the socket is made,
what the debug output says) and the attribute STARTTLS checks the certificate against.

Everything that reaches into a private name of smtplib is in this module, so that a new Python release is
checked in one place (docs/testing.md: `./dev test-latest` covers the libraries on PyPI).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from typing import Any

from ._net import await_greeting

__all__ = ["Client"]


class Client(smtplib.SMTP):
    """smtplib with a connect timeout apart from the command timeout, implicit TLS on the same code path, the
    greeting of a plain connection checked before smtplib reads it, and each line on the wire handed to
    ``on_line(direction, line)`` (``"C"`` sent, ``"S"`` received) instead of printed."""

    def __init__(self, *, host: str, connect_timeout: float, command_timeout: float,
                 implicit_tls: ssl.SSLContext | None, on_line: Callable[[str, str], None] | None) -> None:
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._implicit_tls = implicit_tls
        self._on_line = on_line
        super().__init__(timeout=command_timeout)
        self._host = host  # smtplib's STARTTLS checks the server's certificate against this name
        if on_line is not None:
            self.set_debuglevel(1)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), self._connect_timeout)
        try:
            # Commands are written whole (a pipelined batch, the data, the final dot); Nagle would only
            # hold the last small write back for the peer's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._implicit_tls is not None:
                sock.settimeout(self._command_timeout)
                sock = self._implicit_tls.wrap_socket(sock, server_hostname=host)
            else:
                await_greeting(sock, host, port, self._command_timeout, "SMTP")
            sock.settimeout(self._command_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def _print_debug(self, *args: Any) -> None:
        if not args or self._on_line is None:
            return
        kind = str(args[0])
        text = " ".join(str(a) for a in args[1:])
        if kind.startswith("send"):
            self._on_line("C", _unrepr(text).rstrip("\r\n"))
        elif kind.startswith("reply:") and "retcode" not in kind and text:
            self._on_line("S", _unrepr(text).rstrip("\r\n"))


def _unrepr(text: str) -> str:
    """A line as smtplib's debug output shows it (the repr of bytes or of a string), as it was on the wire."""
    if len(text) >= 2 and text[0] in "bB" and text[1] in "'\"":
        text = text[1:]
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
        text = text[1:-1]
    return text.replace("\\r", "\r").replace("\\n", "\n")
