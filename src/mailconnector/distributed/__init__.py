"""Operations past one machine: Celery workers take chunks of a run from a broker (Redis or RabbitMQ), and
the shared state (PostgreSQL) keeps the send ledger, the leases and the operation log they all write.

Needs the ``celery`` extra: ``pip install 'mailconnector[celery]'``. See docs/scaling.md.
"""

from ._app import (
    BROKER_ENV,
    QUEUE,
    WorkerContext,
    broker_url,
    build_app,
    require_shared_state,
    set_worker_context,
)
from ._submit import Submitted, can_distribute, follow_run, submit_run

__all__ = [
    "BROKER_ENV",
    "QUEUE",
    "Submitted",
    "WorkerContext",
    "broker_url",
    "build_app",
    "can_distribute",
    "follow_run",
    "require_shared_state",
    "set_worker_context",
    "submit_run",
]
