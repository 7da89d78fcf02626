"""One run of an operation (or one chunk of a distributed run): the commit/ack protocol end to end."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..activities.endpoints import Delivery, Source, SourceItem, Target, build_source, build_target
from ..errors import ConfigError, MailConnectorError
from ..logs import run_context
from ..project import OperationConfig, Project
from ..records.excerpt import excerpt
from ..records.send import ErrorInfo
from ..state import LeaseKeeper, lease_busy_error
from ._transform import Transform, build_transformation

__all__ = ["MAX_CHAIN_DEPTH", "RunResult", "run_chunk", "run_operation"]

log = logging.getLogger("mailconnector.operations")

MAX_CHAIN_DEPTH = 10


@dataclass
class RunResult:
    run_id: str
    operation: str
    status: str  # success | partial | failed | error | interrupted
    read: int = 0
    written: int = 0
    failed: int = 0
    error: str | None = None
    skipped: int = 0  # already taken by an earlier run (the send ledger): nothing was sent
    uncertain: int = 0  # may have been sent: not again until the ledger is resolved
    chained: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "success" and all(c.ok for c in self.chained)

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted" or any(c.interrupted for c in self.chained)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "operation": self.operation, "status": self.status, "read": self.read,
                "written": self.written, "skipped": self.skipped, "uncertain": self.uncertain,
                "failed": self.failed, "error": self.error,
                "chained": [c.to_dict() for c in self.chained]}


@dataclass
class _Pending:
    remaining: int
    ack: Callable[[], None]
    failed: bool = False


@dataclass
class _Chunk:
    """The run is one chunk of a distributed run: the run exists already, the chunk's records came with its task
    (None: the operation's own source, a mailbox), and its outcome is recorded once, errors included."""

    run_id: str
    index: int
    items: list[Any] | None
    worker: str | None
    errors: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)


class _CarriedError(MailConnectorError):
    """A source error that travelled with a chunk: reported under its original type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self._kind = kind

    @property
    def kind(self) -> str:
        return self._kind


class _ChunkSource:
    """The records a chunk carries, as ``[label, key, record, error]``: nothing to acknowledge (a file source)."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def items(self) -> Iterator[SourceItem]:
        for label, key, record, error in self._items:
            if error is not None:
                yield SourceItem(None, error=_CarriedError(str(error.get("type", "SourceError")),
                                                           str(error.get("message", ""))), label=label, key=key)
            else:
                yield SourceItem(record, label=label, key=key)

    lease_name = None  # the run's chunk lease is held by the worker, not by the source

    def use_lease(self, keeper: LeaseKeeper) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"type": "chunk", "records": len(self._items)}


class _Run:
    def __init__(self, project: Project, name: str, stop: threading.Event, keeper: LeaseKeeper | None = None,
                 log_empty: bool = True, on_record: Callable[[str], None] | None = None,
                 batch_key: str | None = None, on_start: Callable[[str], None] | None = None,
                 chunk: _Chunk | None = None) -> None:
        self.chunk = chunk
        self.on_record = on_record  # progress: called with the operation's name as each record settles
        self.on_start = on_start  # called with the run id once the operation log has the run
        self.watch_keeper = keeper  # watch mode holds the folder's lease across runs
        self.log_empty = log_empty  # watch mode keeps no log entry for a run that found nothing
        self.project = project
        self.name = name
        self.op: OperationConfig = project.operation(name)
        self.stop = stop
        self.store = project.store()
        self.ttl = project.settings.lease_seconds
        self.batch_key = batch_key if batch_key is not None else self.op.batch_key()
        self.read = self.written = self.failed = self.skipped = self.uncertain = 0
        self.halted = False  # on_error: stop, after a failed record
        self.cut_short = False  # stop was set (SIGTERM / Ctrl-C) before the source was exhausted
        self.run_id = ""

    def log_error(self, label: str, data: dict[str, Any]) -> None:
        if self.chunk is not None:
            self.chunk.errors.append((label, data))  # recorded with the chunk's counts, once
        else:
            self.store.record_run_error(self.run_id, label, data)

    def fail(self, label: str, error: ErrorInfo | dict[str, Any]) -> None:
        self.failed += 1
        data = error.model_dump(exclude_none=True) if isinstance(error, ErrorInfo) else error
        self.log_error(label, data)
        log.warning("run %s: %s failed: %s", self.run_id, label, data.get("message"))
        if self.op.on_error == "stop":
            self.halted = True

    def execute(self) -> RunResult:
        transform = build_transformation(self.op.transformation, self.project, self.name)
        chunk = self.chunk
        source: Source = (
            _ChunkSource(chunk.items) if chunk is not None and chunk.items is not None
            else build_source(self.project, self.op.source))
        try:
            target = build_target(self.project, self.op.target, operation=self.name, batch_key=self.batch_key,
                                  stop=self.stop)
        except BaseException:
            source.close()
            raise
        settings = {"source": source.describe(), "target": target.describe(),
                    "transformation": self.op.transformation.model_dump(exclude_none=True)
                    if self.op.transformation else None, "on_error": self.op.on_error}
        lease = source.lease_name
        keeper = None
        if lease:
            own = self.watch_keeper is None or self.watch_keeper.name != lease
            keeper = LeaseKeeper(self.store, lease, self.ttl) if own else self.watch_keeper
            assert keeper is not None
            if own and not keeper.take():
                source.close()
                target.close()
                raise lease_busy_error(self.store, lease)
            source.use_lease(keeper)  # its acks, checkpoints and actions are fenced by this lease
        try:
            self.run_id = chunk.run_id if chunk is not None else self.store.start_run(self.name, settings)
        except BaseException:
            if keeper is not None and keeper is not self.watch_keeper:
                keeper.stop()
            source.close()
            target.close()
            raise
        if self.on_start is not None:
            self.on_start(self.run_id)
        with run_context(self.run_id, self.name):  # every log line of the run carries its id
            return self._run_started(source, target, transform, keeper)

    def _run_started(self, source: Source, target: Target,
                     transform: Transform, keeper: LeaseKeeper | None) -> RunResult:
        status, error = "success", None
        pending_exc: BaseException | None = None
        try:
            self._pump(source, target, transform, keeper)
        except BaseException as exc:
            pending_exc = exc
            status, error = _describe_crash(exc)
            if not isinstance(exc, MailConnectorError):
                log.debug("run %s crashed:\n%s", self.run_id, traceback.format_exc())
        # Closing applies the after-read action to what was acknowledged; it can fail on its own (a dropped
        # connection): the store already knows those emails were delivered, and the next run completes it.
        for closer in (target.close, source.close):
            try:
                closer()
            except BaseException as exc:
                if pending_exc is None:
                    pending_exc = exc
                    status, error = _describe_crash(exc)
        if keeper is not None and keeper is not self.watch_keeper:
            keeper.stop()
        if status == "success":
            if self.cut_short:
                status = "interrupted"
            elif self.failed or self.uncertain:
                status = "partial" if self.written or self.skipped else "failed"
        if self.chunk is not None:
            self.store.finish_chunk(self.run_id, self.chunk.index, status=status, read=self.read,
                                    written=self.written, failed=self.failed, skipped=self.skipped,
                                    uncertain=self.uncertain, errors=self.chunk.errors, error=error,
                                    worker=self.chunk.worker)
        else:
            self._finish_own_run(status, error)
        if pending_exc is not None:
            raise pending_exc
        return RunResult(self.run_id, self.name, status, self.read, self.written, self.failed, error,
                         skipped=self.skipped, uncertain=self.uncertain)

    def _finish_own_run(self, status: str, error: str | None) -> None:
        if status == "success" and not self.read and not self.log_empty:
            self.store.delete_run(self.run_id)
        else:
            self.store.finish_run(self.run_id, status=status, read=self.read, written=self.written,
                                  failed=self.failed, skipped=self.skipped, uncertain=self.uncertain, error=error)
        retention = self.project.settings
        try:
            self.store.prune_runs(max_age_days=retention.log_retention_days,
                                  max_count=retention.log_retention_runs)
        except MailConnectorError as exc:
            log.warning("could not prune the operation logs: %s", exc.message)

    def _pump(self, source: Source, target: Target,
              transform: Transform, keeper: LeaseKeeper | None) -> None:
        pending: dict[int, _Pending] = {}
        tickets: dict[int, tuple[int, str, dict[str, Any]]] = {}
        next_ticket = 0

        def feed() -> Iterator[Delivery]:
            nonlocal next_ticket
            for index, item in enumerate(source.items()):
                if self.halted:
                    return
                if self.stop.is_set():
                    self.cut_short = True
                    return
                if keeper is not None:
                    keeper.check()
                self.read += 1
                label = item.label or f"record {index}"
                if item.error is not None or item.record is None:
                    err = item.error or MailConnectorError("no record")
                    self.fail(label, {"type": err.kind, "message": err.message, "stage": "source"})
                    continue
                try:
                    outputs = transform(item.record)
                except Exception as exc:
                    self.fail(label, {"type": "TransformationError", "stage": "transformation",
                                      "message": f"{type(exc).__name__}: {exc}", "record": excerpt(item.record)})
                    continue
                if not outputs:
                    item.ack()  # the transformation dropped it: nothing to deliver
                    continue
                pending[index] = _Pending(len(outputs), item.ack)
                for n, out in enumerate(outputs):
                    tickets[next_ticket] = (index, label if len(outputs) == 1 else f"{label} output {n}", out)
                    key = f"{item.key}#{n}" if item.key else None
                    yield next_ticket, out, key
                    next_ticket += 1

        for outcome in target.deliver(feed()):
            index, label, record = tickets.pop(outcome.ticket)
            entry = pending[index]
            entry.failed = entry.failed or not outcome.taken
            detail = {**(outcome.error.model_dump(exclude_none=True) if outcome.error else {}), "stage": "target"}
            if outcome.status not in ("written", "skipped"):
                detail["record"] = excerpt(record)  # what the run log shows beside the error
            if outcome.status == "written":
                self.written += 1
            elif outcome.status == "skipped":
                self.skipped += 1
            elif outcome.status == "uncertain":  # not a failure (on_error does not stop), not taken either
                self.uncertain += 1
                self.log_error(label, {**detail, "outcome": "uncertain"})
            else:
                self.fail(label, {"message": "failed", **detail})
            if self.on_record is not None:
                self.on_record(self.name)
            entry.remaining -= 1
            if entry.remaining == 0:
                del pending[index]
                if not entry.failed:
                    entry.ack()
        if pending:  # records the target was handed but gave up unsent (it was stopped): not a success
            self.cut_short = True


def _describe_crash(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, MailConnectorError):
        return "error", exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "aborted (a second interrupt)"
    return "error", f"{type(exc).__name__}: {exc}"


def run_operation(project: Project, name: str, *, stop: threading.Event | None = None, log_empty: bool = True,
                  batch_key: str | None = None, _keeper: LeaseKeeper | None = None,
                  on_record: Callable[[str], None] | None = None,
                  on_start: Callable[[str], None] | None = None, _depth: int = 0) -> RunResult:
    """Run an operation once, then the operations it chains to (on_success / on_failure).

    The operation's own failure to start (configuration, lease, connection) raises; a chained operation's
    failure to start is reported in ``chained`` instead, so the first run's result is never lost.
    ``log_empty=False`` (watch mode) keeps no operation log entry for a clean run that read nothing.
    ``on_record(operation)`` is called as each record is taken or fails (for a progress display);
    ``on_start(run_id)`` once this operation's run is in the operation log (not for the chained ones), so that
    a caller in another thread (the console) can answer with the run id before the run ends.
    ``batch_key`` overrides the operation's ``key`` (a Send Email target's Message-IDs: a new key sends the
    same records again); it does not pass on to chained operations.
    """
    if _depth > MAX_CHAIN_DEPTH:
        raise ConfigError(f"operation chain too deep at {name!r} (a cycle of on_success / on_failure?)",
                          source=project.source)
    stop = stop or threading.Event()
    run = _Run(project, name, stop, _keeper, log_empty, on_record, batch_key, on_start)
    try:
        result = run.execute()
    except MailConnectorError as exc:
        result = RunResult(run.run_id, name, "error", run.read, run.written, run.failed, exc.message,
                           skipped=run.skipped, uncertain=run.uncertain)
        if not run.op.on_failure or not run.run_id:
            raise
    chain = run.op.on_success if result.status == "success" else run.op.on_failure
    for next_name in chain:
        if stop.is_set():
            break
        try:
            result.chained.append(run_operation(project, next_name, stop=stop, on_record=on_record,
                                                _depth=_depth + 1))
        except MailConnectorError as exc:
            log.warning("chained operation %s did not run: %s", next_name, exc.message)
            result.chained.append(RunResult("", next_name, "error", error=exc.message))
    return result


def run_chunk(project: Project, name: str, *, run_id: str, chunk: int, items: list[Any] | None,
              batch_key: str | None, stop: threading.Event | None = None, worker: str | None = None) -> RunResult:
    """One chunk of the distributed run ``run_id`` (a worker's task): ``items`` are its records as
    ``[label, key, record, error]`` (None: the operation's own source). Its counts and errors are recorded
    once, with the chunk; the chunk that completes the run ends it. Chained operations are not run."""
    run = _Run(project, name, stop or threading.Event(), batch_key=batch_key,
               chunk=_Chunk(run_id, chunk, items, worker))
    return run.execute()


