"""A real, throwaway Cyrus IMAP 3.6 server for tests: its own configuration, spool and sasldb in a temporary
directory, plain IMAP (STARTTLS offered) and implicit-TLS IMAP on free loopback ports, gone after ``stop()``.

Why a second IMAP server: Dovecot (the sandbox) is one implementation; Cyrus differs in ways a client
notices (hierarchy, response texts, capabilities), and a fake would only test the fake. Why this shape:

* Debian's ``cyrus-imapd`` package conflicts with ``dovecot-imapd``, so it is never installed:
  ``tests/services/fetch_cyrus.sh`` downloads and unpacks the packages into
  ``/var/cache/mailconnector/cyrus/root`` (outside the repository, which may sit where ``cyrus`` cannot
  enter), and apt-installs only the libraries they need, ``sasl2-bin`` and the ``cyrus`` user). The binaries run from
  there with ``LD_LIBRARY_PATH``. ``master`` does not pass ``-C`` on, so every command in ``cyrus.conf``
  gets ``-C <rundir>/imapd.conf`` itself.
* Cyrus runs as the ``cyrus`` OS user (started as root it switches to that user by itself; run as anyone
  else it refuses), so everything in the directory belongs to ``cyrus``.
* Passwords live in a sasldb (auxprop), written by ``saslpasswd2`` with the password as UTF-8 on stdin;
  its realm is ``servername`` (``localhost``). The admin is ``cyrus`` with a random password; it creates
  each user's mailbox (``CREATE user/<login>``) and delivers by logging in *as* the user through SASL
  proxy authorisation (``AUTHENTICATE PLAIN`` with authzid), so it never needs the user's password.
* ``idled`` runs, so IDLE reports new mail at once (measured ~50 ms) instead of by 60 s polling.
* Cyrus logs only to syslog and there is none here: start-up failures report ``master``'s stderr.

What a client sees (measured against Cyrus 3.6.1, Debian 3.6.1-4+deb12u5):

* Logins are plain names (``alice``); ``unixhierarchysep: yes`` and ``altnamespace: yes``, so the separator
  is ``/`` and a user's folders are ``INBOX``, ``INBOX/Child`` and top-level ``Sub``; NAMESPACE is
  ``(("" "/")) (("Other Users/" "/")) (("Shared Folders/" "/"))``. ``LIST "" "*"`` for a fresh user
  returns only ``* LIST (\\HasNoChildren) "/" INBOX`` (no Sent/Trash/... are made).
* AUTH= before login (``sasl_mech_list``): plain port PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 plus
  STARTTLS; after STARTTLS and on the imaps port the same plus SCRAM-SHA-1-PLUS and SCRAM-SHA-256-PLUS.
  ``allowplaintext: yes``: LOGIN works without TLS, and there is no LOGINDISABLED before login (Cyrus
  does list LOGINDISABLED in the CAPABILITY it sends after login, which means nothing then).
* Passwords with non-ASCII, quotes, backslashes and braces (``pä"ss\\wörd {5}``, ``пароль``, ``密码``)
  work with LOGIN as a literal or a quoted string (UTF-8 bytes) and with AUTHENTICATE PLAIN. They may not
  contain NUL, CR or LF. A wrong password: ``NO Login failed: authentication failure``.
* ``SELECT nosuchfolder`` → ``NO Mailbox does not exist`` (no ``[NONEXISTENT]`` response code).
* Before login CAPABILITY is only IMAP4rev1 LITERAL+ ID ENABLE (STARTTLS) AUTH=... SASL-IR.
* CAPABILITY after login has MOVE, IDLE, SPECIAL-USE, CREATE-SPECIAL-USE, UIDPLUS, CONDSTORE, QRESYNC,
  LITERAL+, NAMESPACE, UNSELECT, ESEARCH, LIST-EXTENDED, LIST-STATUS, COMPRESS=DEFLATE, among others.
  APPEND answers ``[APPENDUID <validity> <uid>]``; CREATE answers ``[MAILBOXID (...)]``.

Only the standard library and ``trustme`` (for the certificate) are used.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme

HOST = "127.0.0.1"
ADMIN = "cyrus"
SERVERNAME = "localhost"  # also the sasldb realm
MECHANISMS = "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256"
# Outside the repository: the `cyrus` user must reach the binaries, and a clone may sit under /root (0700).
DEFAULT_CACHE = Path(os.environ.get("MAILCONNECTOR_CYRUS_CACHE", "/var/cache/mailconnector/cyrus"))
FETCH_HINT = ("run ./dev setup or tests/services/fetch_cyrus.sh (it unpacks Cyrus into "
              "/var/cache/mailconnector/cyrus; needs root and apt)")
_BINARIES = ("master", "imapd", "idled", "ctl_cyrusdb")
_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_GREETING = re.compile(rb"Cyrus IMAP (\S+)")


class CyrusNotInstalled(RuntimeError):
    """The unpacked binaries, a library, ``saslpasswd2`` or the ``cyrus`` user is missing: not set up."""


class CyrusError(RuntimeError):
    """The server did not start, or an admin command failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class CyrusServer:
    """One Cyrus ``master`` (with ``imapd`` and ``idled`` under it) in its own process group.

    Layout of ``rundir``: ``imapd.conf``, ``cyrus.conf``, ``sasldb2``, ``conf/`` (databases), ``spool/``,
    ``sock/`` (idle, lmtp, notify sockets), ``ca.pem``/``cert.pem``/``key.pem``, ``master.log``.
    """

    host: str
    ports: dict[str, int]
    ca_file: str
    users: dict[str, str]
    rundir: Path
    version: str

    def __init__(self, root: Path, rundir: Path) -> None:
        self.host = HOST
        self.ports = {}
        self.users = {}
        self.rundir = rundir
        self.ca_file = str(rundir / "ca.pem")
        self.version = ""
        self.greeting = ""
        self._root = root
        self._admin_password = secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @classmethod
    def start(cls, users: dict[str, str], *, cache_dir: Path | None = None, timeout: float = 20.0) -> CyrusServer:
        """Configure a fresh server, start it, wait for both ports to greet, then add ``users``."""
        root = (cache_dir or DEFAULT_CACHE) / "root"
        missing = [name for name in _BINARIES if not (root / "usr/lib/cyrus/bin" / name).exists()]
        if missing or shutil.which("saslpasswd2") is None:
            what = ", ".join(missing) if missing else "saslpasswd2"
            raise CyrusNotInstalled(f"Cyrus IMAP is not installed under {root} (missing: {what}); {FETCH_HINT}")
        run_as = _run_as()
        rundir = Path(tempfile.mkdtemp(prefix="mc-cyrus-"))
        server = cls(root, rundir)
        atexit.register(server._stop_at_exit)
        try:
            server._configure(run_as)
            server._launch(run_as, timeout)
            for login, password in users.items():
                server.add_user(login, password)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after 5 s, remove ``rundir``; safe to repeat."""
        try:
            self._stop_process()
        finally:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def __enter__(self) -> CyrusServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- using it ------------------------------------------------------------------------------------

    def add_user(self, login: str, password: str) -> None:
        """A sasldb entry for ``login`` and its mailbox (``user/<login>``, which the user sees as INBOX)."""
        if not _LOGIN.fullmatch(login) or login == ADMIN:
            raise ValueError(f"not a plain lower-case login name (or the admin's): {login!r}")
        self._set_password(login, password)
        with self._admin() as imap:
            _ok(imap, "CREATE", imap._simple_command("CREATE", _quoted(f"user/{login}")))
        self.users[login] = password

    def set_password(self, login: str, password: str) -> None:
        """Give ``login`` another password (or add the user with it): Cyrus reads the sasldb on each login."""
        if login not in self.users:
            self.add_user(login, password)
            return
        self._set_password(login, password)
        self.users[login] = password

    def deliver(self, login: str, message: bytes, folder: str = "INBOX") -> None:
        """APPEND ``message`` to ``folder`` (as the user names it) of ``login``, as if delivered."""
        with self._admin(as_user=login) as imap:
            _ok(imap, "APPEND", imap.append(_quoted(folder), None, None, message))

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.rundir / "master.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _admin(self, as_user: str | None = None) -> Iterator[imaplib.IMAP4]:
        """An imaplib session of the admin on the plain port, or (``as_user``) of a user by proxy auth."""
        imap = imaplib.IMAP4(self.host, self.ports["imap"], timeout=10)
        try:
            authzid = (as_user or "").encode()
            response = b"\0".join((authzid, ADMIN.encode(), self._admin_password.encode()))
            imap.authenticate("PLAIN", lambda _challenge: response)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def _bin(self, name: str) -> str:
        return str(self._root / "usr/lib/cyrus/bin" / name)

    def _env(self) -> dict[str, str]:
        libs = [d for d in sorted(glob.glob(str(self._root / "usr/lib/*-linux-gnu"))) if os.path.isdir(d)]
        env = {key: value for key, value in os.environ.items() if key not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, str(self._root / "usr/lib")])
        return env

    def _set_password(self, login: str, password: str) -> None:
        if any(char in password for char in "\0\r\n") or not password:
            raise ValueError("a Cyrus password must be non-empty and free of NUL, CR and LF")
        cmd = ["saslpasswd2", "-f", str(self.rundir / "sasldb2"), "-u", SERVERNAME, "-c", "-p", login]
        done = subprocess.run(cmd, input=password.encode(), capture_output=True, timeout=30, check=False,
                              **_run_as())
        if done.returncode != 0:
            raise CyrusError(f"saslpasswd2 for {login!r} failed ({done.returncode}): {done.stderr!r}")

    def _configure(self, run_as: dict[str, Any]) -> None:
        d = self.rundir
        for sub in ("conf/db", "conf/proc", "conf/socket", "conf/log", "conf/msg", "conf/user", "conf/quota",
                    "conf/lock", "spool", "sieve", "sock"):
            (d / sub).mkdir(parents=True)
        self.ports = {"imap": free_port(), "imaps": free_port()}
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", HOST)
        ca.cert_pem.write_to_path(self.ca_file)
        cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        cert.private_key_pem.write_to_path(str(d / "key.pem"))
        conf = str(d / "imapd.conf")
        (d / "imapd.conf").write_text(f"""\
configdirectory: {d}/conf
partition-default: {d}/spool
defaultpartition: default
sievedir: {d}/sieve
servername: {SERVERNAME}
admins: {ADMIN}
unixhierarchysep: yes
altnamespace: yes
virtdomains: off
allowplaintext: yes
failedloginpause: 0
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {d}/sasldb2
sasl_mech_list: {MECHANISMS}
tls_server_cert: {d}/cert.pem
tls_server_key: {d}/key.pem
idlesocket: {d}/sock/idle
lmtpsocket: {d}/sock/lmtp
notifysocket: {d}/sock/notify
syslog_prefix: mc-cyrus
""")
        (d / "cyrus.conf").write_text(f"""\
START {{
  recover cmd="{self._bin('ctl_cyrusdb')} -C {conf} -r"
}}
SERVICES {{
  imap cmd="{self._bin('imapd')} -C {conf}" listen="{HOST}:{self.ports['imap']}" prefork=0
  imaps cmd="{self._bin('imapd')} -s -C {conf}" listen="{HOST}:{self.ports['imaps']}" prefork=0
}}
DAEMON {{
  idled cmd="{self._bin('idled')} -C {conf}"
}}
""")
        if run_as:
            for path in [d, *d.rglob("*")]:
                os.chown(path, run_as["user"], run_as["group"])
        d.chmod(0o755)
        (d / "key.pem").chmod(0o640)
        self._set_password(ADMIN, self._admin_password)

    def _launch(self, run_as: dict[str, Any], timeout: float) -> None:
        cmd = [self._bin("master"), "-C", str(self.rundir / "imapd.conf"), "-M", str(self.rundir / "cyrus.conf"),
               "-p", str(self.rundir / "master.pid"), "-D"]
        with open(self.rundir / "master.log", "ab") as log:
            self._proc = subprocess.Popen(cmd, cwd=self.rundir, env=self._env(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True, **run_as)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Ready = both ports accept a connection and send a Cyrus greeting."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        last: dict[str, str] = {}
        while pending:
            code = self._proc.poll()
            if code is not None:
                log = self.log_tail()
                kind = CyrusNotInstalled if "error while loading shared libraries" in log else CyrusError
                raise kind(f"Cyrus master exited with {code} while starting; master.log:\n{log}"
                           + (f"\n{FETCH_HINT}" if kind is CyrusNotInstalled else ""))
            for name, port in list(pending.items()):
                try:
                    greeting = self._greeting(port, tls=name == "imaps")
                except (OSError, ValueError) as exc:
                    last[name] = f"{type(exc).__name__}: {exc}"
                    continue
                if not greeting:
                    last[name] = "connection closed without a greeting"
                    continue
                match = _GREETING.search(greeting)
                if match is None:
                    raise CyrusError(f"port {port} ({name}) greets as something else: {greeting!r}")
                if name == "imap":
                    self.greeting = greeting.decode(errors="replace").strip()
                    self.version = match.group(1).decode().split("-")[0]  # "3.6.1-Debian-..." -> "3.6.1"
                del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                self._stop_process()
                details = "; ".join(f"{name} {self.ports[name]}: {last.get(name, '?')}" for name in pending)
                raise CyrusError(f"Cyrus not ready within {timeout} s ({details}); master.log (Cyrus itself logs "
                                 f"only to syslog):\n{self.log_tail()}")
            time.sleep(0.05)

    def _greeting(self, port: int, *, tls: bool) -> bytes:
        with socket.create_connection((self.host, port), timeout=2) as sock:
            if tls:
                context = ssl.create_default_context(cafile=self.ca_file)
                with context.wrap_socket(sock, server_hostname="localhost") as wrapped:
                    return wrapped.recv(4096)
            return sock.recv(4096)

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _end_group(proc)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def _ok(imap: imaplib.IMAP4, what: str, result: tuple[str, list[Any]]) -> None:
    status, data = result
    if status != "OK":
        raise CyrusError(f"{what} failed: {status} {data!r}")


def _run_as() -> dict[str, Any]:
    """Popen arguments that run a command as the ``cyrus`` user (none needed if we are that user)."""
    try:
        entry = pwd.getpwnam(ADMIN)
    except KeyError:
        raise CyrusNotInstalled(f"there is no `{ADMIN}` OS user; {FETCH_HINT}") from None
    if os.geteuid() == entry.pw_uid:
        return {}
    if os.geteuid() != 0:
        raise CyrusError(f"Cyrus runs only as root or as the `{ADMIN}` user (we are uid {os.geteuid()})")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group (master stops its children too), then SIGKILL whatever is left after 5 s."""
    pgid = proc.pid  # start_new_session: master leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
