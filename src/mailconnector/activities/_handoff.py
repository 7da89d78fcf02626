"""A queue between the thread that fetches and parses email and the one that takes the records.

Why a queue of our own: it is bounded in bytes as well as in entries (a record holds about as much as
its message: bodies, inline attachments), so reading ahead holds at most about one fetch batch more
whatever the messages' sizes; and the taker can close it, which wakes and stops the producer at once
when the iteration is abandoned.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """One producer, one taker. An entry bigger than the byte budget still goes through, alone."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._cond = threading.Condition()
        self._entries: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.closed = False

    def put(self, entry: T, size: int = 0) -> bool:
        """Wait for room, then add ``entry``; False (and nothing added) once the taker has closed it."""
        with self._cond:
            while not self.closed and self._entries and (
                    len(self._entries) >= self._max_entries or self._bytes + size > self._max_bytes):
                self._cond.wait()
            if self.closed:
                return False
            self._entries.append((entry, size))
            self._bytes += size
            self._cond.notify_all()
            return True

    def get(self) -> T:
        with self._cond:
            while not self._entries:
                self._cond.wait()
            entry, size = self._entries.popleft()
            self._bytes -= size
            self._cond.notify_all()
            return entry

    def close(self) -> None:
        """The taker is gone: drop what is queued and release a producer waiting for room."""
        with self._cond:
            self.closed = True
            self._entries.clear()
            self._bytes = 0
            self._cond.notify_all()
