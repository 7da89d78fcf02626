"""Holding a lease over time, and telling a live claim holder from a dead one.

A consumer of a folder holds ``read:ACCOUNT/FOLDER``; a sender holds ``sender:HOLDER`` while it runs, so
that a claim it left in the ledger can be told apart: a live sender's claim is in flight, a dead one's is
``uncertain`` (it may have written the final dot).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING

from ..errors import LeaseBusyError, MailConnectorError, StateError
from ..logs import in_this_run
from ._model import Fence

if TYPE_CHECKING:
    from ._model import Leases

__all__ = [
    "LeaseKeeper",
    "SenderIdentity",
    "gone_from_this_host",
    "holder_alive",
    "lease_busy_error",
    "lease_lost_error",
    "new_holder",
]

log = logging.getLogger("mailconnector.state")


def _this_host() -> str:
    """The host name, and the PID namespace where there is one: two containers that share a host name
    but not their process ids are then never taken for one host (a live holder for a dead one)."""
    name = socket.gethostname().replace(":", "_")
    try:
        return f"{name}~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


_HOST = _this_host()


class LeaseKeeper:
    """Takes a lease, renews it from a thread every third of its time, gives it back.

    A renewal that finds another holder (this process stalled past the lease time and another consumer
    took over) sets ``lost``; the holder stops at its next ``check()``, and the store refuses its fenced
    writes anyway.
    """

    def __init__(self, store: Leases, name: str, ttl: float, holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.holder = holder or new_holder()
        self.ttl = ttl
        self.fence: Fence | None = None
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> bool:
        fence = self.store.acquire_lease(self.name, ttl=self.ttl, holder=self.holder)
        if fence is None:
            info = self.store.lease_info(self.name)
            if info is None or not gone_from_this_host(info.holder):
                return False
            # Its holder was a process on this host that no longer exists (killed): no need to wait out
            # its lease. Expired by its exact holder and token, so a live newcomer is never pushed out.
            log.info("the lease on %s was held by a process that has ended: taking it over",
                     self.name.split(":", 1)[-1])
            self.store.release_lease(Fence(info.name, info.holder, info.token))
            fence = self.store.acquire_lease(self.name, ttl=self.ttl, holder=self.holder)
            if fence is None:
                return False
        self.fence = fence
        self._done.clear()
        self._thread = threading.Thread(target=in_this_run(self._renew), name="mc-lease", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._done.wait(self.ttl / 3):
            assert self.fence is not None
            try:
                if not self.store.renew_lease(self.fence, ttl=self.ttl):
                    log.error("lost the lease on %s to another consumer", self.name.split(":", 1)[-1])
                    self.lost.set()
                    return
            except MailConnectorError as exc:  # a busy or unreachable store: try again at the next turn
                log.warning("could not renew the lease on %s: %s", self.name, exc.message)

    def polled(self, *, next_within: float) -> None:
        """Note that the holder just looked for work and means to look again within ``next_within`` seconds:
        the console's health page flags a watcher whose heartbeat goes on but whose polls stopped."""
        if self.fence is None:
            return
        try:
            self.store.mark_polled(self.fence, next_within=next_within)
        except MailConnectorError as exc:  # a busy store: the next poll notes it again
            log.warning("could not note the poll of %s: %s", self.name, exc.message)

    def check(self) -> None:
        if self.lost.is_set():
            raise lease_lost_error(self.name)

    def stop(self, *, forget: bool = False) -> None:
        """Stop renewing and release the lease (if it is still ours). ``forget``: remove it altogether, for a
        lease on something done for good (a finished chunk), which no later holder will need."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.fence is not None:
            try:
                (self.store.drop_lease if forget else self.store.release_lease)(self.fence)
            except MailConnectorError as exc:
                log.warning("could not release %s: %s", self.name, exc.message)
            self.fence = None


def new_holder() -> str:
    """``host:pid:random``: unique, and telling which process on which host holds a lease or a claim."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_lost_error(name: str) -> StateError:
    return StateError(f"lost the lease on {name.split(':', 1)[-1]} to another consumer: nothing more is "
                      "acknowledged by this run",
                      hint="this process was paused or cut off for longer than settings.lease_seconds and "
                      "another one took over; what this one did not acknowledge is read again")


def lease_busy_error(store: Leases, name: str) -> LeaseBusyError:
    info = store.lease_info(name)
    until = f" (its lease runs for up to {max(0.0, info.expires_in):.0f} s more)" if info else ""
    return LeaseBusyError(f"{name.split(':', 1)[-1]} is being processed by another run{until}",
                      hint="only one consumer per mailbox folder at a time: wait for that run to finish")


class SenderIdentity:
    """Who claims Message-IDs for one ``send``: ``host:pid:random``, kept alive by a lease in the store."""

    TTL = 30.0

    def __init__(self, store: Leases) -> None:
        self.holder = new_holder()
        self.keeper = LeaseKeeper(store, f"sender:{self.holder}", self.TTL, holder=self.holder)
        self._started = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            if not self._started:
                if not self.keeper.take():  # a fresh random name: only a broken store refuses it
                    raise StateError(f"could not register sender {self.holder} in the state store")
                self._started = True

    def stop(self) -> None:
        with self._lock:
            if self._started:
                self.keeper.stop()
                self._started = False


def holder_alive(store: Leases, holder: str) -> bool:
    """Whether the sender ``holder`` may still be at work: its lease is live, and, when it ran on this
    host, its process still exists (a killed process on this host is known dead at once)."""
    if gone_from_this_host(holder):
        return False
    return store.lease_info(f"sender:{holder}") is not None


def gone_from_this_host(holder: str) -> bool:
    """A holder named ``host:pid:...`` that ran on this host in a process that no longer exists. (A
    reused pid only makes us wait for the lease to run out: the safe direction.)"""
    host, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
