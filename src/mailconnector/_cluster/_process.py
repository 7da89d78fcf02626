"""What the throwaway servers share: one child process each, on a free loopback port, that must not outlive
its stop. Only the standard library is used, like the servers themselves."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess

__all__ = ["ServerProcess", "free_port", "free_ports"]


def free_port() -> int:
    """A port nobody listens on right now (start() retries with another one if it is taken meanwhile)."""
    return free_ports(1)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different ports nobody listens on right now: all are held open together while they are
    chosen, so that none is handed out twice."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class ServerProcess:
    """The server's process, and how it is ended: the servers differ in how they start and in which signals
    stop them, not in keeping track of the process."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (0 when none): the sandbox keeps it to stop a server it left running."""
        return self._proc.pid if self._proc is not None else 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _end_process(self, *steps: tuple[signal.Signals, float], group: bool = False) -> None:
        """Forget the process and send it each signal of ``steps`` in turn, waiting up to its seconds, until it
        has exited; ``group``: to its whole process group (a server started in a session of its own).

        Forgotten first, so that a second call (``stop()`` after a failed start) finds nothing to do.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, timeout in steps:
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
