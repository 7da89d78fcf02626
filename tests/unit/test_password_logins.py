"""Password logins as SASL exchanges: the bytes each mechanism sends (RFC examples where the RFC gives one),
UTF-8 throughout, the choice among what a server offers, and a SCRAM round trip against scramp's server
side, including a server that cannot prove it knows the password."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import scramp

from mailconnector._net import greeting_protocol
from mailconnector._steps import shorten
from mailconnector.auth._password import ExchangeFailed, PasswordExchange, choose_mechanism

AWKWARD = 'pä"ss\\wörd {5}'


def test_plain_is_utf8_with_nul_separators() -> None:
    exchange = PasswordExchange("PLAIN", "jörg@example.test", AWKWARD)
    assert exchange.has_initial_response
    assert exchange(b"") == b"\0j\xc3\xb6rg@example.test\0" + AWKWARD.encode("utf-8")


def test_login_answers_the_prompt_it_is_given() -> None:
    exchange = PasswordExchange("LOGIN", "ann", "密码")
    assert not exchange.has_initial_response
    assert exchange(b"Username:") == b"ann"
    assert exchange(b"Password:") == "密码".encode()
    # A server with other prompts: the user first, then the password.
    other = PasswordExchange("LOGIN", "ann", "x")
    assert (other(b"?"), other(b"?")) == (b"ann", b"x")


def test_cram_md5_matches_the_rfc_2195_example_and_takes_utf8() -> None:
    exchange = PasswordExchange("CRAM-MD5", "tim", "tanstaaftanstaaf")
    assert exchange(b"<1896.697170952@postoffice.reston.mci.net>") == b"tim b913a602c7eda7a495b4e6e7334d3890"
    utf8 = PasswordExchange("CRAM-MD5", "tim", "tänstaaf")(b"<1@x>")
    assert utf8.startswith(b"tim ") and len(utf8) == 4 + 32


@pytest.mark.parametrize("name", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("password", [AWKWARD, "пароль", "plain"])
def test_scram_round_trip_against_a_real_scram_server(name: str, password: str) -> None:
    mechanism = scramp.ScramMechanism(name)
    salt, stored, server_key, iterations = mechanism.make_auth_info(password, iteration_count=4096)
    server = mechanism.make_server(lambda _user: (salt, stored, server_key, iterations))
    exchange = PasswordExchange(name, "user=,name", password)
    server.set_client_first(exchange(b"").decode())
    server.set_client_final(exchange(server.get_server_first().encode()).decode())
    assert not exchange.complete
    assert exchange(server.get_server_final().encode()) == b""
    assert exchange.complete


def scram_half_way(server_password: str, client_password: str) -> tuple[Any, PasswordExchange, bytes]:
    """A scramp server knowing ``server_password`` and our exchange, up to the client-final message."""
    mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
    info = mechanism.make_auth_info(server_password, iteration_count=4096)
    server = mechanism.make_server(lambda _user: info)
    exchange = PasswordExchange("SCRAM-SHA-256", "user", client_password)
    server.set_client_first(exchange(b"").decode())
    return server, exchange, exchange(server.get_server_first().encode())


def test_scram_refuses_a_server_that_does_not_know_the_password() -> None:
    server, exchange, final = scram_half_way("another password", "the password")
    with pytest.raises(scramp.ScramException):
        server.set_client_final(final.decode())  # the server sees a wrong proof...
    forged = base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(ExchangeFailed, match="SCRAM-SHA-256"):
        exchange(f"v={forged}".encode())  # ...and the client a signature no one with the password made


@pytest.mark.parametrize("server_first", [b"", b"garbage", b"r=other-nonce,s=c2FsdA==,i=4096", b"\xff\xfe",
                                          b"e=unknown-user"])
def test_a_hostile_scram_server_first_message_is_a_refusal(server_first: bytes) -> None:
    """Not a crash: a nonce that does not extend ours, a missing salt, bytes that are not UTF-8, an error."""
    exchange = PasswordExchange("SCRAM-SHA-256", "user", "pw")
    exchange(b"")
    with pytest.raises(ExchangeFailed):
        exchange(server_first)


@pytest.mark.parametrize("bad", ["a\0b", "a\r\nb"])
def test_control_characters_are_refused_before_anything_is_sent(bad: str) -> None:
    with pytest.raises(ValueError, match="NUL, CR or LF"):
        PasswordExchange("PLAIN", "user", bad)
    with pytest.raises(ValueError, match="not a password mechanism"):
        PasswordExchange("XOAUTH2", "user", "x")


@pytest.mark.parametrize(("offered", "chosen"), [
    (["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"], "PLAIN"),
    (["LOGIN", "CRAM-MD5"], "LOGIN"),
    (["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"], "SCRAM-SHA-256"),
    (["plain", "cram-md5"], "PLAIN"),
    (["CRAM-MD5"], "CRAM-MD5"),  # Exim's plain port offers only CRAM-MD5
    (["XOAUTH2", "GSSAPI", "NTLM"], None),
    ([], None),
])
def test_the_mechanism_chosen_among_those_offered(offered: list[str], chosen: str | None) -> None:
    """The clear mechanisms first (they work with any password store); challenge-response where none is."""
    assert choose_mechanism(offered) == chosen


@pytest.mark.parametrize(("mechanism", "steps"), [("PLAIN", 1), ("LOGIN", 2), ("CRAM-MD5", 1)])
def test_a_server_that_keeps_asking_gets_no_more_credentials(mechanism: str, steps: int) -> None:
    exchange = PasswordExchange(mechanism, "user", "pw")
    for _ in range(steps):
        exchange(b"Password:")
    with pytest.raises(ExchangeFailed, match="asked for more"):
        exchange(b"Password:")


def test_a_scram_error_from_the_server_reads_as_a_refusal() -> None:
    """RFC 5802 ``e=invalid-proof`` is the server saying no (a wrong password), not a server to distrust."""
    _server, exchange, _final = scram_half_way("right", "wrong")
    with pytest.raises(ExchangeFailed) as caught:
        exchange(b"e=invalid-proof")
    assert caught.value.refused


@pytest.mark.parametrize("password", ["tab\there", "\U000e0001tag"])
def test_a_password_saslprep_refuses_cannot_go_by_scram(password: str) -> None:
    with pytest.raises(ValueError, match="SCRAM-SHA-256 cannot carry"):
        PasswordExchange("SCRAM-SHA-256", "user", password)
    assert PasswordExchange("PLAIN", "user", password)(b"").endswith(password.encode())


@pytest.mark.parametrize(("first", "protocol"), [
    (b"220 mail.example.test ESMTP Postfix\r\n", "SMTP"),
    (b"421 4.3.2 Service shutting down\r\n", "SMTP"),
    (b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n", "IMAP"),
    ("[CAPABILITY IMAP4rev1 LITERAL+] server ready", "IMAP"),  # smtplib keeps what follows "* OK"
    (b"* BYE Too many connections\r\n", "IMAP"),
    (b"+OK Dovecot ready.\r\n", "POP3"),
    (b"+OK POP3/IMAP4 server ready\r\n", "POP3"),
    ("The Microsoft Exchange IMAP4 service is ready.", "IMAP"),
    (b"HTTP/1.1 400 Bad Request\r\n", None),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "SSH"),
    (b"\xff\xfe garbage", None),
    (b"", None),
])
def test_another_protocols_greeting_is_recognised(first: bytes | str, protocol: str | None) -> None:
    assert greeting_protocol(first) == protocol


def test_a_long_detail_is_cut_between_words() -> None:
    greeting = "220 " + " ".join(["word"] * 40)
    cut = shorten(greeting)
    assert len(cut) <= 120 and cut.endswith("word…")
    assert shorten("short  text\r\n") == "short text"
    assert shorten("x" * 200).endswith("…") and len(shorten("x" * 200)) == 120
