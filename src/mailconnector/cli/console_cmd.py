"""``mailconnector console``: the web console (connections with a Test button, operations, runs, ledger,
health) for one project file."""

from __future__ import annotations

import importlib
import ipaddress
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer

from ..errors import ConfigError
from ._common import Session, err_console, with_session

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["TOKEN_ENV", "console_cmd"]

TOKEN_ENV = "MAILCONNECTOR_CONSOLE_TOKEN"
MIN_TOKEN = 16


@with_session(verbose=False)
def console_cmd(
    s: Session,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but a loopback address (127.0.0.1, "
                                      "::1, localhost) needs a token of your own (--token or "
                                      f"${TOKEN_ENV}).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port; the URL printed says which).",
                                      min=0, max=65535)] = 8025,
    token: Annotated[str | None, typer.Option(
        help=f"The token every request needs (at least {MIN_TOKEN} characters). Default: "
             f"${TOKEN_ENV}, else a random one, printed in the URL at start.", show_default=False)] = None,
    no_token: Annotated[bool, typer.Option("--no-token", help="Ask for no token at all: only on a loopback "
                                           "address, on a machine whose other users you trust.")] = False,
) -> None:
    """Serve the web console: connections with a Test button, operations with a Run button, the runs and
    their logs, the send ledger's uncertain sends, the health of watchers; and a JSON API under /api and
    Prometheus metrics at /metrics.

    Prints the URL to open (with its token) on stdout, then serves until Ctrl-C or SIGTERM (exit 0); runs
    started from the console finish the record in hand first. Exit 3 when it cannot serve safely (a public
    address without a token of your own, a short token) or cannot listen. Needs the console extra:
    pip install 'mailconnector[console]'.

    Examples:
      mailconnector console
      mailconnector console --port 0 --token "$(cat ~/.console-token)"
      MAILCONNECTOR_CONSOLE_TOKEN=... mailconnector console --host 0.0.0.0
    """
    the_token = _token(host, token, no_token=no_token)
    app = _create_app(s, the_token)
    sock = _listen(host, port)
    _announce(s.project.path, host, sock.getsockname()[1], the_token)
    _serve(app, sock, debug=s.debug)


def _token(host: str, token: str | None, *, no_token: bool) -> str | None:
    """The token every request must carry (None: none asked for), refusing the choices that would let
    others use the console: no token or a random printed one off loopback, a token too short to guess."""
    chosen = token if token is not None else os.environ.get(TOKEN_ENV) or None
    loopback = _is_loopback(host)
    if no_token and chosen is not None:
        raise typer.BadParameter("give either a token or --no-token, not both", param_hint="--no-token")
    if no_token and not loopback:
        raise ConfigError(f"--no-token on {host}: anyone who can reach this address could send mail as your "
                          "connections", hint=f"keep the console on 127.0.0.1, or give it a token (--token or "
                          f"${TOKEN_ENV})")
    if chosen is None and not no_token and not loopback:
        raise ConfigError(f"listening on {host} needs a token of your own: a random one would be printed "
                          "where others may read it", hint=f"give one with --token or ${TOKEN_ENV} (at least "
                          f"{MIN_TOKEN} characters), or keep the console on 127.0.0.1")
    if chosen is not None and len(chosen) < MIN_TOKEN:
        raise ConfigError(f"the console token is {len(chosen)} characters long; at least {MIN_TOKEN} are needed",
                          hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return None if no_token else chosen or secrets.token_urlsafe(24)


def _create_app(s: Session, token: str | None) -> Starlette:
    """The console's application, once its optional libraries are known to be there (a missing one is a
    configuration error with the pip command, not a traceback); the token is kept out of every log line."""
    try:
        importlib.import_module("uvicorn")  # the server _serve runs: checked before anything is started

        from ..console import create_app
    except ImportError as exc:
        raise ConfigError(f"the console's libraries are not installed ({exc.name})",
                          hint="pip install 'mailconnector[console]'") from None
    if token is not None:
        from ..secrets import register_secret

        register_secret(token)  # never in a log line or an error
    return create_app(s.project.path, token=token)  # the project file is read now: unreadable, it fails here


def _announce(project_path: Path, host: str, port: int, token: str | None) -> None:
    """The URL to open, with its token, alone on stdout (for a script to read); where it serves, on stderr."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    err_console.print(f"console of {project_path} at http://{shown}:{port}/ (Ctrl-C stops it)")


def _serve(app: Starlette, sock: socket.socket, *, debug: bool) -> None:
    """Serve on the socket until SIGINT or SIGTERM, which end the command with exit 0."""
    import uvicorn

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            log_level="debug" if debug else "warning")

    def stopped(signum: int, frame: object) -> None:
        err_console.print("console stopped")
        raise typer.Exit(0)

    # The server stops gracefully on SIGINT / SIGTERM, then sends the signal again to the handler it found:
    # this one, so that a stop asked for is exit 0 (a service manager reads anything else as a failure).
    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that the URL printed names the port really bound (``--port 0``)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}", hint="give an IP address or a host name "
                          "of this machine, e.g. 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by each connection: an answer's headers and body go out at once instead of the body waiting
    # for the client's delayed ACK (40 ms per request on a kept-alive connection otherwise).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host} port {port}: {exc.strerror}",
                          hint="another program uses the port: choose another with --port (0: any free one)") \
            from None
    sock.listen(128)
    return sock
