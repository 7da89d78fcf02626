"""The console's JSON API under ``/api`` (and the metrics): what the pages show, for scripts and monitoring."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import _views as views
from ._handlers import Handlers, json_body, run_filters, whole_number
from ._jobs import TestJob
from ._metrics import CONTENT_TYPE, metrics_text
from ._views import BadRequest

__all__ = ["Api"]


class Api(Handlers):
    """The JSON API under ``/api`` (and the metrics): what the pages show, for scripts and monitoring."""

    def api_connections(self, request: Request) -> Response:
        return JSONResponse(views.connections(self.state.project()))

    async def api_test(self, request: Request) -> Response:
        folder = "INBOX"
        if await request.body():
            body = await json_body(request)
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
        body = await json_body(request)
        distributed = body.get("distributed")
        if distributed is not None and not isinstance(distributed, bool):
            raise BadRequest("distributed must be true or false", hint='e.g. {"distributed": false}')
        job = await run_in_threadpool(self.start_run, request.path_params["name"], distributed)
        return JSONResponse({"run_id": job.run_id, "job": job.id, "operation": job.operation,
                             "distributed": job.distributed}, status_code=202)

    def api_runs(self, request: Request) -> Response:
        return JSONResponse(views.runs(self.store(), **run_filters(request)))

    def api_run(self, request: Request) -> Response:
        run, live = self.run_of(request.path_params["run_id"], hint="GET /api/runs lists them")
        return JSONResponse({**run, "records_settled_so_far": live["records"] if live else None})

    def api_job(self, request: Request) -> Response:
        return JSONResponse(self.job_of(request.path_params["job_id"]).view())

    def api_ledger(self, request: Request) -> Response:
        limit = whole_number(request.query_params.get("limit"), "limit", 100)
        return JSONResponse(views.ledger(self.store(), search=request.query_params.get("search") or None,
                                         status=request.query_params.get("status") or None, limit=limit))

    async def api_ledger_resolve(self, request: Request) -> Response:
        body = await json_body(request)
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
