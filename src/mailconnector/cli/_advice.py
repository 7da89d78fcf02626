"""What the command line adds to a library error's hint: its own options and commands.

The library's hints speak of settings and servers, never of flags, because a worker and the web console show
them too. An error names its kind of problem (``topic``); each command says here how its options help.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from ..errors import MailConnectorError

__all__ = ["EVERY_COMMAND", "FOLDER_MISSING", "advised", "advising"]

# Every command has --project.
EVERY_COMMAND: Mapping[str, str] = {"project-file-missing": "or name it with --project"}
FOLDER_MISSING = "`mailconnector folders CONNECTION --create FOLDER` creates it"


def advised(hint: str | None, topic: str | None, advice: Mapping[str, str]) -> str | None:
    """``hint`` with the command's advice on ``topic`` added (once)."""
    extra = advice.get(topic or "") or EVERY_COMMAND.get(topic or "")
    if not extra or (hint and extra in hint):
        return hint
    return f"{hint}; {extra}" if hint else extra


@contextmanager
def advising(advice: Mapping[str, str]) -> Iterator[None]:
    """Errors that leave the block carry the command's advice in their hint."""
    try:
        yield
    except MailConnectorError as exc:
        exc.hint = advised(exc.hint, exc.topic, advice)
        raise
