"""Attachment file names that are safe to create on any common file system.

A name comes from the sender, so it is hostile until proven otherwise: it may hold a path
(``../../.ssh/authorized_keys``, ``C:\\Windows\\x``), control characters, a Windows device name
(``NUL.txt`` cannot be opened on Windows), bidi overrides that disguise the extension, or be long
enough to fail with ENAMETOOLONG. The rules here keep the name readable and its extension intact.
"""

from __future__ import annotations

import mimetypes
import os
import re
import unicodedata
from pathlib import Path

__all__ = ["MAX_NAME_BYTES", "MAX_NAME_CHARS", "extension_for", "safe_filename", "unique_path"]

MAX_NAME_CHARS = 150
# File systems limit a name to 255 bytes; 200 leaves room for " (12345)" and a temporary suffix.
MAX_NAME_BYTES = 200

_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{n}" for p in ("COM", "LPT") for n in "123456789¹²³"]
)
# Characters Windows refuses in names, plus both path separators.
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
# C0 and C1 controls, DEL, and lone surrogates (no file system can store them); tabs and newlines
# are turned into spaces before this.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Bidi embeddings, overrides and isolates: they can make "invoice\u202efdp.exe" look like a PDF.
_BIDI = re.compile(r"[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")
_EXT = re.compile(r"(\.tar)?\.[A-Za-z0-9][A-Za-z0-9_+~-]{0,15}$")

# The types mail actually carries; a fixed table so names do not depend on the host's mime.types.
_EXTENSIONS: dict[str, str] = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "application/ics": ".ics",
    "text/csv": ".csv",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "text/xml": ".xml",
    "text/rtf": ".rtf",
    "text/enriched": ".txt",
    "text/markdown": ".md",
    "text/rfc822-headers": ".txt",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/svg+xml": ".svg",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
    "image/heic": ".heic",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "video/mp4": ".mp4",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/x-zip-compressed": ".zip",
    "application/gzip": ".gz",
    "application/x-gzip": ".gz",
    "application/json": ".json",
    "application/xml": ".xml",
    "application/rtf": ".rtf",
    "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "application/octet-stream": ".bin",
    "application/pgp-signature": ".asc",
    "application/pgp-encrypted": ".asc",
    "application/pgp-keys": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m",
}
# The interpreter's built-in table only (never the host's files), for everything else.
_BUILTIN_TYPES = mimetypes.MimeTypes(filenames=())


def extension_for(content_type: str | None) -> str:
    """A file extension (with its dot) for a MIME type; ``.bin`` when nothing fits."""
    ctype = (content_type or "").strip().lower()
    ext = _EXTENSIONS.get(ctype)
    if ext:
        return ext
    if ctype.startswith("multipart/"):
        return ".eml"
    guessed = _BUILTIN_TYPES.guess_extension(ctype, strict=False) if "/" in ctype else None
    return guessed or ".bin"


def _split_ext(name: str) -> tuple[str, str]:
    match = _EXT.search(name)
    if match is None or match.start() == 0:
        return name, ""
    return name[: match.start()], name[match.start() :]


def _is_reserved(stem: str) -> bool:
    # Windows matches device names on the part before the first dot, ignoring trailing spaces.
    return stem.split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def _fit(stem: str, ext: str, max_chars: int, max_bytes: int) -> tuple[str, str]:
    """Shorten the stem (never the extension) until the name fits in characters and UTF-8 bytes."""
    if len(ext) > max_chars // 2:
        ext = ""
    stem = stem[: max(1, max_chars - len(ext))]
    while len(stem) > 1 and len((stem + ext).encode("utf-8")) > max_bytes:
        over = len((stem + ext).encode("utf-8")) - max_bytes
        # At most 4 bytes a character: cut a quarter of the excess at once, at least one character.
        stem = stem[: max(1, len(stem) - max(1, over // 4))]
    return stem.rstrip(". ") or "attachment", ext


def safe_filename(name: str | None, content_type: str | None = None) -> str:
    """Turn a sender-given name into one that is safe to create in a directory.

    Keeps the last path component only, drops control and bidi characters, replaces characters that
    Windows forbids with ``_``, trims leading dots and trailing dots or spaces, defuses Windows device
    names (``NUL.txt`` -> ``_NUL.txt``), normalises to NFC and limits the name to 150 characters
    (and 200 UTF-8 bytes) keeping the extension. An empty result becomes ``attachment`` plus an
    extension guessed from ``content_type``.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    text = _BIDI.sub("", _CONTROLS.sub("", text))
    # Only the last component of any path, whichever separator it used.
    text = re.split(r"[/\\]", text)[-1]
    text = _FORBIDDEN.sub("_", text)
    text = _SPACES.sub(" ", text).strip(" ").lstrip(".").rstrip(". ")
    if not text.strip("_ ."):
        # Nothing of the sender's name is left worth keeping.
        return "attachment" + extension_for(content_type)
    stem, ext = _split_ext(text)
    if _is_reserved(stem):
        stem = "_" + stem
    stem, ext = _fit(stem, ext, MAX_NAME_CHARS, MAX_NAME_BYTES)
    return stem + ext


def unique_path(directory: str | os.PathLike[str], name: str) -> Path:
    """``directory / name``, or ``name (1).ext``, ``name (2).ext``... if that name is already taken.

    ``name`` should come from :func:`safe_filename`. The check is a plain existence test, so the caller
    should create the file exclusively (mode ``"xb"``) and ask again if it lost a race.
    """
    folder = Path(directory)
    candidate = folder / name
    if not os.path.lexists(candidate):
        return candidate
    stem, ext = _split_ext(name)
    number = 1
    while True:
        suffix = f" ({number})"
        short_stem, short_ext = _fit(stem, ext, MAX_NAME_CHARS - len(suffix), MAX_NAME_BYTES - len(suffix))
        candidate = folder / f"{short_stem}{suffix}{short_ext}"
        if not os.path.lexists(candidate):
            return candidate
        number += 1
