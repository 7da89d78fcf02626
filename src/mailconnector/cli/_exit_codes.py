"""Exit codes: a command-line notion, so they are decided here, not carried by the library's errors.

Each family of errors (``errors.py``) has one code; a worker or the web console never needs them.
0 success, 1 some records failed and 2 usage errors are the command line's own; 130 is an interrupt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import (
    AuthenticationError,
    ConfigError,
    MailConnectorError,
    MessageError,
    ServerResponseError,
    StateError,
    TransportError,
)

if TYPE_CHECKING:
    from ..diagnostics import TestReport

__all__ = ["FAMILIES", "UNEXPECTED", "exit_code_for", "exit_code_of_kind", "exit_code_of_test"]

FAMILIES: dict[type[MailConnectorError], int] = {
    ConfigError: 3,  # fix the project file, flags or record settings
    AuthenticationError: 4,  # fix the credentials
    TransportError: 5,  # network, DNS, TLS, timeouts
    ServerResponseError: 6,  # the server said no
    MessageError: 7,  # a record or message cannot be composed or parsed
    StateError: 8,  # the local store, a lease, a checkpoint
}
UNEXPECTED = 10  # any other error: a bug or an unhandled case


def exit_code_for(error: BaseException | type[BaseException]) -> int:
    """The code of the error's family (its nearest ancestor in ``FAMILIES``), else 10."""
    cls = error if isinstance(error, type) else type(error)
    return next((FAMILIES[base] for base in cls.__mro__ if base in FAMILIES), UNEXPECTED)


def exit_code_of_kind(kind: str) -> int | None:
    """The code for an error named by its type, as response records and logs name it; None if unknown."""
    pending: list[type[MailConnectorError]] = [MailConnectorError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == kind:
            return exit_code_for(cls)
        pending.extend(cls.__subclasses__())
    return None


def exit_code_of_test(report: TestReport) -> int:
    """0 when every step passed, else the code of the first failure's error."""
    failed = report.first_failure()
    if failed is None:
        return 0
    return exit_code_for(failed.exception) if failed.exception is not None else UNEXPECTED
