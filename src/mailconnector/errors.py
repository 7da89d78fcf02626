"""The exception hierarchy: one root, one family per thing the user must do.

::

    MailConnectorError                   exit 10  (unexpected; a bug or an unhandled case)
    ├── ConfigError                      exit 3   fix the project file, flags or record settings
    ├── AuthenticationError              exit 4   fix the credentials; never retried
    ├── TransportError (ConnectionError) exit 5   network, DNS, TLS, timeouts; retryable
    │   ├── TLSSecurityError                      certificate or STARTTLS policy refused
    │   └── ProtocolTimeoutError (TimeoutError)
    ├── ServerResponseError              exit 6   the server said no; retryable iff 4xx
    │   ├── SenderRefusedError
    │   ├── RecipientsRefusedError
    │   └── LimitError                            the account's own sending limit, reached (not sent)
    ├── MessageError (ValueError)        exit 7   a record or message cannot be composed / parsed
    └── StateError                       exit 8   the local store, a lease, a checkpoint

Exit codes 0 (success), 1 (some records failed) and 2 (usage) are the CLI's own.
Library exceptions (smtplib, imaplib, ssl, socket) are translated in one place per
protocol (``smtp.py``, ``imap.py``) with the original chained as ``__cause__``.
Messages never carry secrets: they are built from settings, not from credentials.
"""

from __future__ import annotations

from typing import Any, ClassVar

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

    exit_code: ClassVar[int] = 10
    retryable: bool = False

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
        return data

    def __str__(self) -> str:
        return self.message


class ConfigError(MailConnectorError):
    """The configuration is wrong; nothing was tried on the network."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None,
                 source: str | None = None) -> None:
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.field = field
        self.source = source


class AuthenticationError(MailConnectorError):
    """The server refused the credentials. Retrying cannot help."""

    exit_code = 4


class TransportError(MailConnectorError, ConnectionError):
    """The connection could not be made or was lost. Worth retrying."""

    exit_code = 5
    retryable = True


class TLSSecurityError(TransportError):
    """TLS failed or the security policy refused the server (bad certificate, no STARTTLS)."""

    retryable = False


class ProtocolTimeoutError(TransportError, TimeoutError):
    """The server did not answer in time."""


class ServerResponseError(MailConnectorError):
    """The server answered with a refusal; ``code`` is the SMTP reply code (0 for IMAP ``NO``/``BAD``)."""

    exit_code = 6

    def __init__(self, message: str, *, code: int = 0, text: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.text = text

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return 400 <= self.code < 500

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.code:
            data["code"] = self.code
        return data


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
    """A record cannot become an email, or an email cannot become a record."""

    exit_code = 7

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, hint=hint)
        self.field = field


class StateError(MailConnectorError):
    """The local store (ledger, checkpoints, leases, logs) is unusable or held by another process."""

    exit_code = 8


class LeaseBusyError(StateError):
    """Another consumer holds the folder (or the operation) right now: wait for it, or try later."""
