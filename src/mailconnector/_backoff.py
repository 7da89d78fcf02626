"""Waits between attempts: one rule for every retry loop (sending, fetching, watching, triggers)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``first`` up to ``most``; ``reset()`` after a success starts again.

    With ``jitter`` each delay is drawn between half and one and a half times its step, so that senders
    that failed together do not all come back at the same instant.
    """

    def __init__(self, first: float, most: float, *, jitter: bool = False) -> None:
        self.first = first
        self.most = most
        self.jitter = jitter
        self._step = first

    def next(self) -> float:
        """The delay to wait now; the next one is twice as long (up to ``most``)."""
        step = min(self._step, self.most)
        self._step = step * 2
        return step * (0.5 + random.random()) if self.jitter else step

    def reset(self) -> None:
        self._step = self.first
