"""The web console: a Starlette application over the library, for ``mailconnector console`` or any ASGI server.

Needs the console extra (``pip install 'mailconnector[console]'``). Pages and the JSON API under ``/api`` are
built from the same functions; every request needs the console's token (see ``create_app``).
"""

from ._app import create_app

__all__ = ["create_app"]
