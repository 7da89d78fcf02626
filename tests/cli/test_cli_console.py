"""`mailconnector console` as a user starts it: the URL it prints, the token rules, a busy port, SIGTERM."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from cli_harness.runner import cli
from services.console import TOKEN, ConsoleProject, start_console, stop_console


def test_it_prints_the_url_with_a_random_token_and_stops_on_sigterm(console_project: ConsoleProject) -> None:
    console = start_console(console_project.path, token=None)
    try:
        assert console.url.startswith("http://127.0.0.1:") and len(console.token) >= 16
        assert httpx.get(console.url + "api/health").status_code == 401
        answer = httpx.get(console.url + "api/health", headers={"Authorization": f"Bearer {console.token}"})
        assert answer.status_code == 200 and answer.json() == []
    finally:
        code, err = stop_console(console)
    assert code == 0, err
    assert console.token not in err  # the URL with its token goes to stdout only


def test_a_token_from_the_environment_is_used(console_project: ConsoleProject,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCONNECTOR_CONSOLE_TOKEN", "from-the-environment-0123")
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mailconnector", "console", "--port", "0", "--project",
                             str(console_project.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.endswith("/?token=from-the-environment-0123")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(("args", "env", "code", "words"), [
    (["--host", "0.0.0.0"], {}, 3, "needs a token of your own"),
    (["--host", "0.0.0.0", "--no-token"], {}, 3, "--no-token on 0.0.0.0"),
    (["--token", "short"], {}, 3, "at least 16 are needed"),
    ([], {"MAILCONNECTOR_CONSOLE_TOKEN": "short"}, 3, "at least 16 are needed"),
    (["--no-token", "--token", TOKEN], {}, 2, "either a token or --no-token"),
    (["--port", "70000"], {}, 2, "--port"),
    (["--host", "no-such-host.invalid", "--token", TOKEN], {}, 3, "cannot listen on no-such-host.invalid"),
])
def test_unsafe_or_wrong_settings_are_refused_before_serving(console_project: ConsoleProject, args: list[str],
                                                             env: dict[str, str], code: int, words: str) -> None:
    result = cli(["console", "--project", str(console_project.path), *args], cwd=console_project.path.parent,
                 env=env)
    assert result.returncode == code, result.stderr
    assert words in result.stderr_flat
    assert result.stdout == ""  # no URL printed: nothing is served


def test_a_busy_port_is_a_clear_error(console_project: ConsoleProject) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli(["console", "--project", str(console_project.path), "--port", str(port), "--token", TOKEN],
                     cwd=console_project.path.parent)
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1 port {port}" in result.stderr_flat and "--port" in result.stderr_flat


def test_a_broken_project_file_fails_before_serving(tmp_path: Path) -> None:
    (tmp_path / "mailconnector.yaml").write_text("connections: [not, a, mapping]\n")
    result = cli(["console", "--token", TOKEN], cwd=tmp_path)
    assert result.returncode == 3 and "connections: must be a mapping" in result.stderr_flat
    assert result.stdout == ""


def test_the_printed_url_works_for_a_token_with_url_special_characters(console_project: ConsoleProject) -> None:
    """A base64 token (``+``, ``/``, ``=``) or one with ``&``, ``#`` or ``%``: the printed URL carries it
    percent-encoded, so that opening it as printed signs in."""
    token = "abcdefgh+ijklmnop/qrst==&x#y%z"
    console = start_console(console_project.path, token=token)
    try:
        printed = console.url + "?token=" + console.token
        assert "+" not in console.token and "#" not in console.token and "&" not in console.token
        with httpx.Client() as browser:
            signed_in = browser.get(printed, follow_redirects=False)
            assert signed_in.status_code == 303, signed_in.text
            assert browser.get(console.url + "connections").status_code == 200
        bearer = httpx.get(console.url + "api/health", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200
    finally:
        stop_console(console)
