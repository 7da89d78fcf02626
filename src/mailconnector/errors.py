"""The exception hierarchy: one root, one family per thing the user must do.

::

    MailConnectorError                   unexpected: a bug or an unhandled case
    ├── ConfigError                      fix the project file, flags or record settings
    ├── AuthenticationError              fix the credentials; never retried
    ├── TransportError (ConnectionError) network, DNS, TLS, timeouts; retryable
    │   ├── TLSSecurityError             certificate or STARTTLS policy refused
    │   └── ProtocolTimeoutError (TimeoutError)
    ├── ServerResponseError              the server said no; retryable iff 4xx
    │   ├── SenderRefusedError
    │   ├── RecipientsRefusedError
    │   └── LimitError                   the account's own sending limit, reached (not sent)
    ├── MessageError (ValueError)        a record or message cannot be composed / parsed
    └── StateError                       the local store, a lease, a checkpoint

The command line gives each family its exit code (``cli/_exit_codes.py``); the library knows none.
Library exceptions (smtplib, imaplib, ssl, socket) are translated in one place per
protocol (``smtp.py``, ``imap.py``) with the original chained as ``__cause__``.
Messages never carry secrets: they are built from settings, not from credentials.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "LeaseBusyError",
    "LimitError",
    "MailConnectorError",
    "MessageError",
    "ProtocolTimeoutError",
    "RecipientsRefusedError",
    "SenderRefusedError",
    "ServerResponseError",
    "StateError",
    "TLSSecurityError",
    "TransportError",
]


class MailConnectorError(Exception):
    """Root of every error this package raises on purpose."""

    retryable: bool = False
    # A stable name for the kind of problem (``folder-missing``, ``path-not-allowed``, ...): a program, the
    # console or the command line can add its own advice without parsing the words.
    topic: str | None = None
    # The attributes that ``to_dict`` adds when they are set (where the error is, the server's reply code).
    _details: tuple[str, ...] = ()

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The shape used in response records, operation logs and ``--json`` output."""
        data: dict[str, Any] = {"type": self.kind, "message": self.message, "retryable": self.retryable}
        if self.hint:
            data["hint"] = self.hint
        if self.topic:
            data["topic"] = self.topic
        data.update({name: value for name in self._details if (value := getattr(self, name, None))})
        return data

    def __str__(self) -> str:
        return self.message


class ConfigError(MailConnectorError):
    """The configuration is wrong; nothing was tried on the network.

    Where it is wrong is kept apart (``source`` file, ``line``, ``field``) so a console can point at it and
    ``--json`` can carry it; ``reason`` is what is wrong, and the message says both.
    """

    _details = ("source", "line", "field")

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None,
                 source: str | None = None, line: int | None = None, topic: str | None = None) -> None:
        where = [p for p in (source, f"line {line}" if line else None, field) if p]
        super().__init__(": ".join([*where, message]), hint=hint)
        self.topic = topic
        self.reason = message
        self.field = field
        self.source = source
        self.line = line


class AuthenticationError(MailConnectorError):
    """The server refused the credentials. Retrying cannot help."""


class TransportError(MailConnectorError, ConnectionError):
    """The connection could not be made or was lost. Worth retrying."""

    retryable = True


class TLSSecurityError(TransportError):
    """TLS failed or the security policy refused the server (bad certificate, no STARTTLS)."""

    retryable = False


class ProtocolTimeoutError(TransportError, TimeoutError):
    """The server did not answer in time."""


class ServerResponseError(MailConnectorError):
    """The server answered with a refusal; ``code`` is the SMTP reply code (0 for IMAP ``NO``/``BAD``)."""

    _details = ("code",)

    def __init__(self, message: str, *, code: int = 0, text: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.text = text

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return 400 <= self.code < 500



class SenderRefusedError(ServerResponseError):
    """``MAIL FROM`` was refused."""


class RecipientsRefusedError(ServerResponseError):
    """Every recipient was refused; ``refused`` maps address to (code, text)."""

    def __init__(self, message: str, *, refused: dict[str, tuple[int, str]], hint: str | None = None) -> None:
        codes = [c for c, _ in refused.values()]
        # Temporary only if every refusal was temporary.
        code = max(codes) if codes else 550
        super().__init__(message, code=code, text="; ".join(t for _, t in refused.values()), hint=hint)
        self.refused = refused


class LimitError(ServerResponseError):
    """A sending limit of the account (its provider's, or ``limits:``) was reached: nothing was sent, and a
    later run sends it. Raised here, before the server would refuse or block the account."""

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return True


class MessageError(MailConnectorError, ValueError):
    """A record cannot become an email, or an email cannot become a record; ``field`` names the record's
    field, ``reason`` what is wrong with it."""

    _details = ("field",)

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None,
                 topic: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, hint=hint)
        self.topic = topic
        self.reason = message
        self.field = field


class StateError(MailConnectorError):
    """The local store (ledger, checkpoints, leases, logs) is unusable or held by another process."""


class LeaseBusyError(StateError):
    """Another consumer holds the folder (or the operation) right now: wait for it, or try later."""

    topic = "lease-busy"
