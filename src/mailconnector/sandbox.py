"""A local mail server on loopback: Dovecot (IMAP + LMTP) and Postfix (SMTP delivering into Dovecot).

Used by ``mailconnector sandbox`` and by the test suite, so both run against the same real servers.
Everything lives in one run directory: configs, a private CA and certificate, users, mail, queues,
logs. Nothing listens beyond 127.0.0.1 (and 127.0.0.2 for the "no STARTTLS / plain login refused" case).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._cluster._process import free_ports
from ._sandbox_config import dovecot_conf, postfix_main_cf, postfix_master_cf
from .errors import ConfigError, StateError

__all__ = ["Sandbox", "SandboxInfo", "SandboxUser"]

DOMAIN = "example.test"
DEFAULT_USERS = ("alice", "bob", "carol")
POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
INSTALL_HINT = (
    "install the Debian packages: apt-get install -y --no-install-recommends "
    "dovecot-imapd dovecot-lmtpd postfix  (or run ./dev setup)"
)
_STATE_FILE = "sandbox.json"


@dataclass(frozen=True)
class SandboxUser:
    address: str
    password: str = field(repr=False)


@dataclass
class SandboxInfo:
    """What a client needs to reach the sandbox; saved as ``sandbox.json`` in the run directory."""

    rundir: str
    host: str
    ports: dict[str, int]
    ca_file: str
    users: list[dict[str, str]]
    oauth_key_file: str
    pids: dict[str, int] = field(default_factory=dict)
    project_file: str | None = None
    # With --with-cluster: the passwords of its PostgreSQL role and its Redis (ports and pids beside the others).
    state_password: str = field(default="", repr=False)
    broker_password: str = field(default="", repr=False)

    @property
    def cluster(self) -> bool:
        return "postgres" in self.ports

    def password(self, user: str) -> str:
        for u in self.users:
            if u["address"] == user or u["address"].split("@")[0] == user:
                return u["password"]
        raise KeyError(user)


def check_installed() -> None:
    """Say exactly what to install when a server binary is missing."""
    missing = [
        name
        for name, ok in (
            ("dovecot", shutil.which("dovecot") is not None or Path("/usr/sbin/dovecot").exists()),
            ("dovecot lmtp", Path("/usr/lib/dovecot/lmtp").exists()),
            ("postfix", POSTFIX_MASTER.exists()),
        )
        if not ok
    ]
    if missing:
        raise ConfigError(f"the sandbox needs {', '.join(missing)}, which is not installed", hint=INSTALL_HINT)


def check_cluster_installed() -> None:
    from ._cluster.postgres import PostgresNotInstalled, find_bindir
    from ._cluster.redis import RedisNotInstalled, find_binary

    missing = []
    try:
        find_bindir()
    except PostgresNotInstalled:
        missing.append("the PostgreSQL server")
    try:
        find_binary()
    except RedisNotInstalled:
        missing.append("redis-server")
    if missing:
        raise ConfigError(f"--with-cluster needs {' and '.join(missing)}, which is not installed",
                          hint="install the Debian packages: apt-get install -y --no-install-recommends "
                          "postgresql redis-server  (or run ./dev setup)")


def _dovecot_bin() -> str:
    return shutil.which("dovecot") or "/usr/sbin/dovecot"


class Sandbox:
    """Start, describe and stop the local mail servers.

    ``Sandbox.start()`` returns a running sandbox; use it as a context manager or call ``stop()``.
    A sandbox started with ``--background`` is found again with ``Sandbox.attach(rundir)``.
    """

    def __init__(self, info: SandboxInfo) -> None:
        self.info = info
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- start
    @classmethod
    def start(cls, rundir: Path | None = None, *, users: tuple[str, ...] = DEFAULT_USERS,
              timeout: float = 15.0, cluster: bool = False) -> Sandbox:
        """``cluster``: also a PostgreSQL (the shared state) and a Redis (the broker), for distributed runs."""
        check_installed()
        if cluster:
            check_cluster_installed()
        if rundir is None:
            # Not pytest's tmp_path: the daemons run as unprivileged users and need to traverse it.
            rundir = Path(tempfile.mkdtemp(prefix="mc-sbx-"))
        rundir = rundir.resolve()
        rundir.mkdir(parents=True, exist_ok=True)
        if len(str(rundir)) > 60:
            raise ConfigError(f"run directory path too long for unix sockets: {rundir}",
                              hint="use a shorter path (unix socket paths are limited to 108 bytes)")
        os.chmod(rundir, 0o755)
        names = ["imap", "imaps", "lmtp", "smtp", "submission", "smtps", "smtp_notls"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        ports["imap_notls"] = free_ports(1, "127.0.0.2")[0] if _can_bind("127.0.0.2") else 0
        user_list = [{"address": f"{u}@{DOMAIN}", "password": secrets.token_urlsafe(12)} for u in users]
        info = SandboxInfo(
            rundir=str(rundir), host="127.0.0.1", ports=ports, ca_file=str(rundir / "tls" / "ca.pem"),
            users=user_list, oauth_key_file=str(rundir / "oauth-keys" / "default" / "HS256" / "default"),
        )
        sbx = cls(info)
        try:
            sbx._write_tls()
            sbx._write_dovecot()
            sbx._write_postfix()
            sbx._launch(timeout)
            if cluster:
                sbx._launch_cluster()
        except BaseException:
            sbx.stop()
            raise
        sbx.save()
        return sbx

    @classmethod
    def attach(cls, rundir: Path) -> Sandbox:
        path = rundir / _STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"no sandbox state in {rundir}", hint="start one with: mailconnector sandbox") from exc
        return cls(SandboxInfo(**data))

    def save(self) -> None:
        path = Path(self.info.rundir) / _STATE_FILE
        path.write_text(json.dumps(asdict(self.info), indent=2))
        os.chmod(path, 0o600)

    # ------------------------------------------------------------- configure
    def _write_tls(self) -> None:
        import trustme  # an optional dependency: only the sandbox needs it

        tls = Path(self.info.rundir) / "tls"
        tls.mkdir(exist_ok=True)
        ca = trustme.CA(organization_name="mailconnector sandbox CA")
        cert = ca.issue_cert("localhost", "127.0.0.1", "127.0.0.2", "::1", "mail.example.test")
        ca.cert_pem.write_to_path(str(tls / "ca.pem"))
        cert.private_key_pem.write_to_path(str(tls / "key.pem"))
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        (tls / "cert.pem").write_bytes(chain)
        os.chmod(tls / "key.pem", 0o600)
        # A key for the oauth2 passdb (local JWT validation, HS256); tests sign tokens with it.
        keyfile = Path(self.info.oauth_key_file)
        keyfile.parent.mkdir(parents=True, exist_ok=True)
        keyfile.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        for d in (keyfile.parent, keyfile.parent.parent, keyfile.parent.parent.parent):
            os.chmod(d, 0o755)
        os.chmod(keyfile, 0o644)

    def _write_dovecot(self) -> None:
        r = Path(self.info.rundir)
        p = self.info.ports
        (r / "mail").mkdir(exist_ok=True)
        os.chmod(r / "mail", 0o777)
        self._write_users()
        (r / "dovecot-oauth2.conf.ext").write_text(
            "introspection_mode = local\n"
            f"local_validation_key_dict = fs:posix:prefix={r}/oauth-keys/\n"
            "username_attribute = sub\n"
        )
        notls = ""
        listen = "127.0.0.1"
        if p["imap_notls"]:
            listen = "127.0.0.1, 127.0.0.2"
            # On 127.0.0.2: no TLS at all and plain-text logins refused, for the STARTTLS-required tests.
            notls = (
                f"  inet_listener imap_notls {{\n    address = 127.0.0.2\n    port = {p['imap_notls']}\n  }}\n"
            )
        local_block = (
            "local 127.0.0.2 {\n  ssl = no\n  disable_plaintext_auth = yes\n}\n" if p["imap_notls"] else ""
        )
        conf = dovecot_conf(r, p, listen=listen, notls=notls, local_block=local_block)
        (r / "dovecot.conf").write_text(conf)

    def _write_users(self) -> None:
        """Dovecot's passwd-file, which Postfix's logins check too; Dovecot rereads it when it changes."""
        r = Path(self.info.rundir)
        uid, gid = _nobody()
        lines = [
            f"{u['address']}:{{PLAIN}}{u['password']}:{uid}:{gid}::{r}/mail/{u['address'].split('@')[0]}::"
            for u in self.info.users
        ]
        path, tmp = r / "users", r / "users.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
        # Dovecot notices a change by the file's mtime in whole seconds: a rewrite within the same second
        # as the last one would go unseen, so the new file is stamped at least a second later.
        with contextlib.suppress(FileNotFoundError):
            stamp = max(time.time(), path.stat().st_mtime + 1)
            os.utime(tmp, (stamp, stamp))
        tmp.replace(path)

    def set_password(self, user: str, password: str) -> None:
        """Give a sandbox user another password, for IMAP and SMTP alike (to try one with ä, 密 or quotes)."""
        if not password or any(c in password for c in ":\r\n\0"):
            raise ConfigError("a sandbox password must be non-empty, without ':', CR, LF or NUL")
        address = self.user(user).address
        for entry in self.info.users:
            if entry["address"] == address:
                entry["password"] = password
        self._write_users()
        self.save()
        # Dovecot looks at the file at most once a second: from the next whole second on, logins see it.
        time.sleep(math.ceil(time.time()) - time.time() + 0.05)

    def _write_postfix(self) -> None:
        r = Path(self.info.rundir)
        p = self.info.ports
        pf = r / "postfix"
        pf.mkdir(exist_ok=True)
        (r / "pf-queue").mkdir(exist_ok=True)
        (r / "pf-data").mkdir(exist_ok=True)
        # Known users get delivered; mail for any other example.test address is refused at RCPT time.
        (pf / "vmailbox").write_text("".join(f"{u['address']} ok\n" for u in self.info.users))
        main = postfix_main_cf(r, p, pf, DOMAIN)
        master = postfix_master_cf(p)
        (pf / "main.cf").write_text(main)
        (pf / "master.cf").write_text(master)
        # Postfix waits ~2 s on config files newer than its start; backdate them.
        past = time.time() - 120
        for f in pf.iterdir():
            os.utime(f, (past, past))

    # ---------------------------------------------------------------- launch
    def _launch(self, timeout: float) -> None:
        r = Path(self.info.rundir)
        dlog = open(r / "dovecot.stderr", "wb")  # noqa: SIM115 - handed to the child
        self._procs["dovecot"] = subprocess.Popen(
            [_dovecot_bin(), "-F", "-c", str(r / "dovecot.conf")],
            stdout=dlog, stderr=subprocess.STDOUT, start_new_session=True,
        )
        dlog.close()
        self.info.pids["dovecot"] = self._procs["dovecot"].pid
        p = self.info.ports
        self._wait_ports([p["imap"], p["imaps"], p["lmtp"]], timeout, "dovecot")
        pfdir = r / "postfix"
        _run_quiet(["/usr/sbin/postfix", "-c", str(pfdir), "set-permissions"], ignore=True)
        for sub in ("pid", "public", "private", "maildrop"):
            (r / "pf-queue" / sub).mkdir(exist_ok=True)
        # No `postfix check`: it only warns, and costs a quarter of the start time.
        plog = open(r / "postfix.stderr", "wb")  # noqa: SIM115
        env = dict(os.environ, MAIL_CONFIG=str(pfdir))
        self._procs["postfix"] = subprocess.Popen(
            [str(POSTFIX_MASTER), "-c", str(pfdir)],
            stdout=plog, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
        plog.close()
        self.info.pids["postfix"] = self._procs["postfix"].pid
        self._wait_ports([p["smtp"], p["submission"], p["smtps"], p["smtp_notls"]], timeout, "postfix")

    def _launch_cluster(self) -> None:
        """PostgreSQL and Redis with their data in the run directory, left running for ``stop()`` (from this
        process or another: by pid), each with a password of its own."""
        from ._cluster import PostgresError, PostgresServer, RedisServer

        rundir = Path(self.info.rundir)
        self.info.state_password = secrets.token_urlsafe(16)
        self.info.broker_password = secrets.token_urlsafe(16)
        pg = PostgresServer(parent=rundir, stop_at_exit=False)
        try:
            pg.start()
            self.info.pids["postgres"], self.info.ports["postgres"] = pg.pid, pg.port
            pg.create_database("mailconnector", owner="mailconnector", password=self.info.state_password)
        except PostgresError as exc:
            raise StateError(f"the sandbox's PostgreSQL did not start: {exc}",
                             hint="see its server.log in the run directory") from None
        redis = RedisServer(parent=rundir, password=self.info.broker_password, persist=True, stop_at_exit=False)
        try:
            redis.start()
        except RuntimeError as exc:
            raise StateError(f"the sandbox's Redis did not start: {exc}") from None
        self.info.pids["redis"], self.info.ports["redis"] = redis.pid, redis.port

    def _wait_ports(self, ports: list[int], timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while pending:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise StateError(f"{name} exited with status {proc.returncode} while starting",
                                 hint=f"see {self._log_hint(name)}")
            port = pending[0]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise StateError(f"{name} did not open port {port} within {timeout:.0f} s",
                                 hint=f"see {self._log_hint(name)}")
            time.sleep(0.02)

    def _log_hint(self, name: str) -> str:
        r = Path(self.info.rundir)
        return str(r / ("dovecot.log" if name == "dovecot" else "postfix.log"))

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stop the servers (TERM to their process groups; PostgreSQL: a fast shutdown) and wait for them."""
        for name, sig in (("redis", signal.SIGTERM), ("postgres", signal.SIGINT)):
            server_pid = self.info.pids.pop(name, 0)
            if server_pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(server_pid, sig)
                _wait_gone(server_pid, timeout=30)
                _wait_group_gone(server_pid)
        for name in ("postfix", "dovecot"):
            pid = self.info.pids.get(name)
            if not pid:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            proc = self._procs.get(name)
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            else:
                _wait_gone(pid)
            # The master's children (smtpd, imap-login, ...) exit just after it: wait for the whole group.
            _wait_group_gone(pid)
            self.info.pids.pop(name, None)

    def remove(self) -> None:
        """Stop and delete the run directory."""
        self.stop()
        shutil.rmtree(self.info.rundir, ignore_errors=True)

    def restart(self, name: str) -> None:
        """Restart one server (``dovecot`` or ``postfix``) in place, same ports: for fault tests."""
        pid = self.info.pids.get(name)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            proc = self._procs.get(name)
            if proc is not None:
                proc.wait(timeout=10)
            # Children outliving the master (imap-login, smtpd) still hold the listening sockets: a client
            # would reach a dying process instead of the new server.
            _wait_group_gone(pid)
        if name == "dovecot":
            r = Path(self.info.rundir)
            self._procs["dovecot"] = subprocess.Popen(
                [_dovecot_bin(), "-F", "-c", str(r / "dovecot.conf")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            self.info.pids["dovecot"] = self._procs["dovecot"].pid
            p = self.info.ports
            self._wait_ports([p["imap"], p["imaps"], p["lmtp"]], 15, "dovecot")
        else:
            r = Path(self.info.rundir)
            pfdir = r / "postfix"
            env = dict(os.environ, MAIL_CONFIG=str(pfdir))
            self._procs["postfix"] = subprocess.Popen(
                [str(POSTFIX_MASTER), "-c", str(pfdir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
            )
            self.info.pids["postfix"] = self._procs["postfix"].pid
            p = self.info.ports
            self._wait_ports([p["smtp"], p["submission"], p["smtps"], p["smtp_notls"]], 15, "postfix")
        self.save()

    def running(self) -> bool:
        return all(_alive(pid) for pid in self.info.pids.values()) and bool(self.info.pids)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- helpers
    def user(self, name: str = "alice") -> SandboxUser:
        address = name if "@" in name else f"{name}@{DOMAIN}"
        return SandboxUser(address, self.info.password(address))

    def maildir(self, name: str = "alice") -> Path:
        return Path(self.info.rundir) / "mail" / name.split("@")[0] / "Maildir"

    def connection_dict(self, user: str = "alice", *, smtp: str = "submission", imap: str = "imaps",
                        password: str | None = None) -> dict[str, Any]:
        """A connection entry (SPEC section 1 fields) for one sandbox user."""
        u = self.user(user)
        smtp_sec = {"smtp": "none", "submission": "starttls", "smtps": "ssl", "smtp_notls": "none"}[smtp]
        imap_sec = {"imap": "starttls", "imaps": "ssl"}[imap]
        return {
            "auth": {"type": "basic", "username": u.address,
                     "password": password if password is not None else u.password},
            "smtp": {"host": "127.0.0.1", "port": self.info.ports[smtp], "security": smtp_sec},
            "imap": {"host": "127.0.0.1", "port": self.info.ports[imap], "security": imap_sec},
            "tls": {"ca_file": self.info.ca_file},
            "timeouts": {"connect": 5, "command": 30},
            "from_address": u.address,
        }

    def write_project(self, path: Path) -> Path:
        """A project file whose connections point at this sandbox; passwords stay in files beside it."""
        import yaml

        secrets_dir = Path(self.info.rundir) / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        os.chmod(secrets_dir, 0o700)
        connections: dict[str, Any] = {}
        for u in self.info.users:
            local = u["address"].split("@")[0]
            pw_file = secrets_dir / f"{local}.password"
            pw_file.write_text(u["password"])
            os.chmod(pw_file, 0o600)
            conn = self.connection_dict(local, password=f"${{file:{pw_file}}}")
            connections["sandbox" if local == "alice" else f"sandbox-{local}"] = conn
        header = (
            "# Written by `mailconnector sandbox`: connections to the local sandbox mail server.\n"
            "# Passwords are read from files (${file:...}); they are never written here in clear.\n"
        )
        data: dict[str, Any] = {"connections": connections}
        if self.info.cluster:
            header += ("# With its PostgreSQL (settings.state) and Redis (settings.broker): start workers with\n"
                       "# `mailconnector worker`, then `mailconnector run send-outbox --distributed --wait`.\n")
            for name, secret in (("state", self.info.state_password), ("broker", self.info.broker_password)):
                pw_file = secrets_dir / f"{name}.password"
                pw_file.write_text(secret)
                os.chmod(pw_file, 0o600)
            p = self.info.ports
            data["activities"] = {"outbox": {"type": "file", "path": "outbox.jsonl"},
                                  "mail-out": {"type": "send-email", "connection": "sandbox"}}
            data["operations"] = {"send-outbox": {"source": "outbox", "target": "mail-out"}}
            data["settings"] = {
                "state": f"postgresql://mailconnector:${{file:{secrets_dir / 'state.password'}}}@127.0.0.1:"
                         f"{p['postgres']}/mailconnector",
                "broker": f"redis://:${{file:{secrets_dir / 'broker.password'}}}@127.0.0.1:{p['redis']}/0"}
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        self.info.project_file = str(path)
        self.save()
        return path


def _can_bind(host: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _run_quiet(cmd: list[str], *, ignore: bool = False) -> None:
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode and not ignore:
        raise StateError(f"{' '.join(cmd)} failed: {res.stderr.decode(errors='replace')[:400]}")


def _exists(target: int, *, group: bool = False) -> bool:
    """Is there a process ``target`` (with ``group``: a process group)? Asked with signal 0, which says so
    also for one that is not ours to signal, and for a zombie: the callers look at /proc for those."""
    try:
        (os.killpg if group else os.kill)(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...); None when it is gone.
    Split after the last ")" because the command name may hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _alive(pid: int) -> bool:
    """Is ``pid`` running? A zombie (stopped, waiting for init to reap it) is not."""
    return _exists(pid) and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields and fields[0] == "Z")


def _group_alive(pgid: int) -> bool:
    """Is any process of the group still running? Zombies waiting for init to reap them do not count."""
    if not _exists(pgid, group=True):
        return False
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return True
    for entry in entries:
        fields = _stat_fields(entry)  # state ppid pgrp ...
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.01)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
