"""A real, throwaway Redis server: Debian's ``redis-server`` on a free loopback port, in a temporary
directory, gone again after ``stop()``. The sandbox's broker (``sandbox --with-cluster``: a password, and its
queues kept on disk), and the tests' (nothing saved: ``--save '' --appendonly no``).

``restart()`` keeps the port (a broker that went away and came back; without persistence, its queues lost).
Only the standard library is used.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ._process import ServerProcess, free_port

INSTALL_HINT = "run `./dev setup` (it installs Debian's `redis-server` package) or `apt-get install redis-server`"


class RedisNotInstalled(RuntimeError):
    """The server binary is missing: the machine was not set up, which is not a test failure of the code."""


def find_binary() -> str:
    """Debian's ``redis-server``: on PATH, or where the package puts it (``/usr/bin`` may be off PATH)."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                              else None)
    if binary is None:
        raise RedisNotInstalled(f"redis-server not found; {INSTALL_HINT}")
    return binary


class RedisServer(ServerProcess):
    def __init__(self, *, parent: Path | None = None, password: str | None = None, persist: bool = False,
                 stop_at_exit: bool = True) -> None:
        super().__init__()
        self.port = 0
        self.directory: Path | None = None
        self.parent = parent
        self.password = password
        self.persist = persist
        self.stop_at_exit = stop_at_exit

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = find_binary()
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="mc-redis-", dir=str(self.parent) if self.parent else None))
            if self.stop_at_exit:
                atexit.register(self.stop)
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            if self._launch(binary):
                return self
        raise RuntimeError(f"redis-server did not start; its log:\n{self.log_tail()}")

    def _launch(self, binary: str) -> bool:
        assert self.directory is not None
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115  (the child keeps it)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.persist else "no", "--dir", str(self.directory), "--daemonize", "no",
                "--protected-mode", "yes"]
        if self.password:
            argv += ["--requirepass", self.password]
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    sock.sendall(auth + b"PING\r\n")
                    answer = b""
                    while answer.count(b"\r\n") < (2 if self.password else 1):
                        chunk = sock.recv(64)
                        if not chunk:
                            break
                        answer += chunk
                    if answer.endswith(b"+PONG\r\n"):
                        return True
            except OSError:
                time.sleep(0.05)
        self._kill()
        return False

    def log_tail(self) -> str:
        if self.directory is None or not (self.directory / "redis.log").exists():
            return ""
        return (self.directory / "redis.log").read_text(errors="replace")[-2000:]

    def _kill(self) -> None:
        """SIGKILL to its process group: it was started in a session of its own."""
        self._end_process((signal.SIGKILL, 10.0), group=True)

    def restart(self) -> None:
        """Down and up again on the same port: its queues are gone (nothing was saved)."""
        self._kill()
        if not self._launch(find_binary()):
            raise RuntimeError(f"redis-server did not start again; its log:\n{self.log_tail()}")

    def down(self) -> None:
        """Stop it, keeping the port and directory for ``restart()``."""
        self._kill()

    def stop(self) -> None:
        self._kill()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
