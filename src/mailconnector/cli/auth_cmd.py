"""``mailconnector auth login CONNECTION``: sign in once, interactively, to get a refresh token.

Microsoft 365 uses the device code flow (open a page, type a code, sign in: works from a server without a
browser); Google the installed-app flow (open the URL, consent, paste the code back). The refresh token is
written to a file of its own (mode 0600) and the command prints the ``${file:...}`` reference to put in the
project file: the token itself is never printed, logged or written into the project file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import ConfigError, StateError
from ._common import Session, emit_json, err_console, out_console, with_session

if TYPE_CHECKING:
    from ..auth.oauth2 import Grant
    from ..connection import Connection
    from ..project import Project

__all__ = ["auth_app", "login_cmd"]

auth_app = typer.Typer(help="OAuth2 sign-in for connections that use a refresh token.", no_args_is_help=True)

# Stands in for the refresh token while the connection is validated before anyone has signed in.
_PENDING = "pending-mailconnector-auth-login"


@auth_app.command("login")
@with_session(json=True, verbose=False)
def login_cmd(
    s: Session,
    connection: Annotated[str, typer.Argument(help="Connection name from the project file.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the refresh token (default: "
        ".mailconnector/secrets/CONNECTION.refresh_token beside the project file).", show_default=False)] = None,
    authorization_url: Annotated[str | None, typer.Option(
        help="Google: the authorization endpoint to open in the browser (default: Google's own, "
        "https://accounts.google.com/o/oauth2/v2/auth).", show_default=False)] = None,
    redirect_uri: Annotated[str, typer.Option(
        help="Google: where the browser is sent after consent (a loopback address of a Desktop app client).")
    ] = "http://localhost",
) -> None:
    """Sign in interactively and save the connection's refresh token in a file (mode 0600).

    Microsoft 365: the device code flow — open the page shown, enter the code, sign in as the mailbox user.
    Google: open the URL shown, consent, then paste the code (or the whole address the browser ends on).
    Prints the ${file:...} reference to write as auth.oauth2.refresh_token; never the token.

    Example: mailconnector auth login office
    """
    proj = s.project
    conn = _connection_for_login(proj, connection)
    oauth = conn.auth.oauth2
    assert oauth is not None
    grant = _sign_in(conn, connection, authorization_url=authorization_url, redirect_uri=redirect_uri)
    assert grant.refresh_token is not None
    path = output if output is not None else proj.directory / ".mailconnector" / "secrets" / \
        f"{connection}.refresh_token"
    if not path.is_absolute():
        path = Path.cwd() / path
    _write_private(path, grant.refresh_token)
    reference = "${file:" + _relative_to(path, proj.directory) + "}"
    if s.json:
        emit_json({"connection": connection, "provider": oauth.provider, "file": str(path),
                   "reference": reference, "grant": "refresh_token"})
        return
    _say_saved(connection, path, reference, grant_now=oauth.grant)


def _sign_in(conn: Connection, name: str, *, authorization_url: str | None, redirect_uri: str) -> Grant:
    """The sign-in flow of the connection's identity provider; another provider has no page to send
    anyone to, so it is refused with the way round."""
    # Imported on use, as every command's heavy modules: the other commands start without them.
    from ..auth.oauth2 import microsoft_device_login

    assert conn.auth.oauth2 is not None
    provider = conn.auth.oauth2.provider
    if provider == "microsoft365":
        return microsoft_device_login(conn, show=lambda text: err_console.print(text, markup=False, highlight=False))
    if provider == "google":
        return _google_sign_in(conn, authorization_url=authorization_url, redirect_uri=redirect_uri)
    raise ConfigError(
        "auth login knows the sign-in pages of microsoft365 and google only",
        field=f"connections.{name}.auth.oauth2.provider",
        hint="for another identity provider, obtain a refresh token with its own tools and reference it "
             "with ${file:...}",
    )


def _google_sign_in(conn: Connection, *, authorization_url: str | None, redirect_uri: str) -> Grant:
    """Google's installed-app flow: the person opens the URL, consents, and pastes back the code (the
    browser is often on another machine, so nothing listens for the redirect)."""
    from ..auth.oauth2 import GOOGLE_AUTHORIZATION_URL, google_authorization_request, google_exchange_code

    request = google_authorization_request(conn, authorization_url=authorization_url or GOOGLE_AUTHORIZATION_URL,
                                           redirect_uri=redirect_uri)
    err_console.print("Open this address in a browser, sign in as "
                      f"{conn.auth.username} and allow access:", markup=False, highlight=False)
    err_console.print(request.url, markup=False, highlight=False, soft_wrap=True)
    err_console.print("The browser then goes to an address that may not load; that is expected: copy the "
                      "code from it (or the whole address).", markup=False, highlight=False)
    # Shown as typed: the code is single-use and worthless without the PKCE verifier kept in this process.
    answer = typer.prompt("Code or address", err=True)
    return google_exchange_code(conn, request, str(answer))


def _say_saved(connection: str, path: Path, reference: str, *, grant_now: str) -> None:
    """Where the token went and what to write in the project file: the reference, never the token."""
    lines = [f"Signed in. The refresh token is saved in {path} (mode 0600).",
             f"In the project file, under connections.{connection}.auth.oauth2, set:",
             "  grant: refresh_token",
             f"  refresh_token: {reference}"]
    if grant_now != "refresh_token":
        lines.append(f"(its grant is {grant_now} now)")
    for line in lines:
        out_console.print(line, markup=False, highlight=False)


def _connection_for_login(project: Project, name: str) -> Connection:
    """The connection as configured, except that its refresh token need not exist yet."""
    entries = project.doc.data.get("connections") or {}
    entry = entries.get(name) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        return project.connection(name)  # the usual error: no such connection, or not a mapping
    data = copy.deepcopy(entry)
    auth = data.get("auth")
    oauth = auth.get("oauth2") if isinstance(auth, dict) else None
    if not isinstance(auth, dict) or auth.get("type") != "oauth2" or not isinstance(oauth, dict):
        raise ConfigError("auth login is for OAuth2 connections: set auth.type: oauth2 and an auth.oauth2 block "
                          "(provider, client_id, ...)", field=f"connections.{name}.auth", source=project.source)
    oauth["grant"] = "refresh_token"
    oauth["refresh_token"] = _PENDING
    from ..connection import Connection

    return Connection.from_dict(data, name=name, source=project.source, base_dir=project.directory,
                                locate=project.doc.line_of)


def _write_private(path: Path, secret: str) -> None:
    """Write a secret readable by its owner only (the directory too, when it is ours to create)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (secret + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot write the refresh token to {path}: {exc.strerror}",
                         hint="choose another place with --output") from exc


def _relative_to(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())
