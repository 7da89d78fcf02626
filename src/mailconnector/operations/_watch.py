"""Watch mode: keep an operation running, waiting with IMAP IDLE (else polling) between runs, one watcher per
folder (its lease held for the whole watch), reconnecting with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._backoff import Backoff
from ..activities.endpoints import ReadEmailSource, build_source
from ..errors import ConfigError, TransportError
from ..project import Project
from ..state import LeaseKeeper, lease_busy_error
from ._engine import RunResult, run_operation

if TYPE_CHECKING:
    from ..connection import Connection
    from ..imap import ImapSession

__all__ = ["watch_operation"]

log = logging.getLogger("mailconnector.operations")


def watch_operation(project: Project, name: str, *, stop: threading.Event, interval: float | None = None,
                    wait_for_lease: bool = False, on_run: Callable[[RunResult], None] | None = None,
                    max_backoff: float = 60.0) -> None:
    """Keep an operation running until ``stop`` is set: run, wait for mail (IDLE or poll), run again.

    The lease on the source folder is held for the whole watch (renewed as it goes), so a second watcher of
    the same folder waits (``wait_for_lease``) or fails at once with a ``StateError``.
    """
    op = project.operation(name)
    interval = interval or op.interval
    ttl = project.settings.lease_seconds
    source = build_source(project, op.source)
    if not isinstance(source, ReadEmailSource):
        raise ConfigError(f"operation {name!r} cannot be watched: its source {op.source!r} is a file, which has "
                          "no new records to wait for (each run reads it whole)", source=project.source,
                          hint="watch operations whose source is a read-email activity; run file sources once "
                          "per input, or from a scheduler")
    lease = source.lease_name
    folder = source.settings.folder
    connection = source.connection
    source.close()
    store = project.store()
    keeper = LeaseKeeper(store, lease, ttl)
    announced = False
    while not keeper.take():
        if not wait_for_lease:
            raise lease_busy_error(store, lease)
        if not announced:
            log.warning("%s is being processed by another run; waiting for it to finish", lease.split(":", 1)[1])
            announced = True
        if stop.wait(min(5.0, ttl / 4)):
            return
    log.info("watching %s", lease.split(":", 1)[1])
    waiter = _MailWaiter(connection, folder, keeper)
    backoff = Backoff(1.0, max_backoff)
    try:
        while not stop.is_set():
            try:
                mark = waiter.mark()
                result = run_operation(project, name, stop=stop, log_empty=False, _keeper=keeper)
                keeper.polled(next_within=interval if not waiter.idle else keeper.ttl / 3)
                if on_run is not None:
                    on_run(result)
                backoff.reset()
                waiter.wait(mark, interval, stop)
            except TransportError as exc:
                waiter.reset()
                delay = backoff.next()
                log.warning("connection problem (%s); reconnecting in %.0f s", exc.message, delay)
                if _sleep_checking(stop, delay, keeper):
                    break
    finally:
        waiter.close()
        keeper.stop()


class _MailWaiter:
    """Waits for new mail in one folder on its own IMAP connection, kept open between runs.

    Before each run it notes the folder's UIDNEXT; after the run, if UIDNEXT moved, mail arrived while the
    run was busy (maybe after its search), so the next run starts at once. Otherwise it waits with IDLE
    (re-issued every third of the lease time, checking the lease is still ours) or, without IDLE, sleeps
    ``interval`` seconds.
    """

    def __init__(self, connection: Connection, folder: str, keeper: LeaseKeeper) -> None:
        self.connection = connection
        self.folder = folder
        self.keeper = keeper
        self.session: ImapSession | None = None
        self.idle: bool | None = None

    def _session(self) -> ImapSession:
        if self.session is None:
            from ..imap import ImapSession

            session = ImapSession(self.connection)
            try:
                session.connect()
            except BaseException:
                session.close()
                raise
            self.session = session
            self.idle = session.has_capability("IDLE")
        return self.session

    def _state(self) -> tuple[int | None, int]:
        state = self._session().select(self.folder, readonly=True)
        return (state.uidnext, 0) if state.uidnext is not None else (None, state.exists)

    def mark(self) -> tuple[int | None, int] | None:
        if self.idle is False:
            return None  # polling: nothing to compare
        return self._state()

    def wait(self, mark: tuple[int | None, int] | None, interval: float, stop: threading.Event) -> None:
        if not self.idle or mark is None:
            self.reset()  # no connection held between polls
            _sleep_checking(stop, interval, self.keeper)
            return
        if self._state() != mark:
            log.debug("new mail arrived during the run; running again")
            return
        session = self._session()
        deadline = time.monotonic() + 25 * 60  # re-run now and then even without news (a safety net)
        while not stop.is_set() and time.monotonic() < deadline:
            self.keeper.check()
            if session.idle_wait(min(self.keeper.ttl / 3, max(0.0, deadline - time.monotonic())), stop=stop):
                return
            self.keeper.polled(next_within=self.keeper.ttl / 3)  # the IDLE connection still answers

    def reset(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # closing a broken connection must not hide the real problem
                log.debug("closing the IDLE connection: %s", exc)

    def close(self) -> None:
        self.reset()


def _sleep_checking(stop: threading.Event, seconds: float, keeper: LeaseKeeper) -> bool:
    """Sleep (True when stopped meanwhile), checking the lease is still ours every second."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        keeper.check()
        if stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            return True
    keeper.check()
    return False
