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
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
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
    env = Environment(loader=PackageLoader("mailconnector.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["as_json"] = _as_json
    templates = Jinja2Templates(env=env)

    def page(request: Request, name: str, http_status: int = 200, **context: Any) -> Response:
        context.setdefault("nav", name.split(".")[0].lstrip("_"))
        return templates.TemplateResponse(request, name, {"csrf": access.csrf, **context}, status_code=http_status)

    def store() -> Any:
        return state.project().store()

    def connection_of(name: str) -> Any:
        project = state.project()
        if name not in project.connection_names:
            raise NotFound(f"no connection named {name!r}", hint="the connections page lists them")
        return project.connection(name)

    def job_of(job_id: str) -> TestJob | RunJob:
        job = state.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} in this console", hint="jobs are kept by the console that started "
                           "them, until it stops; runs stay in the operation log")
        return job

    # ------------------------------------------------------------------------------------------ pages
    def home(request: Request) -> Response:
        return RedirectResponse("/connections", status_code=303)

    def connections_page(request: Request) -> Response:
        return page(request, "connections.html", connections=views.connections(state.project()))

    def test_start(request: Request) -> Response:
        job = state.jobs.start_test(connection_of(request.path_params["name"]), "INBOX")
        return page(request, "_test.html", job=job.view())

    def job_fragment(request: Request) -> Response:
        job = job_of(request.path_params["job_id"])
        if isinstance(job, TestJob):
            return page(request, "_test.html", job=job.view())
        return page(request, "_run_progress.html", job=job.view())

    def operations_page(request: Request) -> Response:
        return page(request, "operations.html", operations=views.operations(state.project()),
                    running={j.operation: j.view() for j in state.jobs.running()})

    def run_start(request: Request) -> Response:
        name = request.path_params["name"]
        job = _start_run(name, None)
        return page(request, "_run_progress.html", job=job.view())

    def runs_page(request: Request) -> Response:
        filters = _run_filters(request)
        rows = views.runs(store(), **filters)
        known = list(state.project().doc.data.get("operations") or {})
        template = "_runs_table.html" if request.headers.get("hx-request") else "runs.html"
        return page(request, template, nav="runs", runs=rows, filters=filters, operations=known,
                    statuses=views.RUN_STATUSES, query=request.url.query)

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = views.run_detail(store(), run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r} in the operation logs", hint="the runs page lists them")
        live = next((j.view() for j in state.jobs.running() if j.run_id == run_id), None)
        return page(request, "run.html", nav="runs", run=run, live=live)

    def ledger_page(request: Request) -> Response:
        search = request.query_params.get("search") or None
        status = request.query_params.get("status") or None
        entries = views.ledger(store(), search=search, status=status)
        uncertain = views.ledger(store(), status="uncertain")
        return page(request, "ledger.html", entries=entries, uncertain=uncertain, search=search or "",
                    status=status or "", statuses=views.LEDGER_STATUSES)

    async def ledger_resolve(request: Request) -> Response:
        form = await request.form()
        message_id, outcome = str(form.get("message_id", "")), str(form.get("outcome", ""))
        if outcome not in ("sent", "not_sent"):
            raise BadRequest(f"unknown outcome {outcome!r}", hint="sent or not_sent")
        from starlette.concurrency import run_in_threadpool

        result = await run_in_threadpool(views.resolve_uncertain, store(), message_id, sent=outcome == "sent")
        return page(request, "_resolved.html", result=result)

    def health_page(request: Request) -> Response:
        template = "_health_table.html" if request.headers.get("hx-request") else "health.html"
        return page(request, template, nav="health", leases=views.health(store()))

    # -------------------------------------------------------------------------------------------- API
    def api_connections(request: Request) -> Response:
        return JSONResponse(views.connections(state.project()))

    async def api_test(request: Request) -> Response:
        folder = "INBOX"
        if await request.body():
            body = await _json_body(request)
            folder = str(body.get("folder") or "INBOX")
        from starlette.concurrency import run_in_threadpool

        conn = await run_in_threadpool(connection_of, request.path_params["name"])
        job = state.jobs.start_test(conn, folder)
        await run_in_threadpool(job.done.wait)
        if job.error is not None:
            return JSONResponse({"ok": False, "error": job.error}, status_code=500)
        assert job.report is not None
        return JSONResponse(_test_document(job))

    def api_operations(request: Request) -> Response:
        return JSONResponse(views.operations(state.project()))

    async def api_run_start(request: Request) -> Response:
        body = await _json_body(request)
        distributed = body.get("distributed")
        if distributed is not None and not isinstance(distributed, bool):
            raise BadRequest("distributed must be true or false", hint='e.g. {"distributed": false}')
        from starlette.concurrency import run_in_threadpool

        job = await run_in_threadpool(_start_run, request.path_params["name"], distributed)
        return JSONResponse({"run_id": job.run_id, "job": job.id, "operation": job.operation,
                             "distributed": job.distributed}, status_code=202)

    def api_runs(request: Request) -> Response:
        return JSONResponse(views.runs(store(), **_run_filters(request)))

    def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = views.run_detail(store(), run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r} in the operation logs", hint="GET /api/runs lists them")
        live = next((j.view() for j in state.jobs.running() if j.run_id == run_id), None)
        return JSONResponse({**run, "records_settled_so_far": live["records"] if live else None})

    def api_job(request: Request) -> Response:
        return JSONResponse(job_of(request.path_params["job_id"]).view())

    def api_ledger(request: Request) -> Response:
        limit = _int(request.query_params.get("limit"), "limit", 100)
        return JSONResponse(views.ledger(store(), search=request.query_params.get("search") or None,
                                         status=request.query_params.get("status") or None, limit=limit))

    async def api_ledger_resolve(request: Request) -> Response:
        body = await _json_body(request)
        sent = body.get("sent")
        if not isinstance(sent, bool) or not isinstance(body.get("message_id"), str):
            raise BadRequest("give message_id (a string) and sent (true or false)",
                             hint='e.g. {"message_id": "<id@example.test>", "sent": false}')
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(views.resolve_uncertain, store(), body["message_id"],
                                                    sent=sent))

    def api_health(request: Request) -> Response:
        return JSONResponse(views.health(store()))

    def metrics(request: Request) -> Response:
        return Response(metrics_text(store()), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------------------------------ shared
    def _start_run(name: str, distributed: bool | None) -> RunJob:
        """``distributed`` None: on the workers when the project can (a broker, a shared state, a send)."""
        project = state.project()
        if name not in (project.doc.data.get("operations") or {}):
            raise NotFound(f"no operation named {name!r}", hint="the operations page lists them")
        if distributed is None:
            from ..distributed._submit import can_distribute

            distributed = can_distribute(project, name)
        job = state.jobs.start_run(project, name, distributed=distributed)
        if job.run_id is None and job.error is not None:
            raise _StartFailed(job.error)
        return job

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

    # ------------------------------------------------------------------------------------------ errors
    def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, _StartFailed):
            error, status = exc.error, 409 if exc.error["type"] == "LeaseBusyError" else 502
            if exc.error["type"] == "ConfigError":
                status = 422
        else:
            assert isinstance(exc, MailConnectorError)
            error, status = views.error_view(exc), _status_of(exc)
        if request.headers.get("hx-request"):  # a page's button: the fragment goes where its answer would
            return page(request, "_error.html", http_status=status, error=error, nav="")
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"ok": False, "error": error}, status_code=status)
        return page(request, "error.html", http_status=status, error=error, nav="")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(state.jobs.shutdown)  # runs end after the record in hand, as on SIGTERM
        await run_in_threadpool(state.close)

    routes = [
        Route("/", home),
        Route("/connections", connections_page),
        Route("/connections/{name}/test", test_start, methods=["POST"]),
        Route("/jobs/{job_id}", job_fragment),
        Route("/operations", operations_page),
        Route("/operations/{name:path}/runs", run_start, methods=["POST"]),  # operation names may hold a /
        Route("/runs", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/ledger", ledger_page),
        Route("/ledger/resolve", ledger_resolve, methods=["POST"]),
        Route("/health", health_page),
        Route("/metrics", metrics),
        Route("/api/connections", api_connections),
        Route("/api/connections/{name}/test", api_test, methods=["POST"]),
        Route("/api/operations", api_operations),
        Route("/api/operations/{name:path}/runs", api_run_start, methods=["POST"]),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/jobs/{job_id}", api_job),
        Route("/api/ledger", api_ledger),
        Route("/api/ledger/resolve", api_ledger_resolve, methods=["POST"]),
        Route("/api/health", api_health),
        Mount("/static", StaticFiles(packages=[("mailconnector.console", "static")]), name="static"),
    ]
    handlers: dict[Any, Callable[..., Any]] = {MailConnectorError: on_error, _StartFailed: on_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(Guard, access=access)  # before anything else runs but the headers below
    app.add_middleware(_SecurityHeaders)  # added last: the outermost, so the Guard's own answers have them too
    app.state.console = state
    return app


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
