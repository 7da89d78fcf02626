"""Loading ``mailconnector.yaml``: every error names the file and the line (and the field where there is one)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailconnector.cli._exit_codes import exit_code_for
from mailconnector.errors import ConfigError
from mailconnector.project import PROJECT_ENV, Project, find_project_file

GOOD_CONNECTION = """\
    auth: {type: basic, username: alice@example.test, password: "${env:MC_PF_PASSWORD}"}
    smtp: {host: 127.0.0.1, port: 10587, security: starttls}
    imap: {host: 127.0.0.1, port: 10993, security: ssl}
"""


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MC_PF_PASSWORD", "project-file-password")


def write(tmp_path: Path, text: str, name: str = "mailconnector.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path, connection: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        project = Project.load(path)
        if connection is not None:
            project.connection(connection)
    err = ei.value
    assert str(path) in err.message, "the error names the file"
    assert exit_code_for(err) == 3
    return err


def test_a_good_project(tmp_path: Path) -> None:
    path = write(tmp_path, "connections:\n  support:\n" + GOOD_CONNECTION)
    project = Project.load(path)
    assert project.connection_names == ["support"]
    conn = project.connection("support")
    assert conn.name == "support"
    assert project.connection("support") is conn  # validated once
    assert project.directory == tmp_path.resolve()


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections:
          support:
            auth: {type: basic, username: a@example.test
            smtp: {host: h}
        """)
    err = load_error(path)
    assert "invalid YAML" in err.message
    assert "line 4" in err.message and "column" in err.message
    assert err.hint


def test_tabs_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "connections:\n\tsupport: {}\n")
    assert "line 2" in load_error(path).message


def test_unknown_top_level_section_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections: {}

        # a comment
        conections:
          x: 1
        """)
    err = load_error(path)
    assert "line 4: conections: unknown section" in err.message
    assert "connections" in err.message.split("expected:")[1]


def test_a_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "activities: {}\nconnections:\n  - support\n")
    assert "line 2: connections: must be a mapping" in load_error(path).message


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in load_error(write(tmp_path, "- a\n- b\n")).message


def test_missing_connection_names_the_file_the_line_and_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "settings: {}\nconnections:\n  support:\n" + GOOD_CONNECTION)
    err = load_error(path, "sales")
    assert "line 2" in err.message
    assert "no connection named 'sales'" in err.message and "support" in err.message
    assert err.hint and "sandbox" in err.hint


def test_missing_connection_in_an_empty_project(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ""), "support")
    assert "no connection named 'support' (defined: none)" in err.message


def test_an_activity_that_names_a_missing_connection(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections:
          support:
            auth: {type: basic, username: a@example.test, password: x1234567}
            smtp: {host: h, port: 10587, security: starttls}
            imap: {host: h, port: 10993}
        activities:
          outbox:
            type: send-email
            connection: sales
        """)
    with pytest.raises(ConfigError) as ei:
        Project.load(path).activity("outbox")
    assert "line 9" in ei.value.message and "sales" in ei.value.message
    assert str(path) in ei.value.message


def test_connection_field_errors_name_the_line_of_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections:
          support:
            auth: {type: basic, username: a@example.test, password: x1234567}
            smtp:
              host: 127.0.0.1
              port: 70000
            imap: {host: 127.0.0.1, port: 10993}
        """)
    err = load_error(path, "support")
    assert "line 6: connections.support.smtp.port" in err.message
    assert "1 to 65535" in err.message


def test_model_level_port_check_names_the_port_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections:
          support:
            auth: {type: basic, username: a@example.test, password: x1234567}
            smtp:
              host: 127.0.0.1
              security: ssl
              port: 993
            imap: {host: 127.0.0.1, port: 10993}
        """)
    err = load_error(path, "support")
    assert "line 7" in err.message
    assert "smtp.port: 993 is the IMAP over TLS port; SMTP over TLS uses 465" in err.message


def test_unknown_nested_field_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections:
          support:
            auth: {type: basic, username: a@example.test, password: x1234567}
            smtp: {host: 127.0.0.1, port: 10587, security: starttls}
            imap: {host: 127.0.0.1, port: 10993}
            tls:
              verify: true
              ca_fiel: ca.pem
        """)
    err = load_error(path, "support")
    assert "line 8: connections.support.tls.ca_fiel: unknown field" in err.message


def test_missing_env_variable_names_the_field_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MC_PF_PASSWORD")
    path = write(tmp_path, "connections:\n  support:\n" + GOOD_CONNECTION)
    err = load_error(path, "support")
    assert "line 3: connections.support.auth.password: environment variable MC_PF_PASSWORD is not set" in err.message


def test_missing_secret_file_is_looked_for_beside_the_project(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        connections:
          support:
            auth: {type: basic, username: a@example.test, password: "${file:secrets/pw}"}
            smtp: {host: 127.0.0.1, port: 10587, security: starttls}
            imap: {host: 127.0.0.1, port: 10993}
        """)
    err = load_error(path, "support")
    assert "auth.password" in err.message
    assert str(tmp_path.resolve() / "secrets" / "pw") in err.message


def test_a_broken_connection_does_not_stop_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, "connections:\n  broken: {auth: 3}\n  support:\n" + GOOD_CONNECTION)
    project = Project.load(path)
    assert project.connection("support").name == "support"
    with pytest.raises(ConfigError):
        project.connection("broken")


def test_a_connection_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "connections:\n  support: just-a-string\n")
    assert "line 2: connections.support: must be a mapping" in load_error(path, "support").message


def test_bad_connection_name_in_a_project(tmp_path: Path) -> None:
    path = write(tmp_path, "connections:\n  'eu:support':\n" + GOOD_CONNECTION)
    err = load_error(path, "eu:support")
    assert "name" in err.message and "':'" in err.message


def test_project_file_not_found(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.yaml")
    assert "not found" in err.message
    # The library's hint names no flag (a worker shows it too); the command line adds --project by the topic.
    assert err.topic == "project-file-missing" and err.hint and "--project" not in err.hint


def test_finding_the_project_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    assert find_project_file() == tmp_path / "mailconnector.yaml"
    monkeypatch.setenv(PROJECT_ENV, str(tmp_path / "from-env.yaml"))
    assert find_project_file() == tmp_path / "from-env.yaml"
    assert find_project_file(Path("explicit.yaml")) == Path("explicit.yaml")
