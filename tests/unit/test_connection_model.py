"""The Connection model: hostile and mistaken configuration is refused with a ConfigError naming the field;
presets fill what is not given; the password never shows in repr() or str()."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mailconnector.cli._exit_codes import exit_code_for
from mailconnector.connection import PRESETS, Connection
from mailconnector.errors import ConfigError

PASSWORD = "Sup3r-Secret-Passw0rd"


def base() -> dict[str, Any]:
    return {
        "auth": {"type": "basic", "username": "alice@example.test", "password": PASSWORD},
        "smtp": {"host": "mail.example.test", "port": 587, "security": "starttls"},
        "imap": {"host": "mail.example.test", "port": 993, "security": "ssl"},
    }


def refused(data: dict[str, Any], name: str = "support") -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        Connection.from_dict(data, name=name)
    err = ei.value
    assert exit_code_for(err) == 3
    assert PASSWORD not in str(err) and PASSWORD not in repr(err.to_dict())
    return err


def with_(path: str, value: Any) -> dict[str, Any]:
    data = base()
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


def test_a_valid_connection() -> None:
    conn = Connection.from_dict(base(), name="support")
    assert conn.name == "support"
    assert conn.smtp is not None and conn.smtp.port == 587
    assert conn.auth.password is not None and conn.auth.password.get_secret_value() == PASSWORD
    assert conn.smtp_login() == conn.imap_login() == "alice@example.test"
    assert conn.tls.verify is True
    assert conn.timeouts.connect > 0 and conn.timeouts.command > 0


@pytest.mark.parametrize("host", ["mail.example.test\r\nRCPT TO:<x@y>", "a\nb", "a\rb", "a\tb", "a b", "a\0b"])
def test_control_characters_in_a_host(host: str) -> None:
    err = refused(with_("smtp.host", host))
    assert "smtp.host" in err.message


@pytest.mark.parametrize("host", ["", "  ", "-bad.example", "bad..example", "a" * 64 + ".example"])
def test_bad_host_names(host: str) -> None:
    assert "imap.host" in refused(with_("imap.host", host)).message


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "mail.example.test", "localhost",
                                  "xn--bcher-kva.example", "bücher.example"])
def test_good_host_names(host: str) -> None:
    conn = Connection.from_dict(with_("smtp.host", host), name="c")
    assert conn.smtp is not None and conn.smtp.host == host.strip("[]")


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_port_out_of_range(port: int) -> None:
    err = refused(with_("smtp.port", port))
    assert "smtp.port" in err.message
    assert "1 to 65535" in err.message


@pytest.mark.parametrize(("port", "words"), [("abc", "valid integer"), (25.5, "fractional"), ([587], "integer"),
                                             (True, "not true/false")])
def test_port_of_the_wrong_type(port: Any, words: str) -> None:
    err = refused(with_("imap.port", port))
    assert "imap.port" in err.message and words in err.message


def test_a_list_where_a_mapping_is_expected() -> None:
    err = refused(with_("smtp", ["mail.example.test", 587]))
    assert "smtp" in err.message and "dictionary" in err.message


def test_a_string_where_a_mapping_is_expected() -> None:
    assert "auth" in refused(with_("auth", "alice:secret")).message


def test_unknown_field_at_top_level() -> None:
    err = refused(with_("hostname", "x"))
    assert "connections.support.hostname: unknown field" in err.message


@pytest.mark.parametrize("path", ["smtp.hots", "tls.verfy", "auth.passwd", "timeouts.read"])
def test_unknown_nested_field(path: str) -> None:
    err = refused(with_(path, 1))
    assert f"connections.support.{path}: unknown field" in err.message


def test_several_problems_are_all_named() -> None:
    data = with_("smtp.port", 0)
    data["imap"]["bogus"] = 1
    err = refused(data)
    assert "2 problems" in err.message
    assert "smtp.port" in err.message and "imap.bogus" in err.message


@pytest.mark.parametrize(("proto", "port", "security", "words"), [
    ("smtp", 993, "ssl", "smtp.port: 993 is the IMAP over TLS port; SMTP over TLS uses 465"),
    ("imap", 465, "ssl", "imap.port: 465 is the SMTP over TLS port; IMAP over TLS uses 993"),
    ("imap", 587, "starttls", "imap.port: 587 is the SMTP submission port"),
    ("smtp", 143, "none", "smtp.port: 143 is the IMAP port"),
    ("smtp", 587, "ssl", "smtp.port: 587 is the SMTP submission port (STARTTLS), which does not speak TLS at once"),
    ("smtp", 465, "starttls", "smtp.port: 465 is the SMTP over TLS port (implicit TLS); set security: ssl"),
    ("imap", 993, "none", "imap.port: 993 is the IMAP over TLS port (implicit TLS); set security: ssl"),
    ("imap", 143, "ssl", "imap.port: 143 is the IMAP port (plain or STARTTLS), which does not speak TLS at once"),
])
def test_well_known_ports_that_contradict_the_setting(proto: str, port: int, security: str, words: str) -> None:
    data = base()
    data[proto] = {"host": "mail.example.test", "port": port, "security": security}
    assert words in refused(data).message


@pytest.mark.parametrize(("proto", "port", "security"), [("smtp", 25, "none"), ("smtp", 25, "starttls"),
                                                         ("smtp", 2525, "ssl"), ("imap", 143, "none"),
                                                         ("imap", 10993, "ssl")])
def test_ports_that_agree_or_are_not_known(proto: str, port: int, security: str) -> None:
    data = base()
    data[proto] = {"host": "h", "port": port, "security": security}
    server = getattr(Connection.from_dict(data, name="c"), proto)
    assert (server.host, server.port, server.security) == ("h", port, security)  # taken as given


@pytest.mark.parametrize(("proto", "security", "port"), [("smtp", "ssl", 465), ("smtp", "starttls", 587),
                                                         ("smtp", "none", 25), ("imap", "ssl", 993),
                                                         ("imap", "starttls", 143), ("imap", "none", 143)])
def test_the_security_mode_gives_the_default_port(proto: str, security: str, port: int) -> None:
    data = base()
    data[proto] = {"host": "h", "security": security}
    server = getattr(Connection.from_dict(data, name="c"), proto)
    assert server.port == port


def test_default_security_is_ssl() -> None:
    data = base()
    data["smtp"] = {"host": "h"}
    conn = Connection.from_dict(data, name="c")
    assert conn.smtp is not None and (conn.smtp.security, conn.smtp.port) == ("ssl", 465)


@pytest.mark.parametrize("name", ["a/b", "a:b", "", "tab\there", "new\nline"])
def test_bad_connection_names(name: str) -> None:
    err = refused(base(), name=name)
    assert "name" in err.message
    assert "'/'" in err.message and "':'" in err.message


def test_basic_auth_without_password() -> None:
    data = base()
    del data["auth"]["password"]
    err = refused(data)
    assert "connections.support.auth" in err.message and "needs a password" in err.message


def test_oauth2_without_its_block() -> None:
    data = base()
    data["auth"] = {"type": "oauth2", "username": "alice@example.test"}
    err = refused(data)
    assert "connections.support.auth" in err.message and "oauth2 block" in err.message


def test_oauth2_block_missing_what_the_grant_needs() -> None:
    data = base()
    data["auth"] = {"type": "oauth2", "username": "a@example.test",
                    "oauth2": {"provider": "microsoft365", "grant": "client_credentials", "client_id": "x"}}
    err = refused(data)
    assert "client_secret" in err.message and "tenant_id" in err.message


def test_unknown_auth_type() -> None:
    assert "auth.type" in refused(with_("auth.type", "ntlm")).message


@pytest.mark.parametrize("username", ["", "   ", "a\r\nb@example.test", "a\0b"])
def test_bad_usernames(username: str) -> None:
    assert "auth.username" in refused(with_("auth.username", username)).message


def test_from_address_with_a_line_break() -> None:
    assert "from_address" in refused(with_("from_address", "a@example.test\r\nBcc: x@y")).message


def test_activities_decide_which_servers_are_required() -> None:
    data = base()
    del data["imap"]
    assert Connection.from_dict({**data, "activities": "send"}, name="c").serves("send")
    assert "imap: required because activities is 'both'" in refused(data).message
    data = base()
    del data["smtp"]
    conn = Connection.from_dict({**data, "activities": "read"}, name="c")
    assert conn.serves("read") and not conn.serves("send")
    assert "smtp: required because activities is 'send'" in refused({**data, "activities": "send"}).message


@pytest.mark.parametrize(("field", "value"), [("timeouts.connect", 0), ("timeouts.command", -1),
                                              ("timeouts.connect", 601), ("timeouts.command", "soon")])
def test_bad_timeouts(field: str, value: Any) -> None:
    assert field in refused(with_(field, value)).message


def test_missing_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MC_TEST_UNSET_VAR", raising=False)
    err = refused(with_("auth.password", "${env:MC_TEST_UNSET_VAR}"))
    assert "connections.support.auth.password" in err.message
    assert "MC_TEST_UNSET_VAR" in err.message and "not set" in err.message


def test_missing_secret_file(tmp_path: Path) -> None:
    err = refused(with_("auth.password", f"${{file:{tmp_path / 'nope.txt'}}}"))
    assert "auth.password" in err.message and "does not exist" in err.message


def test_almost_a_reference_is_refused_not_used_as_a_password() -> None:
    err = refused(with_("auth.password", "${env:PW"))
    assert "looks like a secret reference" in err.message


def test_env_and_file_references_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MC_TEST_PW", "from-the-environment")
    conn = Connection.from_dict(with_("auth.password", "${env:MC_TEST_PW}"), name="c")
    assert conn.auth.password is not None
    assert conn.auth.password.get_secret_value() == "from-the-environment"
    (tmp_path / "pw").write_text("from-a-file\n")
    conn = Connection.from_dict(with_("auth.password", "${file:pw}"), name="c", base_dir=tmp_path)
    assert conn.auth.password is not None and conn.auth.password.get_secret_value() == "from-a-file"


# ------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("provider", ["microsoft365", "gmail", "icloud"])
def test_presets_fill_hosts_ports_and_security(provider: str) -> None:
    data = {"provider": provider, "auth": base()["auth"]}
    conn = Connection.from_dict(data, name="c")
    for proto in ("smtp", "imap"):
        server = getattr(conn, proto)
        preset = PRESETS[provider][proto]
        assert (server.host, server.port, server.security) == (preset["host"], preset["port"], preset["security"])


def test_preset_hosts() -> None:
    conn = Connection.from_dict({"provider": "microsoft365", "auth": base()["auth"]}, name="c")
    assert conn.smtp is not None and conn.imap is not None
    assert (conn.smtp.host, conn.smtp.port, conn.smtp.security) == ("smtp.office365.com", 587, "starttls")
    assert (conn.imap.host, conn.imap.port) == ("outlook.office365.com", 993)
    conn = Connection.from_dict({"provider": "gmail", "auth": base()["auth"]}, name="c")
    assert conn.smtp is not None and conn.smtp.host == "smtp.gmail.com"
    conn = Connection.from_dict({"provider": "icloud", "auth": base()["auth"]}, name="c")
    assert conn.imap is not None and conn.imap.host == "imap.mail.me.com"


def test_a_given_value_overrides_the_preset() -> None:
    data = {"provider": "gmail", "auth": base()["auth"], "imap": {"port": 1993},
            "smtp": {"host": "smtp-relay.gmail.com", "security": "starttls", "port": 587}}
    conn = Connection.from_dict(data, name="c")
    assert conn.imap is not None and (conn.imap.host, conn.imap.port) == ("imap.gmail.com", 1993)
    assert conn.smtp is not None
    assert (conn.smtp.host, conn.smtp.port, conn.smtp.security) == ("smtp-relay.gmail.com", 587, "starttls")


def test_unknown_preset() -> None:
    assert "provider" in refused({"provider": "yahoo", "auth": base()["auth"]}).message


# ------------------------------------------------------------------------------------------ no secrets shown
def test_repr_and_str_never_show_the_password() -> None:
    conn = Connection.from_dict(base(), name="c")
    for text in (repr(conn), str(conn), repr(conn.auth), str(conn.auth), conn.model_dump_json(),
                 repr(conn.model_dump())):
        assert PASSWORD not in text
    assert "**" in repr(conn)


def test_oauth2_secrets_never_shown() -> None:
    data = base()
    data["auth"] = {"type": "oauth2", "username": "a@example.test",
                    "oauth2": {"provider": "generic", "grant": "refresh_token", "client_id": "cid",
                               "client_secret": "client-secret-value", "refresh_token": "refresh-token-value",
                               "token_url": "https://login.example.test/token"}}
    conn = Connection.from_dict(data, name="c")
    for text in (repr(conn), str(conn), conn.model_dump_json()):
        assert "client-secret-value" not in text and "refresh-token-value" not in text


def test_a_rejected_secret_value_is_not_echoed() -> None:
    data = with_("auth.password", ["not-a-string-" + PASSWORD])
    err = refused(data)
    assert "auth.password" in err.message


def test_connection_is_immutable() -> None:
    conn = Connection.from_dict(base(), name="c")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        conn.name = "other"  # type: ignore[misc]


def test_from_dict_does_not_change_its_input() -> None:
    data = base()
    before = copy.deepcopy(data)
    Connection.from_dict(data, name="c")
    assert data == before


# -- auth.type none: an SMTP relay that takes mail without a login -----------------------------------------
def test_auth_none_for_a_send_only_relay_needs_no_username() -> None:
    data = base() | {"activities": "send", "auth": {"type": "none"}, "from_address": "robot@example.test"}
    del data["imap"]
    conn = Connection.from_dict(data, name="relay")
    assert conn.auth.type == "none" and conn.auth.password is None
    assert conn.smtp_login() == ""
    assert conn.account == "robot@example.test"  # what derived Message-IDs depend on
    del data["from_address"]
    assert Connection.from_dict(data, name="relay").account == "mail.example.test:587"


@pytest.mark.parametrize("activities", ["both", "read", "send"])
def test_auth_none_cannot_read(activities: str) -> None:
    """Not even with ``activities: send`` and an imap block: copies to Sent would need the login."""
    data = base() | {"activities": activities, "auth": {"type": "none"}}
    err = refused(data)
    assert "IMAP always needs a login" in err.message and "remove the imap block" in err.message


@pytest.mark.parametrize("extra", [{"password": PASSWORD}, {"oauth2": {
    "provider": "generic", "grant": "client_credentials", "token_url": "https://login.example.test/token",
    "client_id": "app", "client_secret": "s3cret"}}])
def test_auth_none_takes_no_credentials(extra: dict[str, Any]) -> None:
    data = base() | {"activities": "send", "auth": {"type": "none", **extra}}
    del data["imap"]
    assert "auth.type none logs in nowhere" in refused(data).message


# -- the provider registry: one place for what is known of Microsoft 365, Gmail and iCloud ------------------
@pytest.mark.parametrize(("data", "expected"), [
    ({"provider": "gmail"}, "gmail"),
    ({"smtp": {"host": "smtp.office365.com", "port": 587, "security": "starttls"}}, "microsoft365"),
    ({"imap": {"host": "imap.mail.me.com", "port": 993, "security": "ssl"}}, "icloud"),
    ({"auth": {"type": "oauth2", "username": "a@example.test", "oauth2": {
        "provider": "google", "grant": "refresh_token", "client_id": "c", "refresh_token": "r"}}}, "gmail"),
    ({}, None),
])
def test_the_provider_behind_a_connection(data: dict[str, Any], expected: str | None) -> None:
    conn = Connection.from_dict(base() | data, name="c")
    known = conn.known_provider()
    assert (known.name if known else None) == expected
    if known is not None:
        assert known.password_refused  # every provider says what to do when it refuses a password


def test_presets_and_defaults_come_from_the_registry() -> None:
    from mailconnector._providers import PROVIDERS

    assert set(PRESETS) == set(PROVIDERS) == {"microsoft365", "gmail", "icloud"}
    office = Connection.from_dict({"provider": "microsoft365", "auth": base()["auth"]}, name="o")
    assert office.smtp is not None and office.smtp.host == "smtp.office365.com"
    assert office.files_sent_mail and not Connection.from_dict(
        {"provider": "icloud", "auth": base()["auth"]}, name="i").files_sent_mail
    oauth = Connection.from_dict({"provider": "microsoft365", "auth": {
        "type": "oauth2", "username": "a@contoso.example", "oauth2": {
            "provider": "microsoft365", "grant": "client_credentials", "tenant_id": "t", "client_id": "c",
            "client_secret": "s"}}}, name="m")
    assert oauth.auth.oauth2 is not None
    assert oauth.auth.oauth2.effective_scopes() == ["https://outlook.office365.com/.default"]
