"""The console's work in the background: connection Tests and operation runs, each in a thread, watched by the
pages while they go (steps as they complete, records as they settle).

A run started here is an ordinary run: it writes the operation log and holds the folder's lease, so a run
from the command line or another console cannot take the same folder at the same time. Jobs live in this
process only; what outlives it is the operation log.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MailConnectorError
from ..secrets import redact

if TYPE_CHECKING:
    from .._steps import StepResult
    from ..connection import Connection
    from ..diagnostics import TestReport
    from ..operations import RunResult
    from ..project import Project

__all__ = ["Jobs", "RunJob", "TestJob"]

KEPT = 200  # finished jobs remembered (their results are also in the operation log, for runs)
START_WAIT = 60.0  # seconds a caller waits for a run to be in the operation log before it answers


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MailConnectorError):
        return {"type": exc.kind, "message": redact(exc.message), "hint": redact(exc.hint) if exc.hint else None}
    return {"type": "UnexpectedError", "message": redact(f"{type(exc).__name__}: {exc}"), "hint": None}


@dataclass
class TestJob:
    __test__ = False  # not a pytest test class

    id: str
    connection: str
    folder: str
    steps: list[StepResult] = field(default_factory=list)
    report: TestReport | None = None
    error: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def view(self) -> dict[str, Any]:
        """The job as the page shows it: the steps so far, then the Test's own document once it is over."""
        if self.report is not None:
            doc = self.report.to_dict()
        else:
            doc = {"connection": self.connection, "ok": None, "steps": [s.to_dict() for s in list(self.steps)]}
        for step in doc["steps"]:
            for key in ("detail", "error", "hint"):
                if step.get(key):
                    step[key] = redact(str(step[key]))
        return {"id": self.id, "done": self.done.is_set(), "error": self.error, **doc}


@dataclass
class RunJob:
    id: str
    operation: str
    run_id: str | None = None
    records: int = 0  # records settled so far (taken, skipped, uncertain or failed)
    result: RunResult | None = None
    error: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    distributed: bool = False  # on the workers: the console follows it in the shared log

    def view(self) -> dict[str, Any]:
        result = self.result.to_dict() if self.result is not None else None
        if result is not None and result.get("error"):
            result["error"] = redact(str(result["error"]))
        return {"id": self.id, "operation": self.operation, "run_id": self.run_id, "done": self.done.is_set(),
                "records": self.records, "seconds": round(time.time() - self.started_at, 1),
                "distributed": self.distributed,
                "result": result, "error": self.error}


class Jobs:
    """The jobs of this console process, newest last; the oldest finished ones are forgotten past ``KEPT``."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, TestJob | RunJob] = OrderedDict()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _add(self, job: TestJob | RunJob, work: Any) -> None:
        with self._lock:
            self._jobs[job.id] = job
            finished = [k for k, j in self._jobs.items() if j.done.is_set()]
            for key in finished[: max(0, len(self._jobs) - KEPT)]:
                del self._jobs[key]
            thread = threading.Thread(target=work, name=f"mc-console-{job.id}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def get(self, job_id: str) -> TestJob | RunJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> list[RunJob]:
        with self._lock:
            return [j for j in self._jobs.values() if isinstance(j, RunJob) and not j.done.is_set()]

    def start_test(self, conn: Connection, folder: str) -> TestJob:
        from ..diagnostics import diagnose

        job = TestJob(secrets.token_hex(8), conn.name, folder)

        def work() -> None:
            try:
                # each step is told of as it starts (running) and again as it ends: kept at its start
                job.report = diagnose(conn, folder=folder,
                                      on_step=lambda st: job.steps.append(st) if st.status == "running" else None)
            except BaseException as exc:  # the page must end, whatever happened
                job.error = _error(exc)
            finally:
                job.done.set()

        self._add(job, work)
        return job

    def start_run(self, project: Project, operation: str, *, distributed: bool = False) -> RunJob:
        """Start a run and return once it is in the operation log (``run_id`` set), or once it failed to start
        (``error`` set: a wrong setting, the folder busy with another run, a server that cannot be reached).
        ``distributed``: queued for the workers, and followed in the shared log until it ends."""
        from ..operations import run_operation

        project.operation(operation)  # a wrong name answers at once
        job = RunJob(secrets.token_hex(8), operation, distributed=distributed)

        def started(run_id: str) -> None:
            job.run_id = run_id
            job.started.set()

        def settled(_name: str) -> None:
            job.records += 1

        def progress(settled_so_far: int, _records: int) -> None:
            job.records = settled_so_far

        def work() -> None:
            try:
                if distributed:
                    from ..distributed import follow_run, submit_run

                    submitted = submit_run(project, operation, on_start=started)
                    job.result = follow_run(project, submitted.run_id, stop=job.stop, on_progress=progress)
                else:
                    job.result = run_operation(project, operation, stop=job.stop, on_record=settled,
                                               on_start=started)
            except BaseException as exc:
                job.error = _error(exc)
            finally:
                job.done.set()
                job.started.set()

        self._add(job, work)
        job.started.wait(START_WAIT)
        return job

    def shutdown(self, timeout: float = 30.0) -> None:
        """Ask every run to stop after the record in hand (as SIGTERM does to ``run``) and wait for them."""
        with self._lock:
            jobs = list(self._jobs.values())
            threads = list(self._threads)
        for job in jobs:
            if isinstance(job, RunJob):
                job.stop.set()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
