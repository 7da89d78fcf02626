"""The console's server-rendered pages and the htmx fragments their buttons ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ..errors import MailConnectorError
from . import _views as views
from ._access import Access
from ._handlers import Handlers, StartFailed, run_filters, status_of
from ._jobs import TestJob
from ._views import BadRequest

if TYPE_CHECKING:
    from ._app import ConsoleState

__all__ = ["Pages"]


class Pages(Handlers):
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
        filters = run_filters(request)
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
        if isinstance(exc, StartFailed):
            error, status = exc.error, 409 if exc.error["type"] == "LeaseBusyError" else 502
            if exc.error["type"] == "ConfigError":
                status = 422
        else:
            assert isinstance(exc, MailConnectorError)
            error, status = views.error_view(exc), status_of(exc)
        if request.headers.get("hx-request"):  # a page's button: the fragment goes where its answer would
            return self.page(request, "_error.html", http_status=status, error=error, nav="")
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"ok": False, "error": error}, status_code=status)
        return self.page(request, "error.html", http_status=status, error=error, nav="")


def _as_json(value: Any, indent: int | None = None) -> str:
    """JSON to read on a page: letters as they are (Jinja's ``tojson`` writes ``\\u00fc`` and ``\\u003c``, being
    meant for scripts); the page's autoescaping makes it safe HTML."""
    import json

    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)
