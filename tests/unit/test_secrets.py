"""Secret references (${env:NAME}, ${file:PATH}) and the redaction of known secret values."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

import pytest

from mailconnector import secrets
from mailconnector.logs import RedactingFormatter, redact_imap_line, redact_smtp_line
from mailconnector.project import Project


def unique_secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex[:12]}"


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    value = unique_secret()
    monkeypatch.setenv("MC_SECRET_TEST", value)
    assert secrets.resolve("${env:MC_SECRET_TEST}") == value
    assert secrets.resolve("  ${env: MC_SECRET_TEST }  ") == value
    assert value not in secrets.redact(f"the value is {value}")


def test_env_reference_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MC_SECRET_MISSING", raising=False)
    with pytest.raises(secrets.SecretReferenceError, match="MC_SECRET_MISSING is not set"):
        secrets.resolve("${env:MC_SECRET_MISSING}")


def test_empty_env_value_is_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MC_SECRET_EMPTY", "")
    assert secrets.resolve("${env:MC_SECRET_EMPTY}") == ""


def test_file_reference_relative_to_the_base_dir(tmp_path: Path) -> None:
    value = unique_secret()
    (tmp_path / "pw.txt").write_text(value + "\r\n")  # the trailing line end is not part of the secret
    assert secrets.resolve("${file:pw.txt}", base_dir=tmp_path) == value
    assert secrets.resolve(f"${{file:{tmp_path / 'pw.txt'}}}") == value
    assert value not in secrets.redact(value)


def test_file_reference_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(secrets.SecretReferenceError, match="does not exist"):
        secrets.resolve("${file:nope.txt}", base_dir=tmp_path)
    (tmp_path / "adir").mkdir()
    with pytest.raises(secrets.SecretReferenceError, match="cannot be read"):
        secrets.resolve("${file:adir}", base_dir=tmp_path)


@pytest.mark.parametrize("ref", ["${env:}", "${file:}", "${env:X", "prefix-${env:X}", "${vault:X}"])
def test_malformed_references(ref: str) -> None:
    with pytest.raises(secrets.SecretReferenceError):
        secrets.resolve(ref)


def test_is_reference() -> None:
    assert secrets.is_reference("${env:A}") and secrets.is_reference("${file:/x/y}")
    assert not secrets.is_reference("plain") and not secrets.is_reference("$env:A")


def test_literal_values_are_remembered_too() -> None:
    value = unique_secret()
    assert secrets.resolve(value) == value
    assert secrets.redact(f"x{value}y") == f"x{secrets.REDACTED}y"


def test_redact_removes_the_value_and_its_base64_in_any_alignment() -> None:
    value = unique_secret()
    secrets.register_secret(value)
    raw = value.encode()
    samples = {
        "plain": f"PASS {value}",
        "b64": base64.b64encode(raw).decode(),
        "auth plain": base64.b64encode(b"\0alice@example.test\0" + raw).decode(),
        "auth plain, other user": base64.b64encode(b"\0bo\0" + raw).decode(),
        "login": base64.b64encode(b"x" + raw + b"yz").decode(),
        "xoauth2": base64.b64encode(b"user=a@b\x01auth=Bearer " + raw + b"\x01\x01").decode(),
    }
    for kind, text in samples.items():
        out = secrets.redact(f"C: AUTH PLAIN {text} trailing")
        assert value not in out, kind
        assert secrets.REDACTED in out, kind
        assert base64.b64encode(raw).decode().rstrip("=") not in out, kind
        assert out.endswith(" trailing")


def test_redact_leaves_ordinary_text_alone() -> None:
    secrets.register_secret("abc")  # too short to redact safely: ignored
    text = "abc 220 mail.example.test ESMTP; 250-AUTH PLAIN LOGIN"
    assert secrets.redact(text) == text
    assert secrets.redact("") == ""


def test_project_file_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``${file:}`` is relative to the project file's directory, not to the current directory."""
    env_value, file_value = unique_secret(), unique_secret()
    monkeypatch.setenv("MC_PROJECT_PW", env_value)
    sub = tmp_path / "proj"
    (sub / "secrets").mkdir(parents=True)
    (sub / "secrets" / "pw").write_text(file_value)
    (sub / "mailconnector.yaml").write_text(
        "connections:\n"
        "  by-env:\n"
        "    auth: {username: a@example.test, password: '${env:MC_PROJECT_PW}'}\n"
        "    smtp: {host: 127.0.0.1, port: 10465}\n"
        "    imap: {host: 127.0.0.1, port: 10993}\n"
        "  by-file:\n"
        "    auth: {username: a@example.test, password: '${file:secrets/pw}'}\n"
        "    smtp: {host: 127.0.0.1, port: 10465}\n"
        "    imap: {host: 127.0.0.1, port: 10993}\n"
    )
    monkeypatch.chdir(tmp_path)
    project = Project.load(sub / "mailconnector.yaml")
    env_pw = project.connection("by-env").auth.password
    file_pw = project.connection("by-file").auth.password
    assert env_pw is not None and env_pw.get_secret_value() == env_value
    assert file_pw is not None and file_pw.get_secret_value() == file_value


def test_redacting_formatter_removes_secrets_from_messages_and_tracebacks() -> None:
    value = unique_secret()
    secrets.register_secret(value)
    try:
        raise RuntimeError(f"boom {value}")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("mailconnector.test", logging.ERROR, __file__, 1, "login with %s", (value,), exc_info)
    for fmt in (RedactingFormatter(), RedactingFormatter(json_lines=True)):
        out = fmt.format(record)
        assert value not in out
        assert "login with ****" in out


@pytest.mark.parametrize(("line", "in_auth", "shown"), [
    ("AUTH PLAIN AGFsaWNlAHNlY3JldA==", False, "AUTH PLAIN ****"),
    ("auth login", False, "auth login"),
    ("c2VjcmV0", True, "****"),
    ("MAIL FROM:<a@example.test>", False, "MAIL FROM:<a@example.test>"),
])
def test_smtp_line_redaction(line: str, in_auth: bool, shown: str) -> None:
    assert redact_smtp_line(line, in_auth=in_auth) == shown


@pytest.mark.parametrize(("line", "shown"), [
    ('a001 LOGIN alice "secret"', "a001 LOGIN ****"),
    ("a002 AUTHENTICATE XOAUTH2 dXNlcj1...", "a002 AUTHENTICATE ****"),
    ("a003 SELECT INBOX", "a003 SELECT INBOX"),
])
def test_imap_line_redaction(line: str, shown: str) -> None:
    assert redact_imap_line(line) == shown
