"""What IMAP folders are, apart from any connection: their records, the names we accept, how they nest and sort.

Kept beside the session so that ``imap.py`` reads as the conversation with the server, and so that this
knowledge can be read and tested without one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from imapclient import exceptions as imap_exc

from ._imap_lib import clean as _clean
from .errors import ConfigError


@dataclass(frozen=True)
class FolderState:
    """A selected folder as SELECT reports it: what Read Email needs to tell new mail from mail already read."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class FolderInfo:
    """One row of the folder list: the LIST flags, the special use and, on request, the STATUS counts."""

    name: str
    flags: tuple[str, ...]
    special_use: str | None
    delimiter: str | None
    messages: int | None = None
    unseen: int | None = None


# The RFC 6154 special-use flags (and Gmail's \Important) that mark what a folder is for.
SPECIAL_USE = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash", "\\Important")


# What servers say of a folder that is not there: the RFC 5530 codes first, then the words of servers that
# send none (Cyrus and Courier: "Mailbox does not exist"; Dovecot: "Mailbox doesn't exist").
_MISSING_FOLDER = re.compile(
    r"\[(NONEXISTENT|TRYCREATE)\]|mailbox does(?: not|n't) exist|no such (?:mailbox|folder)|unknown mailbox"
    r"|folder (?:does(?: not|n't) exist|not found)", re.IGNORECASE)


@contextlib.contextmanager
def folder_must_exist(folder: str) -> Iterator[None]:
    """A refusal that says the folder is missing becomes a configuration error with a hint (exit 3)."""
    try:
        yield
    except imap_exc.IMAPClientError as exc:
        if isinstance(exc, imap_exc.IMAPClientAbortError) or not _MISSING_FOLDER.search(str(exc)):
            raise
        raise ConfigError(f"folder {folder!r} does not exist ({_clean(exc)})",
                          hint="list the folders with: mailconnector folders CONNECTION") from exc


def check_folder_name(folder: str) -> None:
    """Refuse a folder name no server should be asked to create: empty, with control characters (CR and LF
    would end the command line), or with the LIST wildcards ``*`` and ``%`` (such a folder cannot be listed
    by its name alone)."""
    if not folder or not folder.strip():
        raise ConfigError("the folder name is empty", field="folder")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in folder):
        raise ConfigError(f"folder name {folder!r} contains a control character (CR, LF, NUL, tab, ...)",
                          field="folder")
    if "*" in folder or "%" in folder:
        raise ConfigError(f"folder name {folder!r} contains * or %, which IMAP treats as wildcards",
                          field="folder", hint="choose a name without * and %")


def folder_levels(folder: str, delimiter: str | None) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]`` with the server's delimiter; a name that starts or ends with
    it, or has an empty level (``a//b``), is refused: servers either refuse it or make something else."""
    if not delimiter or delimiter not in folder:
        return [folder]
    parts = folder.split(delimiter)
    if any(not p for p in parts):
        raise ConfigError(f"folder name {folder!r} has an empty level (the server's hierarchy delimiter is "
                          f"{delimiter!r})", field="folder",
                          hint=f"write nested folders as Parent{delimiter}Child, without a leading, trailing or "
                               f"doubled {delimiter!r}")
    return [delimiter.join(parts[: i + 1]) for i in range(len(parts))]


def folder_order(info: FolderInfo) -> tuple[int, list[str], str]:
    """INBOX (and what is under it) first, then alphabetically, level by level and ignoring case, so that
    a folder's children follow it (``a``, ``a/b``, ``a-c``)."""
    levels = info.name.split(info.delimiter) if info.delimiter else [info.name]
    return (0 if levels[0].upper() == "INBOX" else 1, [level.casefold() for level in levels], info.name)
