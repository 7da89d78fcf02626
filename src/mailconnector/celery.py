"""For people who run Celery their own way: ``celery -A mailconnector.celery worker`` serves the project
named by ``$MAILCONNECTOR_PROJECT`` (else ./mailconnector.yaml), as ``mailconnector worker`` does.

Importing this module reads the project file and needs its broker; nothing else imports it.
"""

from __future__ import annotations

from .distributed._app import WorkerContext, build_app, set_worker_context
from .distributed._worker import install_triggers, install_worker_logging
from .project import Project

__all__ = ["app"]

_project = Project.load()
_context = WorkerContext(_project.path)
set_worker_context(_context)
install_worker_logging(debug=False, log_format="text")
install_triggers(_context)
app = build_app(_project)
