"""``mailconnector worker``: a Celery worker that runs the project's distributed chunks."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import Session, err_console, with_session

__all__ = ["worker_cmd"]


@with_session(verbose=False)
def worker_cmd(
    s: Session,
    concurrency: Annotated[int | None, typer.Option(help="Chunks run at once (worker processes). Default: the "
                                                    "number of CPUs.", min=1, max=256)] = None,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to take chunks from "
                                        "(`run --distributed --queue` sends to one).")] = "mailconnector",
    pool: Annotated[str | None, typer.Option(help="Celery's pool: prefork (default), threads or solo.")] = None,
    triggers: Annotated[bool, typer.Option("--triggers/--no-triggers", help="Also run the project's triggered "
                                           "operations (`trigger:`), each by one worker at a time.")] = True,
) -> None:
    """Run a worker: it takes chunks of distributed runs from the broker (settings.broker) and sends them,
    recording what it did in the shared state (settings.state, PostgreSQL).

    It also runs the operations that have a `trigger:` (watch, or every N seconds), each by one worker at a
    time; when that worker dies, another takes it over within settings.lease_seconds (--no-triggers: not
    this one). Start as many as you like, on as many machines, each with the same project file.

    SIGTERM (or Ctrl-C) stops it after the chunks in hand are finished and acknowledged (exit 0); a worker
    that is killed leaves its chunk to another worker once the broker gives it out again
    (settings.redelivery_seconds), and the send ledger makes that second attempt send only what the first
    did not. Flower (`celery flower`) can watch the workers. Needs the celery extra:
    pip install 'mailconnector[celery]'. Exit 3 when the project has no broker or no PostgreSQL state.

    Examples:
      mailconnector worker
      mailconnector worker --concurrency 4 --log-format json
      MAILCONNECTOR_BROKER=redis://10.0.0.5:6379/0 mailconnector worker --queues statements
    """
    from ..distributed._worker import run_worker

    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names:
        raise typer.BadParameter("name at least one queue", param_hint="--queues")
    if pool is not None and pool not in ("prefork", "threads", "solo"):
        raise typer.BadParameter("must be prefork, threads or solo", param_hint="--pool")
    err_console.print(f"worker for {s.project.path}: queues {', '.join(names)} (Ctrl-C or SIGTERM stops it)")
    run_worker(s.project, concurrency=concurrency, queues=names, debug=s.debug, log_format=s.log_format, pool=pool,
               triggers=triggers)
