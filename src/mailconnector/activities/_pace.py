"""How fast an account may send, for every process and worker that sends as it.

The pace is kept in the state store (one row per account), so an activity's ``rate_limit``, the connection's
``limits`` (its provider's documented ones by default) and a server's request to slow down hold for all
senders together: each message takes the next slot (``interval`` after the one before, whoever took it), a
day's recipients are counted up to the limit, and a throttling reply pushes every later slot back. Without a
store the pace is this activity's own.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING

from ..errors import LimitError, MessageError, ServerResponseError

if TYPE_CHECKING:
    from ..connection import Connection
    from ..state import StateStore

__all__ = ["Pace", "throttled"]

# A 4xx reply that asks the sender to slow down (not one about a mailbox or a message).
_THROTTLE = re.compile(r"\b4\.7\.\d+\b|rate.?limit|throttl|too many (messages|connections|requests|sessions)|"
                       r"slow down|try again later|sending limit|message rate", re.IGNORECASE)
_LOOK_EVERY = 1.0  # without a limit of its own, a sender looks for another's slow-down this often


def throttled(exc: BaseException) -> bool:
    return (isinstance(exc, ServerResponseError) and exc.code in (421, 450, 451, 452)
            and bool(_THROTTLE.search(f"{exc.code} {exc.text} {exc.message}")))


class Pace:
    def __init__(self, connection: Connection, rate_limit: float | None, store: StateStore | None) -> None:
        self.limits = connection.sending_limits()
        per_minute = self.limits.messages_per_minute
        self.interval = max(1.0 / rate_limit if rate_limit else 0.0, 60.0 / per_minute if per_minute else 0.0)
        self.name = f"send:{connection.account}"
        self.store = store
        self._lock = threading.Lock()
        self._next = 0.0  # monotonic: the next local slot, or the end of a slow-down seen in the store
        self._look_at = 0.0

    def wait(self, stop: threading.Event) -> bool:
        """Wait for this message's slot; True when ``stop`` was set meanwhile."""
        now = time.monotonic()
        with self._lock:
            if self.store is not None and self.interval:
                slot = now + self.store.reserve_send(self.name, self.interval)
            elif self.store is not None:
                if now >= self._look_at:  # another sender's slow-down, looked for once a second
                    self._look_at = now + _LOOK_EVERY
                    self._next = max(self._next, now + self.store.reserve_send(self.name, 0.0))
                slot = self._next
            else:
                slot = max(now, self._next)
                self._next = slot + self.interval
        return slot > now and stop.wait(slot - now)

    def slow_down(self, seconds: float) -> None:
        """The server asked to slow down: no sender of this account sends for ``seconds``."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)
        if self.store is not None:
            self.store.slow_down(self.name, seconds)

    def check_recipients(self, count: int) -> None:
        """Count a message's recipients against the limits (raises, counting nothing, past one)."""
        per_message, per_day = self.limits.recipients_per_message, self.limits.recipients_per_day
        if per_message is not None and count > per_message:
            raise MessageError(f"{count} recipients; this account may send to at most {per_message} a message",
                               hint="split the record into several, or set the connection's limits")
        if per_day is not None and self.store is not None and not self.store.count_recipients(
                self.name, count, per_day=per_day):
            raise LimitError(f"the account's limit of {per_day} recipients a day (UTC) is reached: not sent",
                             hint="run again tomorrow: what was sent is skipped (or raise limits.recipients_per_day "
                             "if the provider allows more)")
