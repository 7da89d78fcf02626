"""mailconnector: an email connector for integration work.

The public API is exactly the names in ``__all__`` (pinned by a test); every module is internal.
Names are imported on first use, so ``import mailconnector`` and the CLI start quickly.

    from mailconnector import Connection, SendEmail, ReadEmail

    conn = Connection.from_dict({...}, name="support")
    conn.test()                                        # the step-by-step connection Test
    for response in SendEmail(conn).send(records): ...
    with ReadEmail(conn, store=Store("state.db")) as reader:
        for item in reader:
            deliver(item.record)
            item.ack()                                 # only now is the email marked read
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # connection
    "Connection": "connection",
    "AuthSettings": "connection",
    "OAuth2Settings": "connection",
    "ServerSettings": "connection",
    "TlsSettings": "connection",
    "Timeouts": "connection",
    "TestReport": "diagnostics",
    # sessions
    "SmtpSession": "smtp",
    "ImapSession": "imap",
    # activities and records
    "SendEmail": "activities.send",
    "SendSettings": "activities.send",
    "ReadEmail": "activities.read",
    "ReadSettings": "activities.read",
    "ReadItem": "activities.read",
    "Criteria": "activities.read",
    "SendRequest": "records.send",
    "SendDefaults": "records.send",
    "SendResponse": "records.send",
    "ReadRecord": "records.read",
    "ParseOptions": "records.read",
    "compose": "mime.compose",
    "parse_message": "mime.parse",
    # projects, operations, state, logging, sandbox
    "Project": "project",
    "RunResult": "operations",
    "run_operation": "operations",
    "watch_operation": "operations",
    "StateStore": "state",
    "Store": "state",
    "Sandbox": "sandbox",
    "configure_logging": "logs",
    # errors
    "MailConnectorError": "errors",
    "ConfigError": "errors",
    "AuthenticationError": "errors",
    "TransportError": "errors",
    "TLSSecurityError": "errors",
    "ProtocolTimeoutError": "errors",
    "ServerResponseError": "errors",
    "SenderRefusedError": "errors",
    "RecipientsRefusedError": "errors",
    "MessageError": "errors",
    "StateError": "errors",
    "LeaseBusyError": "errors",
    "LimitError": "errors",
}

__all__ = [
    "AuthSettings",
    "AuthenticationError",
    "ConfigError",
    "Connection",
    "Criteria",
    "ImapSession",
    "LeaseBusyError",
    "LimitError",
    "MailConnectorError",
    "MessageError",
    "OAuth2Settings",
    "ParseOptions",
    "Project",
    "ProtocolTimeoutError",
    "ReadEmail",
    "ReadItem",
    "ReadRecord",
    "ReadSettings",
    "RecipientsRefusedError",
    "RunResult",
    "Sandbox",
    "SendDefaults",
    "SendEmail",
    "SendRequest",
    "SendResponse",
    "SendSettings",
    "SenderRefusedError",
    "ServerResponseError",
    "ServerSettings",
    "SmtpSession",
    "StateError",
    "StateStore",
    "Store",
    "TLSSecurityError",
    "TestReport",
    "Timeouts",
    "TlsSettings",
    "TransportError",
    "__version__",
    "compose",
    "configure_logging",
    "parse_message",
    "run_operation",
    "watch_operation",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mailconnector' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .activities.read import Criteria, ReadEmail, ReadItem, ReadSettings
    from .activities.send import SendEmail, SendSettings
    from .connection import AuthSettings, Connection, OAuth2Settings, ServerSettings, Timeouts, TlsSettings
    from .diagnostics import TestReport
    from .errors import (
        AuthenticationError,
        ConfigError,
        LeaseBusyError,
        LimitError,
        MailConnectorError,
        MessageError,
        ProtocolTimeoutError,
        RecipientsRefusedError,
        SenderRefusedError,
        ServerResponseError,
        StateError,
        TLSSecurityError,
        TransportError,
    )
    from .imap import ImapSession
    from .logs import configure_logging
    from .mime.compose import compose
    from .mime.parse import parse_message
    from .operations import RunResult, run_operation, watch_operation
    from .project import Project
    from .records.read import ParseOptions, ReadRecord
    from .records.send import SendDefaults, SendRequest, SendResponse
    from .sandbox import Sandbox
    from .smtp import SmtpSession
    from .state import StateStore, Store
