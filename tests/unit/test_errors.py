"""The error hierarchy: one exit code per family, the builtin bases callers rely on, and ``to_dict``."""

from __future__ import annotations

import json

import pytest

from mailconnector import errors
from mailconnector.cli._exit_codes import exit_code_for, exit_code_of_kind
from mailconnector.errors import (
    AuthenticationError,
    ConfigError,
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


@pytest.mark.parametrize(("cls", "code"), [
    (MailConnectorError, 10), (ConfigError, 3), (AuthenticationError, 4), (TransportError, 5),
    (TLSSecurityError, 5), (ProtocolTimeoutError, 5), (ServerResponseError, 6), (SenderRefusedError, 6),
    (RecipientsRefusedError, 6), (MessageError, 7), (StateError, 8),
])
def test_each_family_has_its_exit_code(cls: type[MailConnectorError], code: int) -> None:
    assert exit_code_for(cls) == code


def test_exit_codes_of_the_families_are_distinct() -> None:
    families: list[type[MailConnectorError]] = [ConfigError, AuthenticationError, TransportError,
                                                ServerResponseError, MessageError, StateError]
    codes = [exit_code_for(f) for f in families]
    assert codes == [3, 4, 5, 6, 7, 8]
    assert exit_code_for(MailConnectorError) not in codes
    # 0, 1 and 2 belong to the CLI itself.
    assert not {0, 1, 2} & set(codes)


def test_exit_codes_are_the_command_lines_not_the_librarys() -> None:
    """A worker or the web console gets errors without command-line notions on them."""
    assert not hasattr(MailConnectorError("x"), "exit_code")
    from mailconnector.smtp import MayHaveBeenDelivered  # a subclass outside errors.py: its family decides

    assert exit_code_for(MayHaveBeenDelivered("x")) == 5 and exit_code_for(ValueError("x")) == 10
    assert exit_code_of_kind("LimitError") == 6 and exit_code_of_kind("MayHaveBeenDelivered") == 5
    assert exit_code_of_kind("NoSuchError") is None


def test_every_exported_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, MailConnectorError), name


def test_builtin_bases() -> None:
    assert issubclass(TransportError, ConnectionError)
    assert issubclass(TLSSecurityError, ConnectionError)
    assert issubclass(ProtocolTimeoutError, TimeoutError)
    assert issubclass(ProtocolTimeoutError, TransportError)
    assert issubclass(MessageError, ValueError)
    assert not issubclass(AuthenticationError, ConnectionError)
    try:
        raise ProtocolTimeoutError("no answer")
    except TimeoutError as exc:  # an ``except TimeoutError`` catches ours
        assert isinstance(exc, OSError)


def test_retryable() -> None:
    assert TransportError("x").retryable
    assert ProtocolTimeoutError("x").retryable
    assert not TLSSecurityError("x").retryable
    assert not AuthenticationError("x").retryable
    assert not ConfigError("x").retryable
    assert ServerResponseError("x", code=451).retryable
    assert not ServerResponseError("x", code=550).retryable
    assert not ServerResponseError("x").retryable  # IMAP NO: code 0


@pytest.mark.parametrize("exc", [
    ConfigError("bad port", field="smtp.port", source="mailconnector.yaml", hint="use 465"),
    AuthenticationError("refused", hint="check the password"),
    TransportError("lost"),
    TLSSecurityError("untrusted", hint="tls.ca_file"),
    ProtocolTimeoutError("slow"),
    ServerResponseError("no", code=554, text="5.7.1 denied"),
    SenderRefusedError("sender", code=553),
    RecipientsRefusedError("all refused", refused={"a@x.test": (550, "no such user")}),
    MessageError("bad address", field="to[0]"),
    StateError("locked"),
])
def test_to_dict(exc: MailConnectorError) -> None:
    data = exc.to_dict()
    assert data["type"] == type(exc).__name__
    assert data["message"] == str(exc) == exc.message
    assert data["retryable"] is exc.retryable
    assert ("hint" in data) is bool(exc.hint)
    json.dumps(data)  # JSON-ready


def test_config_error_names_source_and_field() -> None:
    err = ConfigError("must be 1 to 65535", field="connections.a.smtp.port", source="p.yaml")
    assert str(err) == "p.yaml: connections.a.smtp.port: must be 1 to 65535"
    assert err.field == "connections.a.smtp.port" and err.source == "p.yaml"
    assert str(ConfigError("plain")) == "plain"


def test_server_response_error_carries_the_code() -> None:
    err = ServerResponseError("refused", code=452, text="4.3.1 insufficient storage")
    assert err.to_dict()["code"] == 452
    assert err.text == "4.3.1 insufficient storage"
    assert "code" not in ServerResponseError("imap no").to_dict()


def test_recipients_refused_is_temporary_only_if_every_refusal_was() -> None:
    temporary = RecipientsRefusedError("x", refused={"a@x": (450, "busy"), "b@x": (451, "later")})
    assert temporary.retryable
    mixed = RecipientsRefusedError("x", refused={"a@x": (450, "busy"), "b@x": (550, "no user")})
    assert not mixed.retryable and mixed.code == 550
    assert mixed.refused["b@x"] == (550, "no user")
    assert "no user" in mixed.text


def test_message_error_names_the_field() -> None:
    err = MessageError("not an address", field="to[0]")
    assert str(err) == "to[0]: not an address" and err.field == "to[0]"
