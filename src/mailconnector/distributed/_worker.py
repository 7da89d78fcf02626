"""Starting a worker: the project's Celery application, its logging in the project's format, and the
Celery worker itself (SIGTERM: the chunks in hand are finished and acknowledged, then it exits)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..logs import configure_logging
from ._app import QUEUE, WorkerContext, build_app, require_shared_state, set_worker_context

if TYPE_CHECKING:
    from ..project import Project

__all__ = ["install_worker_logging", "run_worker"]


def install_worker_logging(*, debug: bool, log_format: str) -> None:
    """Celery's own lines and ours, in the project's format (text or JSON lines), secrets removed; Celery is
    told not to set up logging of its own."""
    from celery.signals import setup_logging

    configure_logging(debug=debug, log_format=log_format, level=logging.INFO, also=("celery",))

    def keep_ours(**_: Any) -> None:
        """Connected, so that Celery leaves the logging configured above as it is."""

    setup_logging.connect(keep_ours, weak=False, dispatch_uid="mailconnector-worker-logging")


def run_worker(project: Project, *, concurrency: int | None, queues: Sequence[str], debug: bool = False,
               log_format: str = "text", pool: str | None = None) -> None:
    """Serve ``project``'s chunks until stopped (returns after a warm shutdown)."""
    require_shared_state(project)
    app = build_app(project)
    set_worker_context(WorkerContext(project.path))
    install_worker_logging(debug=debug, log_format=log_format)
    argv = ["worker", "--loglevel", "DEBUG" if debug else "INFO", "--queues", ",".join(queues or [QUEUE]),
            "--hostname", f"mailconnector-{os.getpid()}@%h", "--without-mingle", "--without-gossip"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if pool:
        argv += ["--pool", pool]
    app.worker_main(argv)
