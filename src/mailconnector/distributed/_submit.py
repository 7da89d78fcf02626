"""Submitting a distributed run: the source read here and cut into chunks whose records travel inside the
tasks (workers need not share a disk with the submitter), the run and its chunk count in the shared
operation log; and following it there until it ends."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..activities.endpoints import FileSource, SourceItem, build_source
from ..errors import ConfigError, MailConnectorError, StateError
from ..project import SendActivity
from ._app import (
    CHUNK_TASK,
    QUEUE,
    broker_unreachable,
    broker_url,
    build_app,
    project_digest,
    require_shared_state,
    shown_url,
)

if TYPE_CHECKING:
    from celery import Celery

    from ..operations import RunResult
    from ..project import Project

__all__ = ["Submitted", "can_distribute", "follow_run", "submit_run"]

log = logging.getLogger("mailconnector.distributed")


@dataclass(frozen=True)
class Submitted:
    run_id: str
    operation: str
    chunks: int
    records: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "operation": self.operation, "status": "running", "chunks": self.chunks,
                "records": self.records}


def can_distribute(project: Project, name: str) -> bool:
    """Whether ``name`` would run on the workers: a broker and a PostgreSQL state configured, a send-email
    target (what the console's Run button does by default)."""
    import os

    from ._app import BROKER_ENV

    try:
        if not (os.environ.get(BROKER_ENV) or project.settings.broker):
            return False
        require_shared_state(project)
        return isinstance(project.activity(project.operation(name).target), SendActivity)
    except MailConnectorError:
        return False


def submit_run(project: Project, name: str, *, chunk_size: int | None = None, batch_key: str | None = None,
               queue: str = QUEUE, app: Celery | None = None,
               on_start: Callable[[str], None] | None = None) -> Submitted:
    """Start ``name`` on the workers and return at once with its run id.

    A file source is read here, record by record, and sent in chunks of ``chunk_size`` (default
    ``settings.chunk_size``); a mailbox source is one chunk, which a worker reads itself (one consumer per
    folder at a time, as anywhere). Fails before anything is queued when the broker or the store is away; a
    broker lost half-way marks the run ``error``, naming how many chunks went out (a rerun sends the rest,
    the ledger skipping what was sent). ``on_start(run_id)``: once the run is in the operation log.
    """
    require_shared_state(project)
    op = project.operation(name)
    target = project.activity(op.target)
    if not isinstance(target, SendActivity):
        raise ConfigError(f"operation {name!r} cannot run distributed: its target {op.target!r} is a file, which "
                          "one process writes", source=project.source,
                          hint="distributed runs send email; an operation with a file target runs in one process")
    size = chunk_size or project.settings.chunk_size
    app = app or build_app(project)
    _check_broker(app, broker_url(project))
    store = project.store()
    digest = project_digest(project.path)
    key = batch_key if batch_key is not None else op.batch_key()
    source = build_source(project, op.source)
    try:
        settings = {"source": source.describe(), "target": {"type": "send-email", "activity": op.target},
                    "transformation": op.transformation.model_dump(exclude_none=True) if op.transformation else None,
                    "on_error": op.on_error, "distributed": {"chunk_size": size, "queue": queue}}
        run_id = store.start_run(name, settings)
        if on_start is not None:
            on_start(run_id)

        def send(index: int, items: list[Any] | None) -> None:
            payload = {"run_id": run_id, "operation": name, "chunk": index, "items": items, "batch_key": key,
                       "project": digest, "version": __version__}
            app.send_task(CHUNK_TASK, kwargs=payload, queue=queue)

        chunks = records = 0
        try:
            if isinstance(source, FileSource):
                for index, chunk in enumerate(_chunks(source.items(), size)):
                    send(index, chunk)
                    chunks, records = chunks + 1, records + len(chunk)
            else:
                send(0, None)
                chunks = 1
        except BaseException as exc:
            why = exc.message if isinstance(exc, MailConnectorError) else f"{type(exc).__name__}: {exc}"
            store.abort_run(run_id, f"submitting stopped after {chunks} chunk(s) ({records} records): {why}; the "
                            "chunks already queued still run. Run it again to send the rest (what was sent is "
                            "skipped)", chunks=chunks)
            if isinstance(exc, MailConnectorError):
                raise
            if isinstance(exc, Exception):
                raise broker_unreachable(broker_url(project), exc) from None
            raise
        store.set_run_chunks(run_id, chunks, records)
    finally:
        source.close()
    log.info("run %s: %d record(s) in %d chunk(s) queued", run_id, records, chunks)
    return Submitted(run_id, name, chunks, records)


def _chunks(items: Iterator[SourceItem], size: int) -> Iterator[list[Any]]:
    """``[label, key, record, error]`` lists, ``size`` at a time; a record JSON cannot carry is an error item."""
    numbered = ((n, item) for n, item in enumerate(items))
    while batch := list(itertools.islice(numbered, size)):
        out: list[Any] = []
        for n, item in batch:
            label = item.label or f"record {n}"
            error = None
            if item.error is not None or item.record is None:
                err = item.error or MailConnectorError("no record")
                error = {"type": err.kind, "message": err.message, "stage": "source"}
            else:
                try:
                    json.dumps(item.record)
                except (TypeError, ValueError) as exc:
                    error = {"type": "ConfigError", "stage": "source",
                             "message": f"the record cannot travel to a worker as JSON: {exc}"}
            out.append([label, item.key, None if error else item.record, error])
        yield out


def _check_broker(app: Celery, url: str) -> None:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=5)
    except Exception as exc:  # kombu's OperationalError, socket errors, refused logins
        raise broker_unreachable(url, exc) from None


def follow_run(project: Project, run_id: str, *, stop: threading.Event | None = None, poll: float = 0.5,
               on_progress: Callable[[int, int], None] | None = None, queue: str = QUEUE,
               app: Celery | None = None) -> RunResult:
    """Wait for a distributed run to end (its last chunk recorded); ``on_progress(records_settled, records)``.
    ``stop`` ends the wait only: the run goes on on the workers. While it waits it watches the broker: a run
    whose broker stopped answering, or whose unfinished chunks are neither queued nor being run any more (a
    broker that restarted without its data), is ended ``error`` with the reason."""
    from ..operations import RunResult

    store = project.store()
    stop = stop or threading.Event()
    watch = _BrokerWatch(project, run_id, queue, app)
    while True:
        run = store.get_run(run_id, errors=False)
        if run is None:
            raise StateError(f"no run {run_id!r} in the operation logs")
        if on_progress is not None:
            on_progress(run["records_read"], run.get("records_submitted") or 0)
        if run["status"] == "running" and (reason := watch.lost(run)) is not None:
            log.error("run %s: %s", run_id, reason)
            store.abort_run(run_id, reason, chunks=run["chunks"] or 0)
            continue
        if run["status"] != "running" or stop.wait(poll):
            return RunResult(run_id, run["operation"], run["status"], run["records_read"], run["records_written"],
                             run["records_failed"], run.get("error"), skipped=run["records_skipped"],
                             uncertain=run["records_uncertain"])


class _BrokerWatch:
    """Tells a run that can no longer end from one that is slow. Looked at every few seconds: the broker's
    queue and the run's chunk leases. Unfinished chunks that are not in the queue and that no worker runs,
    seen twice over more than the redelivery time (a dead worker's chunk comes back to the queue within it),
    are lost; so is every chunk when the broker has not answered for that long."""

    def __init__(self, project: Project, run_id: str, queue: str, app: Celery | None) -> None:
        self.project, self.run_id, self.queue = project, run_id, queue
        self._app = app
        self.window = project.settings.redelivery_seconds + max(1.0, min(10.0, project.settings.redelivery_seconds / 4))
        self.every = max(1.0, min(10.0, project.settings.redelivery_seconds / 4))
        self._next = time.monotonic() + self.every
        self._down_since: float | None = None
        # Since when nothing was queued or running, at how many chunks done, seen so how many times in a row.
        self._idle_since: tuple[float, int, int] | None = None

    def lost(self, run: dict[str, Any]) -> str | None:
        now = time.monotonic()
        if now < self._next or run["chunks"] is None:  # still being submitted: the submitter watches
            return None
        self._next = now + self.every
        url = broker_url(self.project)
        try:
            queued = self._queued()
        except Exception as exc:  # the broker's errors are many (kombu, redis, amqp, sockets)
            self._idle_since = None
            self._down_since = self._down_since or now
            if now - self._down_since < self.window:
                return None
            return (f"the broker at {shown_url(url)} stopped answering while the run waited for "
                    f"{run['chunks'] - run.get('chunks_done', 0)} chunk(s) ({type(exc).__name__}); chunks still "
                    "queued there run when it is back, unless it lost its data. Run the operation again to be sure: "
                    "what was sent is skipped")
        self._down_since = None
        running = any(lease.name.startswith(f"chunk:{self.run_id}/")
                      for lease in self.project.store().leases())
        done = int(run.get("chunks_done", 0))
        if queued or running:
            self._idle_since = None
            return None
        if self._idle_since is None or self._idle_since[1] != done:
            self._idle_since = (now, done, 1)
            return None
        since, _, seen = self._idle_since
        self._idle_since = (since, done, seen + 1)
        if now - since < self.window or seen < 2:  # and seen idle on the last looks in a row, not between two
            return None
        return (f"{run['chunks'] - done} chunk(s) of this run are no longer in the broker's queue and no worker runs "
                f"them (did the broker at {shown_url(url)} restart without its data?). Run the operation again: "
                "what was sent is skipped")

    def _queued(self) -> int:
        from kombu.exceptions import ChannelError

        app = self._app = self._app or build_app(self.project)
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            try:
                _, count, _ = conn.default_channel.queue_declare(queue=self.queue, passive=True)
            except ChannelError:  # no such queue: Redis keeps no empty list, AMQP answers 404
                return 0
            return int(count)
