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

__all__ = ["install_triggers", "install_worker_logging", "run_worker"]


def install_worker_logging(*, debug: bool, log_format: str) -> None:
    """Celery's own lines and ours, in the project's format (text or JSON lines), secrets removed; Celery is
    told not to set up logging of its own."""
    from celery.signals import setup_logging

    configure_logging(debug=debug, log_format=log_format, level=logging.INFO, also=("celery",))

    def keep_ours(**_: Any) -> None:
        """Connected, so that Celery leaves the logging configured above as it is."""

    setup_logging.connect(keep_ours, weak=False, dispatch_uid="mailconnector-worker-logging")


def install_triggers(context: WorkerContext) -> None:
    """The worker also runs the project's triggered operations (each by one worker at a time): started once
    it is ready, stopped (after the record in hand) when it shuts down."""
    from celery.signals import worker_ready, worker_shutdown

    from ._triggers import Triggers

    triggers = Triggers(context)

    def ready(**_: Any) -> None:
        triggers.start()

    def shutting_down(**_: Any) -> None:
        triggers.shutdown()

    worker_ready.connect(ready, weak=False, dispatch_uid="mailconnector-triggers-start")
    worker_shutdown.connect(shutting_down, weak=False, dispatch_uid="mailconnector-triggers-stop")


def run_worker(project: Project, *, concurrency: int | None, queues: Sequence[str], debug: bool = False,
               log_format: str = "text", pool: str | None = None, triggers: bool = True) -> None:
    """Serve ``project``'s chunks (and its triggered operations) until stopped (returns after a warm shutdown)."""
    require_shared_state(project)
    app = build_app(project)
    context = WorkerContext(project.path)
    set_worker_context(context)
    install_worker_logging(debug=debug, log_format=log_format)
    if triggers:
        install_triggers(context)
    argv = ["worker", "--loglevel", "DEBUG" if debug else "INFO", "--queues", ",".join(queues or [QUEUE]),
            "--hostname", f"mailconnector-{os.getpid()}@%h", "--without-mingle", "--without-gossip"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if pool:
        argv += ["--pool", pool]
    app.worker_main(argv)
