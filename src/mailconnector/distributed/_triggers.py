"""Triggered operations on the workers: each operation with a ``trigger`` is run by exactly one worker at a
time, the holder of its lease (``trigger:NAME``) in the shared state. Every worker tries to take each
trigger's lease now and then; when its holder dies (its lease runs out, or at once when it ran on this host),
another worker takes it over within ``settings.lease_seconds``.

``trigger: watch`` keeps the operation running as ``run --watch`` does (IMAP IDLE, its folder's own lease
too); ``trigger: {every: SECONDS}`` runs it, then waits that long, again and again. What a dead holder had in
flight is what any killed run leaves: read again (not acknowledged) or reported ``uncertain`` (sends).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from .._backoff import Backoff
from ..errors import MailConnectorError
from ..logs import in_this_run
from ..state import LeaseKeeper
from ._app import WorkerContext

__all__ = ["Triggers"]

log = logging.getLogger("mailconnector.distributed")


@dataclass
class _Held:
    thread: threading.Thread
    stop: threading.Event


class Triggers:
    """The triggered operations this worker process may run; started with the worker, stopped with it."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self.stop = threading.Event()
        self._held: dict[str, _Held] = {}
        self._thread: threading.Thread | None = None
        # Triggered operations the project file gets wrong, with the reading of the file that said so: told
        # once, and not tried again until the file changes.
        self._broken: dict[str, object] = {}

    def start(self) -> None:
        self.stop.clear()
        self._thread = threading.Thread(target=in_this_run(self._loop), name="mc-triggers", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every trigger this worker holds (each after the record in hand) and give their leases back.
        The loop is stopped first, so that it takes no trigger up while the others are being stopped."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for held in list(self._held.values()):
            held.stop.set()
        for held in list(self._held.values()):
            held.thread.join(timeout)

    def _loop(self) -> None:
        while not self.stop.is_set():
            wait = 5.0
            try:
                project, _ = self.context.project()
                wait = min(5.0, project.settings.lease_seconds / 3)
                self._take_free_ones()
            except MailConnectorError as exc:  # a store away, a broken project file: try again later
                log.warning("triggered operations: %s", exc.message)
            self.stop.wait(wait)

    def _take_free_ones(self) -> None:
        project, _ = self.context.project()
        for name in project.triggered_operations():
            held = self._held.get(name)
            if held is not None and held.thread.is_alive():
                continue
            if self._broken.get(name) == self.context.stamp:
                continue
            try:
                project.operation(name)
            except MailConnectorError as exc:
                self._broken[name] = self.context.stamp
                log.error("the triggered operation %s cannot run: %s", name, exc.message)
                continue
            self._broken.pop(name, None)
            keeper = LeaseKeeper(project.store(), f"trigger:{name}", project.settings.lease_seconds)
            if not keeper.take():
                continue  # another worker runs it
            stop = threading.Event()
            thread = threading.Thread(target=in_this_run(self._run), args=(name, keeper, stop),
                                      name=f"mc-trigger-{name}", daemon=True)
            self._held[name] = _Held(thread, stop)
            thread.start()

    def _run(self, name: str, keeper: LeaseKeeper, stop: threading.Event) -> None:
        from ..operations import run_operation, watch_operation

        lost = threading.Thread(target=self._watch_lease, args=(keeper, stop), daemon=True)
        lost.start()
        backoff = Backoff(1.0, 60.0)
        try:
            log.info("this worker runs the triggered operation %s", name)
            while not stop.is_set():
                try:
                    project, _ = self.context.project()
                    trigger = project.operation(name).trigger
                except MailConnectorError as exc:  # the file changed under it: the loop looks at it again
                    log.error("the triggered operation %s cannot run: %s", name, exc.message)
                    return
                if trigger is None:
                    return  # the trigger was removed from the project file
                try:
                    if trigger == "watch":
                        watch_operation(project, name, stop=stop, wait_for_lease=True)
                    else:
                        run_operation(project, name, stop=stop, log_empty=False)
                        stop.wait(trigger.every)
                    backoff.reset()
                except MailConnectorError as exc:
                    delay = backoff.next()
                    log.warning("triggered operation %s: %s; again in %.0f s", name, exc.message, delay)
                    stop.wait(delay)
        except BaseException:
            log.exception("triggered operation %s stopped", name)
        finally:
            stop.set()
            keeper.stop()

    def _watch_lease(self, keeper: LeaseKeeper, stop: threading.Event) -> None:
        """The trigger stops when this worker stops, or when its lease was lost (another worker took over)."""
        while not stop.wait(0.5):
            if self.stop.is_set() or keeper.lost.is_set():
                stop.set()
