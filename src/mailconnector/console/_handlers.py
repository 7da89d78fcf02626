"""What the console's pages and its API share: the lookups that answer NotFound the same way on both, starting
a run, how an error maps to an HTTP status, and how a request's query and body are read."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import ConfigError, LeaseBusyError, MailConnectorError, StateError
from . import _views as views
from ._jobs import RunJob, TestJob
from ._views import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from ._app import ConsoleState

__all__ = ["Handlers", "StartFailed", "json_body", "run_filters", "status_of", "whole_number"]


class Handlers:
    """What the pages and the API both look up, so that a missing connection, job, run or operation is the same
    NotFound on both (each with its own hint where the two list them in different places)."""

    def __init__(self, state: ConsoleState) -> None:
        self.state = state

    def store(self) -> Any:
        return self.state.project().store()

    def connection_of(self, name: str) -> Any:
        project = self.state.project()
        if name not in project.connection_names:
            raise NotFound(f"no connection named {name!r}", hint="the connections page lists them")
        return project.connection(name)

    def job_of(self, job_id: str) -> TestJob | RunJob:
        job = self.state.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} in this console", hint="jobs are kept by the console that started "
                           "them, until it stops; runs stay in the operation log")
        return job

    def run_of(self, run_id: str, *, hint: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The run as its operation log has it, and its job's view while this console is still running it."""
        run = views.run_detail(self.store(), run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r} in the operation logs", hint=hint)
        live = next((j.view() for j in self.state.jobs.running() if j.run_id == run_id), None)
        return run, live

    def start_run(self, name: str, distributed: bool | None) -> RunJob:
        """``distributed`` None: on the workers when the project can (a broker, a shared state, a send)."""
        project = self.state.project()
        if name not in (project.doc.data.get("operations") or {}):
            raise NotFound(f"no operation named {name!r}", hint="the operations page lists them")
        if distributed is None:
            from ..distributed._submit import can_distribute

            distributed = can_distribute(project, name)
        job = self.state.jobs.start_run(project, name, distributed=distributed)
        if job.run_id is None and job.error is not None:
            raise StartFailed(job.error)
        return job

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """When the app stops, its jobs end and the store closes (one state behind pages and API alike)."""
        yield
        await run_in_threadpool(self.state.jobs.shutdown)  # runs end after the record in hand, as on SIGTERM
        await run_in_threadpool(self.state.close)


class StartFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


def status_of(exc: MailConnectorError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict | LeaseBusyError):
        return 409
    if isinstance(exc, BadRequest):
        return 400
    if isinstance(exc, ConfigError):
        return 422
    if isinstance(exc, StateError):
        return 503  # the store cannot be used
    return 502


def run_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    since = q.get("since_hours") or None
    try:
        since_hours = float(since) if since is not None else None
    except ValueError:
        since_hours = -1.0
    if since_hours is not None and not 0 <= since_hours < 1e6:  # nan, inf and negatives too
        raise BadRequest(f"since_hours must be a number of hours, not {since!r}", hint="e.g. 24")
    return {"operation": q.get("operation") or None, "status": q.get("status") or None,
            "since_hours": since_hours, "limit": whole_number(q.get("limit"), "limit", 100)}


def whole_number(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {value!r}", hint="e.g. 100") from None
    if not 1 <= n <= 10_000:
        raise BadRequest(f"{name} must be between 1 and 10000", hint="e.g. 100")
    return n


async def json_body(request: Request) -> dict[str, Any]:
    import json

    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise BadRequest("the request body is not JSON", hint='send a JSON object, e.g. {"folder": "INBOX"}') \
            from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", hint='e.g. {"folder": "INBOX"}')
    return body
