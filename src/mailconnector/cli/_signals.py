"""SIGINT / SIGTERM for long commands: the first asks for a clean stop, the second ends the process."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(what: str, *, on_second: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Yields an event the first signal sets (the command finishes what is under way, then stops). The
    second raises ``KeyboardInterrupt``, or calls ``on_second`` (which should end the process at once).
    The previous handlers come back afterwards, so that a program calling the CLI in-process keeps its own."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            if on_second is not None:
                on_second()
            raise KeyboardInterrupt
        stop.set()
        # Plain os.write: the handler may interrupt anything, even an import or a print of the console's.
        with contextlib.suppress(OSError):
            os.write(2, f"{signal.Signals(signum).name}: {what} (again to abort)\n".encode())

    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield stop
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
