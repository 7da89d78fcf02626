"""The public API is exactly ``mailconnector.__all__``: pinned here, every name importable, imported lazily."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import mailconnector

PUBLIC = {
    # connection and the Test
    "Connection", "AuthSettings", "OAuth2Settings", "ServerSettings", "TlsSettings", "Timeouts", "TestReport",
    "diagnose",
    # sessions
    "SmtpSession", "ImapSession",
    # activities and records
    "SendEmail", "SendSettings", "ReadEmail", "ReadSettings", "ReadItem", "Criteria",
    "SendRequest", "SendDefaults", "SendResponse", "ReadRecord", "ParseOptions", "compose", "parse_message",
    # projects, state, logging, sandbox
    "Project", "StateStore", "Store", "Sandbox", "configure_logging",
    "RunResult", "run_operation", "watch_operation",
    # errors
    "MailConnectorError", "ConfigError", "AuthenticationError", "TransportError", "TLSSecurityError",
    "ProtocolTimeoutError", "ServerResponseError", "SenderRefusedError", "RecipientsRefusedError",
    "MessageError", "StateError", "LeaseBusyError", "LimitError",
    "__version__",
}


def test_all_is_pinned() -> None:
    """A change to the public API must be deliberate: update this list with it."""
    assert set(mailconnector.__all__) == PUBLIC
    assert len(mailconnector.__all__) == len(set(mailconnector.__all__))
    assert sorted(mailconnector.__all__) == list(mailconnector.__all__)


@pytest.mark.parametrize("name", sorted(PUBLIC - {"__version__"}))
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(mailconnector, name)
    assert value is not None
    assert inspect.isclass(value) or callable(value)
    assert getattr(value, "__module__", "").startswith("mailconnector")
    assert name in dir(mailconnector)


def test_errors_are_the_same_objects_as_in_errors_module() -> None:
    from mailconnector import errors

    for name in errors.__all__:
        assert getattr(mailconnector, name) is getattr(errors, name)


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = mailconnector.Nope


def test_version() -> None:
    assert isinstance(mailconnector.__version__, str) and mailconnector.__version__.count(".") >= 1


def test_import_is_lazy() -> None:
    """``import mailconnector`` loads no submodule and no heavy dependency until a name is used."""
    code = (
        "import sys, mailconnector\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('mailconnector.'))\n"
        "heavy = sorted(m for m in ('pydantic', 'imapclient', 'smtplib', 'typer', 'rich', 'msal', 'httpx')"
        " if m in sys.modules)\n"
        "print(loaded, heavy)\n"
        "mailconnector.Connection\n"
        "print('mailconnector.connection' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, second = out.splitlines()
    assert first == "[] []"
    assert second == "True"


def test_sessions_load_no_login_library_they_may_not_need() -> None:
    """SCRAM (``scramp``) and the OAuth2 clients cost every start tens of milliseconds: loaded on use only."""
    code = (
        "import sys, mailconnector.smtp, mailconnector.imap, mailconnector.activities.read\n"
        "print(sorted(m for m in ('scramp', 'msal', 'httpx', 'asn1crypto') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_typing_block_matches_the_table() -> None:
    """``__all__`` comes from one table (``_EXPORTS``); type checkers read the typing block instead, so the two
    must name the same things from the same modules, each re-exported as ``import X as X``."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(mailconnector.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    typed: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} is not re-exported explicitly"
            typed[alias.name] = node.module
    assert typed == mailconnector._EXPORTS
