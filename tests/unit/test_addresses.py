"""Address lists, single addresses, ids and header-safe text (mime/_addresses.py)."""

from __future__ import annotations

import email_validator
import pytest

from mailconnector.mime._addresses import (
    AddressError,
    check_header_text,
    forbidden_char,
    normalize_msg_id,
    parse_address,
    parse_msg_id_list,
    short,
    split_addresses,
)

# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@example.test", ["a@example.test"]),
        ("a@example.test, b@example.test", ["a@example.test", "b@example.test"]),
        ("a@example.test; b@example.test", ["a@example.test", "b@example.test"]),
        ('"Doe, Jane" <jane@example.test>, bob@example.test', ['"Doe, Jane" <jane@example.test>', "bob@example.test"]),
        (
            '"Say \\"hi\\", ok" <x@example.test>,y@example.test',
            ['"Say \\"hi\\", ok" <x@example.test>', "y@example.test"],
        ),
        ("a@example.test (Doe, Jane), b@example.test", ["a@example.test (Doe, Jane)", "b@example.test"]),
        ("a@example.test,,  ,b@example.test,", ["a@example.test", "b@example.test"]),
        ("", []),
        ("   ", []),
        ('"unterminated, a@example.test', ['"unterminated, a@example.test']),
    ],
)
def test_split_addresses(value: str, expected: list[str]) -> None:
    assert split_addresses(value) == expected


def test_split_refuses_line_breaks_even_between_items() -> None:
    with pytest.raises(AddressError, match="U\\+000A"):
        split_addresses("a@example.test,\nb@example.test")


# --------------------------------------------------------------------------- single addresses


def test_bare_address() -> None:
    parsed = parse_address("  jane@example.test ")
    assert (parsed.display_name, parsed.addr_spec, parsed.smtputf8) == ("", "jane@example.test", False)


def test_angle_address_without_name() -> None:
    assert parse_address("<jane@example.test>").addr_spec == "jane@example.test"
    assert parse_address("<jane@example.test>").display_name == ""


def test_display_name_kept_and_whitespace_collapsed() -> None:
    parsed = parse_address("Jane   Q.  Doe <jane@example.test>")
    assert parsed.display_name == "Jane Q. Doe"
    assert parsed.addr_spec == "jane@example.test"


def test_quoted_display_name_with_comma_and_escapes() -> None:
    parsed = parse_address('"Doe, \\"JJ\\" Jane" <jane@example.test>')
    assert parsed.display_name == 'Doe, "JJ" Jane'


def test_quoted_display_name_may_hold_an_at_sign() -> None:
    parsed = parse_address('"alice@example.org" <bob@example.com>')
    assert (parsed.display_name, parsed.addr_spec) == ("alice@example.org", "bob@example.com")


def test_unicode_display_name() -> None:
    assert parse_address("Jörg Müller <jorg@example.test>").display_name == "Jörg Müller"


def test_encoded_word_display_name_is_decoded_once() -> None:
    assert parse_address("=?utf-8?q?J=C3=B6rg?= <jorg@example.test>").display_name == "Jörg"


def test_domain_is_lowercased_and_idn_goes_to_ascii() -> None:
    parsed = parse_address("Bob@Exämple.TEST")
    assert parsed.addr_spec == "Bob@xn--exmple-cua.test"
    assert parsed.ascii_domain == "xn--exmple-cua.test"
    assert parsed.smtputf8 is False


def test_unicode_local_part_needs_smtputf8_and_stays_unicode() -> None:
    parsed = parse_address("jöhn@exämple.test")
    assert parsed.smtputf8 is True
    assert parsed.addr_spec == "jöhn@exämple.test"
    assert parsed.ascii_domain == "xn--exmple-cua.test"


@pytest.mark.parametrize(
    "address",
    [
        "a@example.test",
        "a@example.com",
        "a@mail.example",
        "a@x.invalid",
        "a@localhost",
        "a@host.localhost",
        "a@corp.local",
    ],
)
def test_special_use_domains_are_accepted(address: str) -> None:
    assert parse_address(address).addr_spec == address


def test_special_use_list_of_the_library_is_not_modified() -> None:
    before = list(email_validator.SPECIAL_USE_DOMAIN_NAMES)
    parse_address("a@x.invalid")
    assert before == email_validator.SPECIAL_USE_DOMAIN_NAMES
    # And the library itself still refuses it for everybody else in the process.
    with pytest.raises(email_validator.EmailNotValidError):
        email_validator.validate_email("a@x.invalid", check_deliverability=False)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("bob@@example", "not a valid address"),
        ("no-at-sign", "not a valid address"),
        ("a@nodot", "not a valid address"),
        ("a b@example.test", "not a valid address"),
        ("Name <a@example.test> junk", "unbalanced"),
        ("alice@example.org <bob@example.com>", "double quotes"),
        ("Team: Sales <a@example.test>", "double quotes"),
        ('"unterminated <a@example.test>', "unbalanced"),
        ('"Name" extra <a@example.test>', "outside the quoted"),
        ("Na\"me <a@example.test>", "unbalanced"),
        ("Na\"m\"e <a@example.test>", "stray quote"),
        ("<a@example.test", "unbalanced"),
        ("<<a@example.test>>", "more than one"),
        ("", "empty"),
        ("a@example.test\r\nBcc: evil@example.test", "U+000D"),
        ("Jane\x00 <a@example.test>", "U+0000"),
        ("Jane\u2028 <a@example.test>", "U+2028"),
    ],
)
def test_invalid_addresses(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason.replace("+", "\\+")):
        parse_address(text)


def test_error_quotes_a_shortened_input() -> None:
    with pytest.raises(AddressError) as info:
        parse_address("x" * 500)
    assert len(str(info.value)) < 300
    assert "…" in str(info.value)


# --------------------------------------------------------------------------- header text and ids


def test_check_header_text_allows_tab_and_unicode() -> None:
    assert check_header_text("a\tb ünï ✿") == "a\tb ünï ✿"


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"])
def test_forbidden_characters(char: str) -> None:
    assert forbidden_char(f"a{char}b") == f"U+{ord(char):04X}"
    with pytest.raises(AddressError):
        check_header_text(f"a{char}b")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc@example.test", "<abc@example.test>"), ("<abc@example.test>", "<abc@example.test>"),
     ("  <a.b+c@x>  ", "<a.b+c@x>")],
)
def test_normalize_msg_id(value: str, expected: str) -> None:
    assert normalize_msg_id(value, require_at=True) == expected


@pytest.mark.parametrize("value", ["", "<>", "a b@x", "a<b@x", "nohost", "@x", "a@", "a@b@c", "ü@x"])
def test_invalid_message_ids(value: str) -> None:
    with pytest.raises(AddressError):
        normalize_msg_id(value, require_at=True)


def test_overlong_id_is_refused() -> None:
    with pytest.raises(AddressError, match="at most 900"):
        normalize_msg_id("a" * 1000 + "@x", require_at=True)


def test_reference_ids_need_no_at_sign() -> None:
    assert normalize_msg_id("legacy-id", require_at=False) == "<legacy-id>"


def test_msg_id_refuses_line_breaks() -> None:
    with pytest.raises(AddressError, match="U\\+000A"):
        normalize_msg_id("a@b\n", require_at=False)


def test_msg_id_list_from_string_and_list() -> None:
    assert parse_msg_id_list("<a@x> b@x,\t<c@x>") == ["<a@x>", "<b@x>", "<c@x>"]
    assert parse_msg_id_list(["a@x", " <b@x> ", ""]) == ["<a@x>", "<b@x>"]


def test_short_truncates() -> None:
    assert short("abc") == "'abc'"
    assert len(short("x" * 200)) == 80
