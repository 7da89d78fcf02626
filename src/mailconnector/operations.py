"""Operations: source → [transformation] → target, with the commit/ack protocol end to end.

A source item is acknowledged (for Read Email: marked read / moved / deleted) only once the target has
taken every record the transformation made of it; an item the transformation drops (``None``, ``[]``) is
acknowledged at once. A failed record is written to the operation log and leaves its source item
unacknowledged, so the next run retries exactly it. Each run writes one operation log entry.

Watch mode repeats the run, waiting with IMAP IDLE where offered (else polling), reconnecting with backoff
after a dropped connection; one consumer per connection + folder at a time (a lease in the store).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from .activities.endpoints import FileSource, ReadEmailSource, build_source, build_target
from .errors import ConfigError, MailConnectorError, StateError, TransportError
from .project import OperationConfig, Project, Transformation
from .records.send import ErrorInfo

__all__ = ["RunResult", "run_operation", "watch_operation"]

log = logging.getLogger("mailconnector.operations")

LEASE_TTL = 60.0
Transform = Callable[[dict[str, Any]], list[dict[str, Any]]]
_env = SandboxedEnvironment(autoescape=False)


@dataclass
class RunResult:
    run_id: str
    operation: str
    status: str  # success | partial | failed | error | interrupted
    read: int = 0
    written: int = 0
    failed: int = 0
    error: str | None = None
    chained: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "success" and all(c.ok for c in self.chained)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "operation": self.operation, "status": self.status, "read": self.read,
                "written": self.written, "failed": self.failed, "error": self.error,
                "chained": [c.to_dict() for c in self.chained]}


# ---------------------------------------------------------------------------------------- transformations
def build_transformation(spec: Transformation | None, project: Project) -> Transform:
    if spec is None:
        return lambda record: [record]
    if spec.callable is not None:
        return _callable_transform(spec.callable, project)
    assert spec.mapping is not None
    compiled = {}
    for out_field, expr in spec.mapping.items():
        try:
            compiled[out_field] = _env.compile_expression(expr, undefined_to_none=True)
        except Exception as exc:  # jinja2.TemplateSyntaxError and friends
            raise ConfigError(f"transformation.mapping.{out_field}: invalid expression {expr!r}: {exc}") from None
    keep = spec.keep

    def mapping(record: dict[str, Any]) -> list[dict[str, Any]]:
        out: dict[str, Any] = dict(record) if keep else {}
        for out_field, fn in compiled.items():
            out[out_field] = fn(record=record, **{k: v for k, v in record.items() if k.isidentifier()})
        return [out]

    return mapping


def _callable_transform(target: str, project: Project) -> Transform:
    """Only the declared ``module:function`` is imported (from the project directory first)."""
    module_name, func_name = target.split(":", 1)
    project_dir = str(project.directory)
    if project_dir not in sys.path:
        sys.path.insert(0, project_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"transformation {target!r}: cannot import {module_name}: {exc}",
                          hint="the module must be importable from the project directory") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"transformation {target!r}: {module_name} has no function {func_name}")

    def call(record: dict[str, Any]) -> list[dict[str, Any]]:
        result = func(record)
        if result is None:
            return []
        if isinstance(result, dict):
            return [result]
        if isinstance(result, list) and all(isinstance(r, dict) for r in result):
            return result
        raise TypeError(f"{target} returned {type(result).__name__}; expected a dict, a list of dicts or None")

    return call


# ------------------------------------------------------------------------------------------------- a run
@dataclass
class _Pending:
    remaining: int
    ack: Callable[[], None]
    failed: bool = False


class _Run:
    def __init__(self, project: Project, name: str, stop: threading.Event, holder: str,
                 keep_lease: bool = False) -> None:
        self.keep_lease = keep_lease  # watch mode holds the lease between runs
        self.project = project
        self.name = name
        self.op: OperationConfig = project.operation(name)
        self.stop = stop
        self.holder = holder
        self.store = project.store()
        self.read = self.written = self.failed = 0
        self.halted = False  # on_error: stop
        self.run_id = ""

    def fail(self, label: str, error: ErrorInfo | dict[str, Any]) -> None:
        self.failed += 1
        data = error.model_dump(exclude_none=True) if isinstance(error, ErrorInfo) else error
        self.store.record_run_error(self.run_id, label, data)
        log.warning("run %s: %s failed: %s", self.run_id, label, data.get("message"))
        if self.op.on_error == "stop":
            self.halted = True

    def execute(self) -> RunResult:
        source = build_source(self.project, self.op.source)
        target = build_target(self.project, self.op.target)
        transform = build_transformation(self.op.transformation, self.project)
        settings = {"source": source.describe(), "target": target.describe(),
                    "transformation": self.op.transformation.model_dump(exclude_none=True)
                    if self.op.transformation else None, "on_error": self.op.on_error}
        lease = source.lease_name if isinstance(source, ReadEmailSource) else None
        if lease and self.store.acquire_lease(lease, ttl=LEASE_TTL, holder=self.holder) is None:
            source.close()
            raise _lease_error(self.store, lease)
        self.run_id = self.store.start_run(self.name, settings)
        status, error = "success", None
        try:
            self._pump(source, target, transform, lease)
        except MailConnectorError as exc:
            status, error = "error", exc.message
            raise
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            log.debug("run %s crashed:\n%s", self.run_id, traceback.format_exc())
            raise
        finally:
            try:
                target.close()
            finally:
                source.close()
                if lease and not self.keep_lease:
                    self.store.release_lease(lease, self.holder)
            if status == "success":
                if self.stop.is_set():
                    status = "interrupted"
                elif self.failed:
                    status = "partial" if self.written else "failed"
            self.store.finish_run(self.run_id, status=status, read=self.read, written=self.written,
                                  failed=self.failed, error=error)
            retention = self.project.settings
            self.store.prune_runs(max_age_days=retention.log_retention_days, max_count=retention.log_retention_runs)
        return RunResult(self.run_id, self.name, status, self.read, self.written, self.failed, error)

    def _pump(self, source: ReadEmailSource | FileSource, target: Any, transform: Transform,
              lease: str | None) -> None:
        pending: dict[int, _Pending] = {}
        tickets: dict[int, tuple[int, str]] = {}
        next_ticket = 0
        renewed = time.monotonic()

        def feed() -> Iterator[tuple[int, dict[str, Any]]]:
            nonlocal next_ticket, renewed
            for index, item in enumerate(source.items()):
                if self.stop.is_set() or self.halted:
                    return
                if lease and time.monotonic() - renewed > LEASE_TTL / 3:
                    if self.store.acquire_lease(lease, ttl=LEASE_TTL, holder=self.holder) is None:
                        raise _lease_error(self.store, lease)
                    renewed = time.monotonic()
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
                                      "message": f"{type(exc).__name__}: {exc}"})
                    continue
                if not outputs:
                    item.ack()  # the transformation dropped it: nothing to deliver
                    continue
                pending[index] = _Pending(len(outputs), item.ack)
                for out in outputs:
                    tickets[next_ticket] = (index, label)
                    yield next_ticket, out
                    next_ticket += 1

        for ticket, error in target.deliver(feed()):
            index, label = tickets.pop(ticket)
            entry = pending[index]
            if error is not None:
                entry.failed = True
                self.fail(label, {**error.model_dump(exclude_none=True), "stage": "target"})
            else:
                self.written += 1
            entry.remaining -= 1
            if entry.remaining == 0:
                del pending[index]
                if not entry.failed:
                    entry.ack()


def _lease_error(store: Any, lease: str) -> StateError:
    holder = store.lease_holder(lease)
    until = f" for up to {max(0, holder[1] - time.time()):.0f} s more" if holder else ""
    return StateError(f"{lease.split(':', 1)[1]} is being processed by another run{until}",
                      hint="only one consumer per connection and folder at a time; wait for it, or use --wait")


def run_operation(project: Project, name: str, *, stop: threading.Event | None = None,
                  holder: str | None = None, keep_lease: bool = False, _depth: int = 0) -> RunResult:
    """Run an operation once, then the operations it chains to (on_success / on_failure)."""
    if _depth > 10:
        raise ConfigError(f"operation chain too deep at {name!r} (a cycle of on_success / on_failure?)")
    stop = stop or threading.Event()
    run = _Run(project, name, stop, holder or uuid.uuid4().hex, keep_lease)
    try:
        result = run.execute()
    except MailConnectorError as exc:
        result = RunResult(run.run_id, name, "error", run.read, run.written, run.failed, exc.message)
        if not run.op.on_failure or not run.run_id:
            raise
    chain = run.op.on_success if result.status == "success" else run.op.on_failure
    for next_name in chain:
        if stop.is_set():
            break
        result.chained.append(run_operation(project, next_name, stop=stop, _depth=_depth + 1))
    return result


def watch_operation(project: Project, name: str, *, stop: threading.Event, interval: float | None = None,
                    wait_for_lease: bool = False, on_run: Callable[[RunResult], None] | None = None,
                    max_backoff: float = 60.0) -> None:
    """Keep an operation running until ``stop`` is set: run, wait for mail (IDLE or poll), run again."""
    op = project.operation(name)
    interval = interval or op.interval
    holder = uuid.uuid4().hex
    source = build_source(project, op.source)
    lease = source.lease_name if isinstance(source, ReadEmailSource) else None
    source.close()
    store = project.store()
    if lease:
        while store.acquire_lease(lease, ttl=LEASE_TTL, holder=holder) is None:
            if not wait_for_lease:
                raise _lease_error(store, lease)
            log.info("waiting for %s to be free", lease)
            if stop.wait(min(5.0, LEASE_TTL / 4)):
                return
    backoff = 1.0
    try:
        while not stop.is_set():
            try:
                result = run_operation(project, name, stop=stop, holder=holder, keep_lease=True)
                if on_run is not None:
                    on_run(result)
                backoff = 1.0
                _wait_for_mail(project, op, stop, interval, lease, holder)
            except TransportError as exc:
                log.warning("connection problem (%s); reconnecting in %.0f s", exc.message, backoff)
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, max_backoff)
    finally:
        if lease:
            store.release_lease(lease, holder)


def _wait_for_mail(project: Project, op: OperationConfig, stop: threading.Event, interval: float,
                   lease: str | None, holder: str) -> None:
    store = project.store()
    source = build_source(project, op.source)
    if not isinstance(source, ReadEmailSource):
        stop.wait(interval)
        return
    from .imap import ImapSession

    session = ImapSession(source.connection)
    source.close()
    try:
        session.connect()
        if not session.has_capability("IDLE"):
            _sleep_renewing(stop, interval, store, lease, holder)
            return
        session.select(source.settings.folder, readonly=True)
        deadline = time.monotonic() + max(interval, 25 * 60)
        while not stop.is_set() and time.monotonic() < deadline:
            if lease:
                store.acquire_lease(lease, ttl=LEASE_TTL, holder=holder)
            if session.idle_wait(min(LEASE_TTL / 3, deadline - time.monotonic()), stop=stop):
                return
    finally:
        session.close()


def _sleep_renewing(stop: threading.Event, seconds: float, store: Any, lease: str | None, holder: str) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        if lease:
            store.acquire_lease(lease, ttl=LEASE_TTL, holder=holder)
        stop.wait(min(LEASE_TTL / 3, max(0.0, deadline - time.monotonic())))
