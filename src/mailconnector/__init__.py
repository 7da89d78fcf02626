"""mailconnector: an email connector for integration work.

The public API is exactly the names in ``__all__`` (pinned by a test); every module is internal.
Names are imported on first use, so ``import mailconnector`` and the CLI start quickly.

    from mailconnector import Connection, SendEmail, ReadEmail, diagnose

    conn = Connection.from_dict({...}, name="support")
    diagnose(conn)                                     # the step-by-step connection Test
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
    "diagnose": "diagnostics",
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

# Derived from the table above: a name is public once it is listed there (a test pins the set). The typing
# block at the end gives type checkers the same names, each re-exported explicitly ("import X as X"),
# since they cannot read a computed __all__; a test checks that it matches the table.
__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mailconnector' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # the names of _EXPORTS, for type checkers and editors
    from .activities.read import (
        Criteria as Criteria,
        ReadEmail as ReadEmail,
        ReadItem as ReadItem,
        ReadSettings as ReadSettings,
    )
    from .activities.send import SendEmail as SendEmail, SendSettings as SendSettings
    from .connection import (
        AuthSettings as AuthSettings,
        Connection as Connection,
        OAuth2Settings as OAuth2Settings,
        ServerSettings as ServerSettings,
        Timeouts as Timeouts,
        TlsSettings as TlsSettings,
    )
    from .diagnostics import TestReport as TestReport, diagnose as diagnose
    from .errors import (
        AuthenticationError as AuthenticationError,
        ConfigError as ConfigError,
        LeaseBusyError as LeaseBusyError,
        LimitError as LimitError,
        MailConnectorError as MailConnectorError,
        MessageError as MessageError,
        ProtocolTimeoutError as ProtocolTimeoutError,
        RecipientsRefusedError as RecipientsRefusedError,
        SenderRefusedError as SenderRefusedError,
        ServerResponseError as ServerResponseError,
        StateError as StateError,
        TLSSecurityError as TLSSecurityError,
        TransportError as TransportError,
    )
    from .imap import ImapSession as ImapSession
    from .logs import configure_logging as configure_logging
    from .mime.compose import compose as compose
    from .mime.parse import parse_message as parse_message
    from .operations import RunResult as RunResult, run_operation as run_operation, watch_operation as watch_operation
    from .project import Project as Project
    from .records.read import ParseOptions as ParseOptions, ReadRecord as ReadRecord
    from .records.send import SendDefaults as SendDefaults, SendRequest as SendRequest, SendResponse as SendResponse
    from .sandbox import Sandbox as Sandbox
    from .smtp import SmtpSession as SmtpSession
    from .state import StateStore as StateStore, Store as Store
