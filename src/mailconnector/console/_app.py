"""The console's web application: server-rendered pages (Jinja2, htmx for the live parts) and a JSON API under
``/api`` that returns what the pages show (both call ``_views``)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..errors import ConfigError, LeaseBusyError, MailConnectorError, StateError
from ..project import Project, find_project_file
from . import _views as views
from ._access import Access, Guard
from ._jobs import Jobs, RunJob, TestJob
from ._metrics import CONTENT_TYPE, metrics_text
from ._views import BadRequest, Conflict, NotFound

__all__ = ["ConsoleState", "create_app"]

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class ConsoleState:
    """The project the console serves, read again when its file changes (the store is kept when its place
    did not change), and the background jobs."""

    def __init__(self, project_path: Path | None) -> None:
        self.project_path = project_path
        self.jobs = Jobs()
        self._project: Project | None = None
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def project(self) -> Project:
        with self._lock:  # requests are served from a pool of threads
            path = self._project.path if self._project is not None else None
            stamp = _stamp(path) if path is not None else None
            if self._project is None or stamp is None or stamp != self._stamp:
                file = find_project_file(self.project_path)
                stamp = _stamp(file)  # taken before reading it, so that an edit meanwhile is seen next time
                fresh = Project.load(file)
                if self._project is not None:
                    fresh.keep_store_of(self._project)
                    if self._project._store is not None and self._project._store is not fresh._store:
                        self._project._store.close()  # the state moved elsewhere: the old store is done
                fresh.store()  # opened here, under the lock, so that two requests never open two
                _register_secrets(fresh)
                self._project, self._stamp = fresh, stamp
                if fresh.uses_oauth2:
                    from ..auth.oauth2 import use_store

                    use_store(fresh.store())  # OAuth2 tokens shared with the command line's runs
            return self._project

    def close(self) -> None:
        with self._lock:
            if self._project is not None and self._project._store is not None:
                self._project._store.close()


def _register_secrets(project: Project) -> None:
    """Every connection is built once as the file is read: building one registers its secrets for redaction,
    so that no page, whichever is opened first, shows a password that a stored error or record holds."""
    for name in project.connection_names:
        with contextlib.suppress(MailConnectorError):  # the connections page shows what is wrong with it
            project.connection(name)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def create_app(project_path: str | os.PathLike[str] | None = None, *, token: str | None) -> Starlette:
    """The console for one project file. ``token`` None runs without one (the command allows that only on a
    loopback address)."""
    access = Access(token)
    state = ConsoleState(Path(project_path) if project_path is not None else None)
    pages, api = _Pages(state, access), _Api(state)
    handlers: dict[Any, Callable[..., Any]] = {MailConnectorError: pages.on_error, _StartFailed: pages.on_error}
    app = Starlette(routes=_routes(pages, api), exception_handlers=handlers, lifespan=pages.lifespan)
    app.add_middleware(Guard, access=access)  # before anything else runs but the headers below
    app.add_middleware(_SecurityHeaders)  # added last: the outermost, so the Guard's own answers have them too
    app.state.console = state
    return app


def _routes(pages: _Pages, api: _Api) -> list[BaseRoute]:
    """Every URL of the console in one table: the pages, then the JSON API that returns what they show."""
    return [
        Route("/", pages.home),
        Route("/connections", pages.connections_page),
        Route("/connections/{name}/test", pages.test_start, methods=["POST"]),
        Route("/jobs/{job_id}", pages.job_fragment),
        Route("/operations", pages.operations_page),
        Route("/operations/{name:path}/runs", pages.run_start, methods=["POST"]),  # operation names may hold a /
        Route("/runs", pages.runs_page),
        Route("/runs/{run_id}", pages.run_page),
        Route("/ledger", pages.ledger_page),
        Route("/ledger/resolve", pages.ledger_resolve, methods=["POST"]),
        Route("/health", pages.health_page),
        Route("/metrics", api.metrics),
        Route("/api/connections", api.api_connections),
        Route("/api/connections/{name}/test", api.api_test, methods=["POST"]),
        Route("/api/operations", api.api_operations),
        Route("/api/operations/{name:path}/runs", api.api_run_start, methods=["POST"]),
        Route("/api/runs", api.api_runs),
        Route("/api/runs/{run_id}", api.api_run),
        Route("/api/jobs/{job_id}", api.api_job),
        Route("/api/ledger", api.api_ledger),
        Route("/api/ledger/resolve", api.api_ledger_resolve, methods=["POST"]),
        Route("/api/health", api.api_health),
        Mount("/static", StaticFiles(packages=[("mailconnector.console", "static")]), name="static"),
    ]


class _Handlers:
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
            raise _StartFailed(job.error)
        return job

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """When the app stops, its jobs end and the store closes (one state behind pages and API alike)."""
        yield
        await run_in_threadpool(self.state.jobs.shutdown)  # runs end after the record in hand, as on SIGTERM
        await run_in_threadpool(self.state.close)


class _Pages(_Handlers):
    """The server-rendered pages and the htmx fragments their buttons ask for; errors answered as a page,
    a fragment or JSON, whichever the request expects."""

    def __init__(self, state: ConsoleState, access: Access) -> None:
        super().__init__(state)
        self.access = access
        env = Environment(loader=PackageLoader("mailconnector.console", "templates"),
                          autoescape=select_autoescape(default=True, default_for_string=True))
        env.filters["as_json"] = _as_json
        self.templates = Jinja2Templates(env=env)

    def page(self, request: Request, name: str, http_status: int = 200, **context: Any) -> Response:
        context.setdefault("nav", name.split(".")[0].lstrip("_"))
        return self.templates.TemplateResponse(request, name, {"csrf": self.access.csrf, **context},
                                               status_code=http_status)

    def home(self, request: Request) -> Response:
        return RedirectResponse("/connections", status_code=303)

    def connections_page(self, request: Request) -> Response:
        return self.page(request, "connections.html", connections=views.connections(self.state.project()))

    def test_start(self, request: Request) -> Response:
        job = self.state.jobs.start_test(self.connection_of(request.path_params["name"]), "INBOX")
        return self.page(request, "_test.html", job=job.view())

    def job_fragment(self, request: Request) -> Response:
        job = self.job_of(request.path_params["job_id"])
        if isinstance(job, TestJob):
            return self.page(request, "_test.html", job=job.view())
        return self.page(request, "_run_progress.html", job=job.view())

    def operations_page(self, request: Request) -> Response:
        return self.page(request, "operations.html", operations=views.operations(self.state.project()),
                         running={j.operation: j.view() for j in self.state.jobs.running()})

    def run_start(self, request: Request) -> Response:
        job = self.start_run(request.path_params["name"], None)
        return self.page(request, "_run_progress.html", job=job.view())

    def runs_page(self, request: Request) -> Response:
        filters = _run_filters(request)
        rows = views.runs(self.store(), **filters)
        known = list(self.state.project().doc.data.get("operations") or {})
        template = "_runs_table.html" if request.headers.get("hx-request") else "runs.html"
        return self.page(request, template, nav="runs", runs=rows, filters=filters, operations=known,
                         statuses=views.RUN_STATUSES, query=request.url.query)

    def run_page(self, request: Request) -> Response:
        run, live = self.run_of(request.path_params["run_id"], hint="the runs page lists them")
        return self.page(request, "run.html", nav="runs", run=run, live=live)

    def ledger_page(self, request: Request) -> Response:
        search = request.query_params.get("search") or None
        status = request.query_params.get("status") or None
        entries = views.ledger(self.store(), search=search, status=status)
        uncertain = views.ledger(self.store(), status="uncertain")
        return self.page(request, "ledger.html", entries=entries, uncertain=uncertain, search=search or "",
                         status=status or "", statuses=views.LEDGER_STATUSES)

    async def ledger_resolve(self, request: Request) -> Response:
        form = await request.form()
        message_id, outcome = str(form.get("message_id", "")), str(form.get("outcome", ""))
        if outcome not in ("sent", "not_sent"):
            raise BadRequest(f"unknown outcome {outcome!r}", hint="sent or not_sent")
        result = await run_in_threadpool(views.resolve_uncertain, self.store(), message_id,
                                         sent=outcome == "sent")
        return self.page(request, "_resolved.html", result=result)

    def health_page(self, request: Request) -> Response:
        template = "_health_table.html" if request.headers.get("hx-request") else "health.html"
        return self.page(request, template, nav="health", leases=views.health(self.store()))

    def on_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, _StartFailed):
            error, status = exc.error, 409 if exc.error["type"] == "LeaseBusyError" else 502
            if exc.error["type"] == "ConfigError":
                status = 422
        else:
            assert isinstance(exc, MailConnectorError)
            error, status = views.error_view(exc), _status_of(exc)
        if request.headers.get("hx-request"):  # a page's button: the fragment goes where its answer would
            return self.page(request, "_error.html", http_status=status, error=error, nav="")
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"ok": False, "error": error}, status_code=status)
        return self.page(request, "error.html", http_status=status, error=error, nav="")


class _Api(_Handlers):
    """The JSON API under ``/api`` (and the metrics): what the pages show, for scripts and monitoring."""

    def api_connections(self, request: Request) -> Response:
        return JSONResponse(views.connections(self.state.project()))

    async def api_test(self, request: Request) -> Response:
        folder = "INBOX"
        if await request.body():
            body = await _json_body(request)
            folder = str(body.get("folder") or "INBOX")
        conn = await run_in_threadpool(self.connection_of, request.path_params["name"])
        job = self.state.jobs.start_test(conn, folder)
        await run_in_threadpool(job.done.wait)
        if job.error is not None:
            return JSONResponse({"ok": False, "error": job.error}, status_code=500)
        assert job.report is not None
        return JSONResponse(_test_document(job))

    def api_operations(self, request: Request) -> Response:
        return JSONResponse(views.operations(self.state.project()))

    async def api_run_start(self, request: Request) -> Response:
        body = await _json_body(request)
        distributed = body.get("distributed")
        if distributed is not None and not isinstance(distributed, bool):
            raise BadRequest("distributed must be true or false", hint='e.g. {"distributed": false}')
        job = await run_in_threadpool(self.start_run, request.path_params["name"], distributed)
        return JSONResponse({"run_id": job.run_id, "job": job.id, "operation": job.operation,
                             "distributed": job.distributed}, status_code=202)

    def api_runs(self, request: Request) -> Response:
        return JSONResponse(views.runs(self.store(), **_run_filters(request)))

    def api_run(self, request: Request) -> Response:
        run, live = self.run_of(request.path_params["run_id"], hint="GET /api/runs lists them")
        return JSONResponse({**run, "records_settled_so_far": live["records"] if live else None})

    def api_job(self, request: Request) -> Response:
        return JSONResponse(self.job_of(request.path_params["job_id"]).view())

    def api_ledger(self, request: Request) -> Response:
        limit = _int(request.query_params.get("limit"), "limit", 100)
        return JSONResponse(views.ledger(self.store(), search=request.query_params.get("search") or None,
                                         status=request.query_params.get("status") or None, limit=limit))

    async def api_ledger_resolve(self, request: Request) -> Response:
        body = await _json_body(request)
        sent = body.get("sent")
        if not isinstance(sent, bool) or not isinstance(body.get("message_id"), str):
            raise BadRequest("give message_id (a string) and sent (true or false)",
                             hint='e.g. {"message_id": "<id@example.test>", "sent": false}')
        return JSONResponse(await run_in_threadpool(views.resolve_uncertain, self.store(), body["message_id"],
                                                    sent=sent))

    def api_health(self, request: Request) -> Response:
        return JSONResponse(views.health(self.store()))

    def metrics(self, request: Request) -> Response:
        return Response(metrics_text(self.store()), media_type=CONTENT_TYPE)


def _test_document(job: TestJob) -> dict[str, Any]:
    doc = job.view()
    return {k: v for k, v in doc.items() if k not in ("id", "done", "error")}


def _run_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    since = q.get("since_hours") or None
    try:
        since_hours = float(since) if since is not None else None
    except ValueError:
        since_hours = -1.0
    if since_hours is not None and not 0 <= since_hours < 1e6:  # nan, inf and negatives too
        raise BadRequest(f"since_hours must be a number of hours, not {since!r}", hint="e.g. 24")
    return {"operation": q.get("operation") or None, "status": q.get("status") or None,
            "since_hours": since_hours, "limit": _int(q.get("limit"), "limit", 100)}


class _StartFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


def _status_of(exc: MailConnectorError) -> int:
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


def _as_json(value: Any, indent: int | None = None) -> str:
    """JSON to read on a page: letters as they are (Jinja's ``tojson`` writes ``\\u00fc`` and ``\\u003c``, being
    meant for scripts); the page's autoescaping makes it safe HTML."""
    import json

    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {value!r}", hint="e.g. 100") from None
    if not 1 <= n <= 10_000:
        raise BadRequest(f"{name} must be between 1 and 10000", hint="e.g. 100")
    return n


async def _json_body(request: Request) -> dict[str, Any]:
    import json

    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise BadRequest("the request body is not JSON", hint='send a JSON object, e.g. {"folder": "INBOX"}') \
            from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", hint='e.g. {"folder": "INBOX"}')
    return body


class _SecurityHeaders:
    """Headers on every answer: no framing, no script or style from elsewhere, nothing cached, no Referer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(b"content-security-policy", _CSP.encode()),
                                       (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                                       (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, with_headers)
