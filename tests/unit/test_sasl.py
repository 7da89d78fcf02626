"""The SASL payloads for OAuth2 (XOAUTH2, RFC 7628 OAUTHBEARER) and the failure challenge, byte for byte."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, strategies as st

from mailconnector.auth.sasl import decode_oauth_error, oauthbearer_string, token_refused, xoauth2_string


def test_xoauth2_exact_bytes() -> None:
    assert xoauth2_string("alice@example.test", "tok.en") == b"user=alice@example.test\x01auth=Bearer tok.en\x01\x01"


def test_xoauth2_base64_vector() -> None:
    # Worked out by hand: "user=" U ^A "auth=Bearer " T ^A ^A, then standard base64 with padding.
    raw = xoauth2_string("bob@example.test", "eyJ0.eyJ1.c2ln")
    assert base64.b64encode(raw) == b"dXNlcj1ib2JAZXhhbXBsZS50ZXN0AWF1dGg9QmVhcmVyIGV5SjAuZXlKMS5jMmxuAQE="


def test_oauthbearer_exact_bytes() -> None:
    assert oauthbearer_string("alice@example.test", "tok", "imap.example.test", 993) == (
        b"n,a=alice@example.test,\x01host=imap.example.test\x01port=993\x01auth=Bearer tok\x01\x01"
    )


def test_oauthbearer_escapes_comma_and_equals_in_the_authzid() -> None:
    # RFC 5801 saslname: "=" becomes "=3D" and "," becomes "=2C" (the "=" first, so nothing is escaped twice).
    raw = oauthbearer_string("a=b,c@example.test", "tok", "h", 1)
    assert raw.startswith(b"n,a=a=3Db=2Cc@example.test,\x01")


def test_xoauth2_leaves_the_user_as_it_is() -> None:
    assert xoauth2_string("a=b,c@x", "t").startswith(b"user=a=b,c@x\x01")


@pytest.mark.parametrize("bad", ["\x01", "\r", "\n", "\0"])
@pytest.mark.parametrize("field", ["user", "token", "host"])
def test_control_characters_are_refused(bad: str, field: str) -> None:
    args = {"user": "alice@example.test", "token": "tok", "host": "h"}
    args[field] = f"x{bad}y"
    with pytest.raises(ValueError, match=f"{field} contains a control character"):
        oauthbearer_string(args["user"], args["token"], args["host"], 1)
    if field != "host":
        with pytest.raises(ValueError, match=field):
            xoauth2_string(args["user"], args["token"])


def _b64(data: dict[str, str]) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_decode_the_xoauth2_challenge_of_an_smtp_334_reply() -> None:
    challenge = _b64({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
    assert decode_oauth_error(challenge) == "status=401, scope=https://mail.google.com/, schemes=bearer"


def test_decode_without_padding_and_as_bytes() -> None:
    challenge = _b64({"status": "400"}).rstrip("=")
    assert decode_oauth_error(challenge.encode()) == "status=400"


def test_decode_an_already_decoded_imap_challenge() -> None:
    # imaplib base64-decodes the "+ ..." continuation before it calls the authenticator.
    assert decode_oauth_error(b'{"status":"invalid_token","scope":"mail"}') == "status=invalid_token, scope=mail"


def test_decode_keeps_the_error_field() -> None:
    assert decode_oauth_error(_b64({"status": "400", "error": "invalid_request"})) == \
        "status=400, error=invalid_request"


@pytest.mark.parametrize("garbage", ["", "   ", "not base64 at all!", _b64({"other": "x"}),
                                     base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b"\xff\xfe").decode(),
                                     "{not json", "x"])
def test_decode_returns_none_for_anything_else(garbage: str) -> None:
    assert decode_oauth_error(garbage) is None


@given(st.text())
def test_decode_never_raises(text: str) -> None:
    result = decode_oauth_error(text)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(("detail", "expected"), [
    ("status=401, scope=mail, schemes=bearer", True),  # XOAUTH2 (Dovecot, Google)
    ("status=invalid_token, scope=mail", True),  # OAUTHBEARER (RFC 7628)
    ("status=insufficient_scope, scope=mail", False),  # a new token would not help
    ("status=400", False),
    ("scope=401", False),
    ("", False),
    (None, False),
])
def test_token_refused(detail: str | None, expected: bool) -> None:
    assert token_refused(detail) is expected


@given(user=st.emails(), token=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_xoauth2_round_trip(user: str, token: str) -> None:
    raw = xoauth2_string(user, token)
    fields = raw.split(b"\x01")
    assert fields == [f"user={user}".encode(), f"auth=Bearer {token}".encode(), b"", b""]
