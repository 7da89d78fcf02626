"""The console's web application: server-rendered pages (Jinja2, htmx for the live parts, ``_pages``) and a
JSON API under ``/api`` (``_api``) that returns what the pages show (both call ``_views``); here the project
it serves, the route table and the headers every answer carries."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import MailConnectorError
from ..project import Project, find_project_file
from ._access import Access, Guard
from ._api import Api
from ._handlers import StartFailed
from ._jobs import Jobs
from ._pages import Pages

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
                        from ..auth.oauth2 import forget_providers

                        forget_providers()  # they keep their tokens in the old store: made again on use
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
    pages, api = Pages(state, access), Api(state)
    handlers: dict[Any, Callable[..., Any]] = {MailConnectorError: pages.on_error, StartFailed: pages.on_error}
    app = Starlette(routes=_routes(pages, api), exception_handlers=handlers, lifespan=pages.lifespan)
    app.add_middleware(Guard, access=access)  # before anything else runs but the headers below
    app.add_middleware(_SecurityHeaders)  # added last: the outermost, so the Guard's own answers have them too
    app.state.console = state
    return app


def _routes(pages: Pages, api: Api) -> list[BaseRoute]:
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
