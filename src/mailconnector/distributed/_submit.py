"""Submitting a distributed run: the source read here and cut into chunks whose records travel inside the
tasks (workers need not share a disk with the submitter), the run and its chunk count in the shared
operation log; and following it there until it ends."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..activities.endpoints import FileSource, SourceItem, build_source
from ..errors import ConfigError, MailConnectorError, StateError
from ..project import SendActivity
from ._app import CHUNK_TASK, QUEUE, broker_unreachable, broker_url, build_app, project_digest, require_shared_state

if TYPE_CHECKING:
    from celery import Celery

    from ..operations import RunResult
    from ..project import Project

__all__ = ["Submitted", "follow_run", "submit_run"]

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


def submit_run(project: Project, name: str, *, chunk_size: int | None = None, batch_key: str | None = None,
               queue: str = QUEUE, app: Celery | None = None) -> Submitted:
    """Start ``name`` on the workers and return at once with its run id.

    A file source is read here, record by record, and sent in chunks of ``chunk_size`` (default
    ``settings.chunk_size``); a mailbox source is one chunk, which a worker reads itself (one consumer per
    folder at a time, as anywhere). Fails before anything is queued when the broker or the store is away; a
    broker lost half-way marks the run ``error``, naming how many chunks went out (a rerun sends the rest,
    the ledger skipping what was sent).
    """
    require_shared_state(project)
    op = project.operation(name)
    target = project.activity(op.target)
    if not isinstance(target, SendActivity):
        raise ConfigError(f"operation {name!r} cannot run distributed: its target {op.target!r} is a file, which "
                          "one process writes", source=project.source,
                          hint="distributed runs send email; run file targets without --distributed")
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
               on_progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Wait for a distributed run to end (its last chunk recorded); ``on_progress(records_settled, records)``.
    ``stop`` ends the wait only: the run goes on on the workers."""
    from ..operations import RunResult

    store = project.store()
    stop = stop or threading.Event()
    while True:
        run = store.get_run(run_id, errors=False)
        if run is None:
            raise StateError(f"no run {run_id!r} in the operation logs")
        if on_progress is not None:
            on_progress(run["records_read"], run.get("records_submitted") or 0)
        if run["status"] != "running":
            return RunResult(run_id, run["operation"], run["status"], run["records_read"], run["records_written"],
                             run["records_failed"], run.get("error"), skipped=run["records_skipped"],
                             uncertain=run["records_uncertain"])
        if stop.wait(poll):
            return RunResult(run_id, run["operation"], "running", run["records_read"], run["records_written"],
                             run["records_failed"], None, skipped=run["records_skipped"],
                             uncertain=run["records_uncertain"])
