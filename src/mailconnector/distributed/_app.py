"""A project's Celery application: its broker, the delivery guarantees the ledger relies on, and its tasks.

Celery delivers a task at least once: a chunk is acknowledged only after its work is recorded
(``task_acks_late``), a chunk whose worker process died goes back to the queue (``task_reject_on_worker_lost``;
a whole worker killed: after the broker's visibility timeout), and a worker takes one chunk at a time
(``worker_prefetch_multiplier=1``), so a dying worker strands at most the chunks it was running. A chunk run
twice is safe: its sends are claimed in the send ledger, and its counts are recorded once (``finish_chunk``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..errors import ConfigError, MailConnectorError, StateError, TransportError
from ..secrets import SecretReferenceError, register_secret, resolve_in_url

if TYPE_CHECKING:
    from celery import Celery, Task

    from ..project import Project

__all__ = ["BROKER_ENV", "CHUNK_TASK", "QUEUE", "WorkerContext", "broker_unreachable", "broker_url", "build_app",
           "project_digest", "require_shared_state", "set_worker_context", "shown_url", "worker_context"]

log = logging.getLogger("mailconnector.distributed")

BROKER_ENV = "MAILCONNECTOR_BROKER"
QUEUE = "mailconnector"
CHUNK_TASK = "mailconnector.run_chunk"
MAX_ATTEMPTS = 3  # a chunk whose worker died this many times is given up (a record in it may be the cause)
_INSTALL_HINT = "pip install 'mailconnector[celery]'"


def broker_url(project: Project) -> str:
    """``$MAILCONNECTOR_BROKER``, else ``settings.broker``, its secret references resolved (and registered,
    so that no log line or error shows the password)."""
    from_env = os.environ.get(BROKER_ENV)
    configured = from_env or project.settings.broker
    if not configured:
        raise ConfigError("no broker configured: distributed runs and workers need a Celery broker",
                          source=project.source, field="settings.broker",
                          hint=f"set settings.broker: redis://HOST:6379/0 (or amqp://...) in the project file, "
                          f"or {BROKER_ENV}; see docs/scaling.md")
    source, field = (None, BROKER_ENV) if from_env else (project.source, "settings.broker")
    try:
        url = resolve_in_url(configured, base_dir=project.directory)
    except SecretReferenceError as exc:
        raise ConfigError(str(exc), source=source, field=field) from None
    password = _password_of(url)
    if password:  # before any check below can name the URL; as written and percent-decoded
        register_secret(password)
        register_secret(unquote(password))
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ConfigError("the URL holds a space or a control character", source=source, field=field,
                          hint="percent-encode it (a password is best given as ${env:...} or ${file:...})")
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ConfigError(f"{shown_url(url)!r}: a Redis database is a number",
                          source=source, field=field, hint="e.g. redis://127.0.0.1:6379/0")
    if parts.scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
        raise ConfigError(f"{shown_url(url)!r} is not a redis:// or amqp:// URL", source=source, field=field,
                          hint="for example redis://127.0.0.1:6379/0 or amqp://user:password@host:5672//")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError:
        raise ConfigError(f"{shown_url(url)!r} has a port that is not a number from 1 to 65535", source=source,
                          field=field, hint="e.g. redis://127.0.0.1:6379/0") from None
    return url


# Greedy: up to the last @, so that a raw / or @ in a password stays inside it.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")


def _password_of(url: str) -> str | None:
    m = _USERINFO.match(url)
    if m is None or ":" not in m.group(2):
        return None
    return m.group(2).split(":", 1)[1]


def shown_url(url: str) -> str:
    """The URL with its password replaced, for messages (whatever else is wrong with it)."""
    m = _USERINFO.match(url)
    if m is None or ":" not in m.group(2):
        return url
    return f"{m.group(1)}{m.group(2).split(':', 1)[0]}:***@{url[m.end():]}"


def require_shared_state(project: Project) -> None:
    """Workers on several machines share the send ledger, the read state and the operation log: a SQLite
    file on one machine cannot be that."""
    target = project.state_target()
    if not target.startswith(("postgresql://", "postgres://")):
        raise ConfigError("distributed mode needs a shared state store, and this project's is a SQLite file "
                          f"({target})", source=project.source, field="settings.state",
                          hint="set settings.state: postgresql://USER:PASSWORD@HOST/DATABASE (or "
                          "MAILCONNECTOR_STATE) on the submitter and on every worker; see docs/scaling.md")


def project_digest(path: Path) -> str:
    """What a worker compares with a chunk's submitter: the project file's bytes (secrets stay references)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_app(project: Project) -> Celery:
    """The Celery application for ``project`` (its broker and redelivery time), with the chunk task."""
    try:
        from celery import Celery
    except ImportError:
        raise ConfigError("distributed mode needs Celery, which is not installed",
                          hint=f"install the extra: {_INSTALL_HINT}") from None
    url = broker_url(project)
    settings = project.settings
    app = Celery("mailconnector", broker=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        task_acks_late=True, task_reject_on_worker_lost=True, task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        # Redis gives an unacknowledged task out again after the visibility timeout, found by a sweep that by
        # default runs only every 100 s: swept every few seconds here, so a dead worker's chunk is taken up
        # again within redelivery_seconds and a little.
        broker_transport_options={"visibility_timeout": settings.redelivery_seconds,
                                  "unacked_restore_interval": max(1.0, min(10.0, settings.redelivery_seconds / 4)),
                                  "unacked_restore_throttle": 1, "unacked_mutex_expire": 60},
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=True, task_send_sent_event=True,  # Flower and `celery events` can watch
        worker_deduplicate_successful_tasks=False,
    )
    app.task(name=CHUNK_TASK, bind=True, acks_late=True)(_run_chunk_task)
    return app


# --------------------------------------------------------------------------------------------- the worker
@dataclass
class WorkerContext:
    """What a worker process works with: the project file it was started with, read again when it changes
    (a deploy of a new file reaches running workers), one per process (a forked child opens its own store)."""

    path: Path
    stop: threading.Event = field(default_factory=threading.Event)
    _project: Project | None = None
    _stamp: tuple[int, int, int] | None = None  # pid, mtime_ns, size
    _digest: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # A pool process forked while another thread (a trigger's) held the lock would wait on it for ever.
        os.register_at_fork(after_in_child=self._fresh_lock)

    def _fresh_lock(self) -> None:
        self._lock = threading.Lock()

    @property
    def stamp(self) -> tuple[int, int, int] | None:
        """Which reading of the project file the last ``project()`` gave (it changes when the file does)."""
        return self._stamp

    def project(self) -> tuple[Project, str]:
        from ..project import Project

        with self._lock:
            stamp = self._stat()
            if self._project is None or stamp != self._stamp:
                for _ in range(3):  # the digest must be of the bytes loaded: read again if the file moved
                    digest = project_digest(self.path)
                    fresh = Project.load(self.path)
                    if self._stat() == stamp:
                        break
                    stamp = self._stat()
                if self._project is not None and self._stamp is not None and self._stamp[0] == stamp[0]:
                    fresh.keep_store_of(self._project)
                if fresh.uses_oauth2:
                    from ..auth.oauth2 import use_store

                    use_store(fresh.store())
                self._project, self._stamp, self._digest = fresh, stamp, digest
            return self._project, self._digest

    def _stat(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return os.getpid(), st.st_mtime_ns, st.st_size


_context: WorkerContext | None = None


def set_worker_context(context: WorkerContext) -> None:
    global _context
    _context = context


def worker_context() -> WorkerContext:
    if _context is None:
        raise ConfigError("this Celery worker has no mailconnector project",
                          hint="start it with `mailconnector worker`, or set MAILCONNECTOR_PROJECT before "
                          "`celery -A mailconnector.celery worker`")
    return _context


def _run_chunk_task(task: Task[Any, Any], run_id: str, operation: str, chunk: int, items: list[Any] | None,
                    batch_key: str | None, project: str, version: str) -> str:
    """One chunk of a distributed run (``items``: its records; None: the operation's own source, a mailbox).

    A task that raised would be acknowledged (and its chunk never recorded): what cannot be done now (the
    store away, the project file half-written by a deploy) is queued again for later instead."""
    try:
        return _run_chunk(task, run_id, operation, chunk, items, batch_key, project, version)
    except (StateError, ConfigError) as exc:
        # Within the redelivery time: a task a worker holds longer is given out once more meanwhile.
        visibility = float(task.app.conf.broker_transport_options.get("visibility_timeout", 60.0))
        wait = min(30.0, visibility / 2)
        log.warning("run %s chunk %d: %s; queued again for %.0f s from now", run_id, chunk, exc.message, wait)
        raise task.retry(countdown=wait, max_retries=None) from None


def _run_chunk(task: Task[Any, Any], run_id: str, operation: str, chunk: int, items: list[Any] | None,
               batch_key: str | None, project: str, version: str) -> str:
    from ..operations import run_chunk
    from ..state import LeaseKeeper

    context = worker_context()
    proj, digest = context.project()
    store = proj.store()
    if store.chunk_done(run_id, chunk):
        return "already done"  # a redelivered copy of a chunk that was finished and recorded
    refusal = _mismatch(digest, project, version)
    if refusal is not None:
        log.error("run %s chunk %d refused: %s", run_id, chunk, refusal)
        store.finish_chunk(run_id, chunk, status="error", error=refusal, worker=_worker_name(),
                           errors=[(f"chunk {chunk}", {"type": "ConfigError", "message": refusal,
                                                       "stage": "worker"})],
                           failed=len(items or []))
        return "refused"
    keeper = LeaseKeeper(store, chunk_lease(run_id, chunk), proj.settings.lease_seconds)
    if not keeper.take():
        # Another worker is running this chunk (the broker gave it out again while it ran): look again later,
        # within the redelivery time (a task held longer by a worker would be given out once more).
        settings = proj.settings
        raise task.retry(countdown=min(30.0, settings.lease_seconds, settings.redelivery_seconds / 2),
                         max_retries=None)
    assert keeper.fence is not None
    if keeper.fence.token > MAX_ATTEMPTS or store.chunk_done(run_id, chunk):
        if not store.chunk_done(run_id, chunk):
            why = (f"chunk {chunk} was started {MAX_ATTEMPTS} times and each time its worker ended before finishing "
                   "it (killed, out of memory, or crashed by a record in it); given up")
            log.error("run %s: %s", run_id, why)
            store.finish_chunk(run_id, chunk, status="error", error=why, worker=_worker_name(),
                               errors=[(f"chunk {chunk}", {"type": "WorkerLost", "message": why, "stage": "worker"})],
                               failed=len(items or []))
        keeper.stop(forget=True)
        return "given up"
    recorded = False
    try:
        run_chunk(proj, operation, run_id=run_id, chunk=chunk, items=items, batch_key=batch_key,
                  stop=context.stop, worker=_worker_name())
        recorded = True
    except StateError:
        raise  # the store: queued again (above); the ledger makes the next attempt send only the rest
    except MailConnectorError as exc:
        if not store.chunk_done(run_id, chunk):  # it failed before its run could record it
            store.finish_chunk(run_id, chunk, status="error", error=exc.message, worker=_worker_name(),
                               errors=[(f"chunk {chunk}", {"type": exc.kind, "message": exc.message,
                                                           "hint": exc.hint, "stage": "worker"})],
                               failed=len(items or []))
        recorded = True
        log.error("run %s chunk %d: %s", run_id, chunk, exc.message)
        return "error"
    finally:
        keeper.stop(forget=recorded)
    return "done"


def chunk_lease(run_id: str, chunk: int) -> str:
    """Held by the worker running a chunk (so that a copy the broker gives out again waits); its token counts
    the attempts. The store drops it with the chunk's record."""
    return f"chunk:{run_id}/{chunk}"


def _mismatch(digest: str, submitted: str, version: str) -> str | None:
    if version != __version__:
        return (f"this worker ({_worker_name()}) runs mailconnector {__version__}, and the run was submitted by "
                f"mailconnector {version}: install the same release on every worker and submitter")
    if digest != submitted:
        return (f"this worker ({_worker_name()}) has another version of the project file (digest {digest}; "
                f"the run was submitted with {submitted}): deploy the same mailconnector.yaml to every worker "
                "and submitter")
    return None


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def broker_unreachable(url: str, exc: BaseException) -> TransportError:
    return TransportError(f"the broker at {shown_url(url)} does not answer ({type(exc).__name__}: {exc})",
                          hint=f"start it, or check settings.broker / {BROKER_ENV}")
