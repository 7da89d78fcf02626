"""A real, throwaway PostgreSQL server: its own cluster in a temporary directory, on a free loopback port,
gone again after ``stop()``. The sandbox's shared state (``sandbox --with-cluster``), and the tests'.

Why a real server: connection handling, authentication, restarts and SQL behaviour are what the tests
are about, and a fake would only test the fake. Why this shape:

* Debian keeps the server binaries off PATH (``/usr/lib/postgresql/<version>/bin``), so they are found by
  globbing there (highest version wins); ``./dev setup`` installs the ``postgresql`` package when missing.
* ``initdb`` and ``postgres`` refuse to run as root, so as root they run as the ``postgres`` OS user, in a
  directory made with ``tempfile.mkdtemp`` under /tmp (pytest's own tmp dirs may be 0700 root-only).
* TCP logins check passwords (``scram-sha-256``) so tests can see a wrong password refused; the superuser
  talks over the Unix socket in the directory, where trust is enough.
* ``fsync=off`` and ``--no-sync``: the data is thrown away, so durability is only lost time.

Only the standard library is used, so the fixture works before any driver is installed.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from ._process import ServerProcess, free_port

SUPERUSER = "postgres"
INSTALL_HINT = "run `./dev setup` (it installs Debian's `postgresql` package) or `apt-get install postgresql`"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BIND_FAILED = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")


class PostgresNotInstalled(RuntimeError):
    """The server binaries are missing: the machine was not set up, which is not a test failure of the code."""


class PostgresError(RuntimeError):
    """The server failed to start or stop, or a superuser command failed."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` (Debian's layout)."""

    def version(initdb: str) -> tuple[int, ...]:
        name = Path(initdb).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if not found:
        raise PostgresNotInstalled(
            f"PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); {INSTALL_HINT}")
    return Path(found[-1]).parent


def _identifier(name: str) -> str:
    """Quote a role or database name, accepting only plain lower-case names so nothing needs escaping."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain lower-case SQL identifier: {name!r}")
    return f'"{name}"'


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on, so only quotes need doubling)."""
    return "'" + value.replace("'", "''") + "'"


class PostgresServer(ServerProcess):
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:``port`` only.

    ``start()`` creates the cluster (first time) and starts the server; ``restart()`` stops and starts it
    again on the same port and data, for restart tests; ``stop()`` stops it and removes the directory.
    Layout of ``directory``: ``data/`` (the cluster), ``server.log`` (the server's stderr), and the Unix
    socket the superuser connects through. ``pid`` is the postmaster's: SIGINT to it is a fast shutdown (how
    the sandbox stops one it left running).
    """

    def __init__(self, *, startup_timeout: float = 30.0, durable: bool = False, parent: Path | None = None,
                 stop_at_exit: bool = True) -> None:
        """``parent``: where its directory is made (default /tmp); ``stop_at_exit`` False: it outlives this
        process (the sandbox started with --background), stopped later by ``stop_pid``."""
        super().__init__()
        self.startup_timeout = startup_timeout
        self.parent = parent
        self.stop_at_exit = stop_at_exit
        # Throwaway data: durability is only lost time. ``durable=True`` puts it back (for benchmarks).
        flag = "on" if durable else "off"
        self.settings = {name: flag for name in ("fsync", "synchronous_commit", "full_page_writes")}
        self.port: int = 0
        self.directory: Path | None = None
        self._bindir: Path | None = None
        self._atexit_registered = False

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        return self._dir / "server.log"

    def start(self) -> PostgresServer:
        """Create a fresh cluster on a free port and start the server (a failed restart() keeps its port and data)."""
        if self.running:
            raise PostgresError(f"PostgreSQL is already running on port {self.port}")
        self._bindir = find_bindir()
        created = self.directory is None
        if created:
            self._create_cluster()
        if not self._atexit_registered and self.stop_at_exit:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        try:
            if created:
                # The port was free when picked, but another process may take it before postgres binds it.
                for attempt in range(3):
                    self.port = free_port()
                    try:
                        self._launch()
                        break
                    except PostgresError:
                        if attempt == 2 or not any(text in self.log_tail() for text in _BIND_FAILED):
                            raise
            else:
                self._launch()
        except BaseException:
            if created:
                self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory; safe to call more than once."""
        try:
            self._stop_process()
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            self.port = 0

    def restart(self) -> None:
        """Stop and start again on the same port and data directory (what a database restart looks like)."""
        if self.directory is None:
            raise PostgresError("restart() before start()")
        self._stop_process()
        self._launch()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- using it ------------------------------------------------------------------------------------

    def url(self, database: str, user: str = "mc", password: str = "mc-secret") -> str:
        """The TCP URL (password-checked) a client under test would be given."""
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, *, owner: str = "mc", password: str = "mc-secret") -> str:
        """Create database ``name`` owned by login role ``owner`` and return its URL.

        The role is created when missing; when it exists its password is set to ``password``, so the URL
        returned always works.
        """
        role, db, secret = _identifier(owner), _identifier(name), _literal(password)
        if "$role$" in secret:
            raise ValueError("the password may not contain '$role$' (it quotes the DO block)")
        # One psql process, two -c. First the role: created, or its password reset if it exists; the lock
        # serialises concurrent callers (two ALTER ROLEs at once fail with "tuple concurrently updated").
        ensure_role = (f"DO $role$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('mc-create-role')); "
                       f"IF EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(owner)}) THEN "
                       f"ALTER ROLE {role} LOGIN PASSWORD {secret}; "
                       f"ELSE CREATE ROLE {role} LOGIN PASSWORD {secret}; END IF; END $role$")
        # Then the database, which needs a -c of its own (it cannot run inside a transaction block).
        self._psql([ensure_role, f"CREATE DATABASE {db} OWNER {role} ENCODING 'UTF8'"], "postgres")
        return self.url(name, owner, password)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even if clients are still connected (a test may leak a connection)."""
        self.psql(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the Unix socket; returns unaligned, tuples-only output.

        One ``-c`` per call: CREATE/DROP DATABASE cannot run inside a multi-statement string.
        """
        return self._psql([sql], database)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, PostgresError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals -----------------------------------------------------------------------------------

    @property
    def _dir(self) -> Path:
        if self.directory is None:
            raise PostgresError("the server has no directory (not started, or stopped)")
        return self.directory

    def _bin(self, name: str) -> str:
        if self._bindir is None:
            self._bindir = find_bindir()
        path = self._bindir / name
        return str(path) if path.exists() else (shutil.which(name) or name)

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments that drop root to the ``postgres`` OS user (initdb and postgres refuse root)."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresNotInstalled(
                f"running as root but there is no `{SUPERUSER}` OS user; {INSTALL_HINT}") from None
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        """The caller's environment minus PG* variables, which would point psql at some other server."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "5"
        return env

    def _create_cluster(self) -> None:
        run_as = self._run_as()
        directory = Path(tempfile.mkdtemp(prefix="mc-pg-", dir=str(self.parent or "/tmp")))
        self.directory = directory
        try:
            if run_as:
                os.chown(directory, run_as["user"], run_as["group"])
            directory.chmod(0o700)
            cmd = [self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                   "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
            done = subprocess.run(cmd, cwd=directory, env=self._env(), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=120, check=False, **run_as)
            if done.returncode != 0:
                raise PostgresError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            self.directory = None
            raise

    def _launch(self) -> None:
        """Start the postmaster in its own process group and wait until it accepts connections."""
        cmd = [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._dir}",
               "-c", "logging_collector=off"]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, cwd=self._dir, env=self._env(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, process_group=0, **self._run_as())
        try:
            self._wait_ready()
        except BaseException:
            self._stop_process()
            raise

    def _wait_ready(self) -> None:
        """Ready = the TCP port accepts and a query works over the socket (startup and recovery are done)."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise PostgresError(f"postgres exited with {code} while starting; log {self.log_path}:\n"
                                    f"{self.log_tail()}")
            if self._tcp_open():
                with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                    if self.psql("SELECT 1") == "1":
                        return
            if time.monotonic() > deadline:
                raise PostgresError(f"postgres not ready on 127.0.0.1:{self.port} within {self.startup_timeout} s; "
                                    f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.05)

    def _tcp_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _psql(self, commands: list[str], database: str) -> str:
        cmd = [self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", str(self._dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database]
        for sql in commands:
            cmd += ["-c", sql]
        done = subprocess.run(cmd, env=self._env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)
        if done.returncode != 0:
            raise PostgresError(f"psql failed ({done.returncode}) on {database}: {done.stderr.strip()}")
        return done.stdout.strip()

    def _stop_process(self) -> None:
        """SIGINT = fast shutdown (disconnect clients, checkpoint, exit); escalate if that hangs.

        Signals go to the postmaster only: it puts each child in a session of its own, so a process-group
        signal would not reach them; SIGQUIT makes the postmaster kill them itself.
        """
        self._end_process((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0))

    def _stop_at_exit(self) -> None:
        """Last resort if a test run ends without the fixture's teardown (no server outlives the run)."""
        with contextlib.suppress(Exception):
            self.stop()
