"""The sending workers' shared plumbing: the SMTP connection pool, the turns that keep transactions in
input order, and the waiting on workers' results.

Kept apart from ``send.py`` because none of it knows about records, the ledger or retries: it only decides
who talks to the server when, and what a stopped run still reports.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait

from ..connection import Connection
from ..errors import AuthenticationError
from ..records.send import SendResponse
from ..smtp import SmtpSession


class _Turns:
    """Transactions start in input order (with one connection, messages go out in exactly that order),
    even though the next message is composed while the current one is being sent."""

    def __init__(self) -> None:
        self._next = 0
        self._cond = threading.Condition()

    def ticket(self, index: int) -> _Turn:
        return _Turn(self, index)

    def wait(self, index: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._next >= index)

    def advance(self, index: int) -> None:
        with self._cond:
            self._next = max(self._next, index + 1)
            self._cond.notify_all()

    def open(self) -> None:
        """Stopping: no one waits for a turn any more (the records before may never come)."""
        with self._cond:
            self._next = sys.maxsize
            self._cond.notify_all()


class _Turn:
    """One record's place in ``_Turns``: used once, when it takes a connection, or passed when it never
    needs one (a bad record, a duplicate, a dry run)."""

    def __init__(self, turns: _Turns, index: int) -> None:
        self._turns = turns
        self._index = index
        self._used = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._used:
            yield
            return
        self._turns.wait(self._index)
        try:
            yield
        finally:
            self._used = True
            self._turns.advance(self._index)

    def pass_(self) -> None:
        with self.hold():
            pass


class _Interrupted(Exception):
    """The run was stopped before this record was sent: it gets no response (a rerun sends it)."""


class _Stopped(Exception):
    """The pool refuses new connections after a refused login; carries that refusal."""

    def __init__(self, error: AuthenticationError) -> None:
        super().__init__(error.message)
        self.error = error


class _SessionPool:
    """At most ``size`` SMTP connections, shared by the workers; a worker holds one only while it talks to
    the server (never while it composes or waits for a backoff). Idle connections are reused newest
    first, so the ones left idle longest are the ones a server may close."""

    def __init__(self, connection: Connection, size: int) -> None:
        self._connection = connection
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[SmtpSession] = []
        self._lock = threading.Lock()
        self.auth_failure: AuthenticationError | None = None

    def acquire(self, turn: _Turn | None = None) -> tuple[SmtpSession, bool]:
        """A connection and whether it was used before (then it may have gone stale meanwhile); with a
        ``turn``, only after the records before it got theirs.

        After one refused login no other is tried (``_Stopped``): the same credentials would be refused
        again, and servers lock accounts out after repeated failures.
        """
        with turn.hold() if turn is not None else contextlib.nullcontext():
            self._slots.acquire()
        try:
            with self._lock:
                session = self._idle.pop() if self._idle else None
            if session is not None and session.connected:
                return session, True
            if session is not None:
                session.close()
            if self.auth_failure is not None:
                raise _Stopped(self.auth_failure)
            session = SmtpSession(self._connection)
            try:
                session.connect()
            except AuthenticationError as exc:
                with self._lock:
                    self.auth_failure = self.auth_failure or exc
                raise
            return session, False
        except BaseException:
            self._slots.release()
            raise

    def release(self, session: SmtpSession, *, keep: bool) -> None:
        try:
            if keep and session.connected:
                with self._lock:
                    self._idle.append(session)
            else:
                session.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()



def _wait_some(futures: set[Future[SendResponse]],
               stop: threading.Event) -> tuple[set[Future[SendResponse]], set[Future[SendResponse]]]:
    """The futures that finished (at least one), and the rest; once stopped, the rest minus those that had
    not started (cancelled: their records were not sent)."""
    done, pending = wait(futures, return_when=FIRST_COMPLETED)
    if stop.is_set():
        pending = {f for f in pending if not f.cancel()}
    return set(done), set(pending)


def _finished(done: Iterable[Future[SendResponse]]) -> Iterator[SendResponse]:
    for future in done:
        if not isinstance(future.exception(), _Interrupted):
            yield future.result()

