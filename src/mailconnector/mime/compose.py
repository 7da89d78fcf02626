"""Send record -> ``EmailMessage``: the MIME tree, the headers, and the guard against header injection.

The tree, from the outside in (the parts are built in ``_compose_parts``)::

    multipart/mixed                      only when there are regular attachments
      multipart/alternative              only when there are both text and HTML
        text/plain
        multipart/related                only when inline images exist (type="text/html")
          text/html
          image/...                      Content-ID, disposition inline
      application/pdf ...                the attachments

Bodies are always encoded 7-bit clean (quoted-printable or base64 when they are not plain ASCII with short
lines), so a message never depends on the server's 8BITMIME. Only headers may need SMTPUTF8: when an
address has a non-ASCII local part (``needs_smtputf8``), the message renders with ``policy.SMTPUTF8``;
otherwise with ``policy.SMTP``. Either way Unicode subjects and display names go as RFC 2047 encoded words
(written here, see "the headers") and Unicode attachment names as RFC 2231 parameters (by the stdlib).
Internationalised domains alone do not need SMTPUTF8: they are sent in their IDNA (``xn--``) form.

Every value that reaches a header is checked again (``_compose_checks``) for line breaks and control
characters, because templates produce new values after the record was validated and a record may be built
without validation. A record naming a file (an attachment's ``path``, a template's ``text_file`` /
``html_file``) could read any file this process can read; with a :class:`PathPolicy` (the Send Email
activity always gives one) a path must resolve, after symlinks, inside an allowed directory or be one of
the allowed files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.policy import Policy
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path

from mailconnector.errors import MessageError
from mailconnector.mime._addresses import ParsedAddress, short
from mailconnector.mime._compose_checks import address, address_list, custom_headers, header_text, msg_id, references
from mailconnector.mime._compose_parts import NEWLINES, attachment_parts, fill_body, resolve_path
from mailconnector.mime._header_fields import FOLD_AT, put_addresses, put_text
from mailconnector.mime._templates import TemplateProblem, render_template
from mailconnector.records.send import SendRequest

__all__ = ["ComposedMessage", "PathPolicy", "compose"]

# Rendering never refolds values we stored pre-formatted (see "the headers" below).
_SMTP_POLICY = policy.SMTP.clone(refold_source="none")
_SMTPUTF8_POLICY = policy.SMTPUTF8.clone(refold_source="none")
_PRIORITY_HEADERS = {
    "high": (("X-Priority", "1 (Highest)"), ("Importance", "high")),
    "low": (("X-Priority", "5 (Lowest)"), ("Importance", "low")),
}


@dataclass(frozen=True)
class PathPolicy:
    """Which files a record may read: those inside ``dirs`` (after symlinks) and the explicit ``files``.

    Records come from files, queues and other systems; without this, ``{"path": "/etc/shadow"}`` or a
    symlink in the project pointing out of it would mail any file the process can read.
    """

    dirs: tuple[Path, ...]
    files: frozenset[Path] = frozenset()

    @classmethod
    def of(cls, dirs: Iterable[Path], files: Iterable[Path] = ()) -> PathPolicy:
        return cls(tuple(_real(d) for d in dirs), frozenset(_real(f) for f in files))

    def check(self, path: Path, field: str) -> None:
        """Raise MessageError naming ``field`` unless ``path`` may be read (checked before it is opened,
        so a refused path does not tell whether the file exists)."""
        real = _real(path)
        if real in self.files or any(real.is_relative_to(d) for d in self.dirs):
            return
        allowed = ", ".join(str(d) for d in self.dirs) or "none"
        raise MessageError(
            f"{short(str(path))} is outside the directories attachments and templates may be read from "
            f"({allowed})",
            field=field,
            topic="path-not-allowed",
            hint="move the file into one of them, or allow its directory: attachment_dirs: [DIR] on the "
                 "send-email activity",
        )


def _real(path: Path) -> Path:
    try:
        return Path(path).resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop: resolves to nothing allowed
        return Path("/nonexistent-symlink-loop")


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    """A message ready for ``MAIL FROM`` / ``RCPT TO`` / ``DATA``."""

    message: EmailMessage
    message_id: str
    envelope_from: str
    recipients: list[str]
    needs_smtputf8: bool

    def as_bytes(self) -> bytes:
        """The bytes that go after DATA (CRLF line ends; dot-stuffing is the SMTP layer's job).

        Equal to ``message.as_bytes(policy=...)`` with the matching policy; a direct writer does the
        common shapes several times faster, and anything it does not recognise goes to the stdlib.
        """
        chosen = _SMTPUTF8_POLICY if self.needs_smtputf8 else _SMTP_POLICY
        try:
            try:
                out: list[bytes] = []
                _write(self.message, chosen, out)
                return b"".join(out)
            except _Unusual:
                return self.message.as_bytes(policy=chosen)
        except MessageError:
            raise
        except Exception as exc:  # the stdlib's folding can fail on odd input; that is the record's fault
            raise MessageError(f"the message cannot be rendered: {exc}") from exc


class _Unusual(Exception):
    """A shape the direct writer leaves to the standard library's generator."""


_BOUNDARY_RE = re.compile(r'boundary="([^"\\]+)"')


def _write(part: Message, pol: Policy, out: list[bytes]) -> None:
    """Serialise like ``BytesGenerator`` for the trees compose() builds (no preamble, preset boundaries)."""
    content_type = None
    for name, value in part.raw_items():
        out.append(pol.fold_binary(name, value))
        if isinstance(value, str) and name.lower() == "content-type":
            content_type = value
    out.append(b"\r\n")
    # get_payload() would parse Content-Transfer-Encoding through the header registry on every call.
    payload: object = part._payload  # type: ignore[attr-defined]
    if isinstance(payload, list):
        match = None if content_type is None else _BOUNDARY_RE.search(content_type)
        if match is None or part.preamble is not None or part.epilogue is not None:
            raise _Unusual
        boundary = match.group(1).encode("ascii")
        for i, child in enumerate(payload):
            out.append(b"--" + boundary + b"\r\n" if i == 0 else b"\r\n--" + boundary + b"\r\n")
            _write(child, pol, out)
        out.append(b"\r\n--" + boundary + b"--\r\n")
    elif isinstance(payload, str):
        if not payload.isascii():
            raise _Unusual
        text = payload.replace("\n", "\r\n") if "\r" not in payload else NEWLINES.sub("\r\n", payload)
        out.append(text.encode("ascii"))
    elif payload is not None:
        raise _Unusual


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class _Content:
    subject: str | None
    text: str | None
    html: str | None
    subject_field: str


@lru_cache(maxsize=64)
def _read_template_file(path: str, mtime_ns: int, size: int) -> str:
    """Cached per (path, mtime, size): an edited file is re-read, an unchanged one is not."""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _template_file(name: str, base_dir: Path | None, field: str, paths: PathPolicy | None) -> str:
    path = resolve_path(name, base_dir)
    if paths is not None:
        paths.check(path, field)
    try:
        st = path.stat()
        if not path.is_file():
            raise MessageError(f"{short(str(path))} is not a regular file", field=field)
        return _read_template_file(str(path), st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        raise MessageError(f"file not found: {short(str(path))}", field=field) from None
    except UnicodeDecodeError as exc:
        raise MessageError(f"{short(str(path))} is not UTF-8 text: {exc.reason}", field=field) from None
    except OSError as exc:
        raise MessageError(f"{short(str(path))} cannot be read: {exc.strerror}", field=field) from None


def _render(source: str, request: SendRequest, *, html: bool, field: str) -> str:
    try:
        return render_template(source, request.data, html=html)
    except TemplateProblem as exc:
        raise MessageError(str(exc), field=field) from None


def _content(request: SendRequest, base_dir: Path | None, paths: PathPolicy | None) -> _Content:
    spec = request.template
    if spec is None:
        return _Content(request.subject, request.text, request.html, "subject")
    subject, text, html, subject_field = request.subject, request.text, request.html, "subject"
    if spec.subject is not None:
        subject = _render(spec.subject, request, html=False, field="template.subject")
        subject_field = "template.subject"
    if spec.text is not None:
        text = _render(spec.text, request, html=False, field="template.text")
    elif spec.text_file is not None:
        source = _template_file(spec.text_file, base_dir, "template.text_file", paths)
        text = _render(source, request, html=False, field="template.text_file")
    if spec.html is not None:
        html = _render(spec.html, request, html=True, field="template.html")
    elif spec.html_file is not None:
        source = _template_file(spec.html_file, base_dir, "template.html_file", paths)
        html = _render(source, request, html=True, field="template.html_file")
    return _Content(subject, text, html, subject_field)


# --------------------------------------------------------------------------- the headers
# Speed: composing is on the hot path of bulk sending, and the header registry of policy.default costs
# more than everything else in a message (a plain stdlib composition runs ~300 messages/s here). So the
# headers we own are formatted here and stored with set_raw(): plain ASCII folded at spaces, addresses
# folded between tokens, Unicode subjects and display names as RFC 2047 base64 words. Only custom headers
# with non-ASCII values and the attachment parts (RFC 2231 file names) go through the header registry.
# Rendering uses refold_source="none", so pre-formatted values are written as they are (we keep them
# within the line limits) and header objects fold themselves.


@dataclass(frozen=True, slots=True)
class _Parties:
    """The sender and recipients, parsed; every recipient list may be empty, but not all three."""

    sender: ParsedAddress
    to: list[ParsedAddress]
    cc: list[ParsedAddress]
    bcc: list[ParsedAddress]
    reply_to: list[ParsedAddress]

    @property
    def needs_smtputf8(self) -> bool:
        return any(a.smtputf8 for a in (self.sender, *self.to, *self.cc, *self.bcc, *self.reply_to))

    def envelope_recipients(self) -> list[str]:
        """To, Cc and Bcc in that order, each address once (RCPT TO twice would deliver twice)."""
        recipients: list[str] = []
        seen: set[str] = set()
        for parsed in (*self.to, *self.cc, *self.bcc):
            if parsed.addr_spec not in seen:
                seen.add(parsed.addr_spec)
                recipients.append(parsed.addr_spec)
        return recipients


@dataclass(frozen=True, slots=True)
class _HeaderValues:
    """The checked values of every other header the message carries."""

    subject: str | None
    custom: list[tuple[str, str]]
    message_id: str
    in_reply_to: str | None
    references: list[str]


def _parties(request: SendRequest, default_from: str | None) -> _Parties:
    sender_text = request.from_ or default_from
    if not sender_text:
        raise MessageError(
            "no sender: give 'from' in the record or the activity settings, or the connection's from_address",
            field="from",
        )
    parties = _Parties(
        sender=address(sender_text, "from"),
        to=address_list(request.to, "to"),
        cc=address_list(request.cc, "cc"),
        bcc=address_list(request.bcc, "bcc"),
        reply_to=address_list(request.reply_to, "reply_to"),
    )
    if not (parties.to or parties.cc or parties.bcc):
        raise MessageError("at least one recipient is required in to, cc or bcc", field="to")
    return parties


def _header_values(request: SendRequest, content: _Content, sender: ParsedAddress) -> _HeaderValues:
    subject = None if content.subject is None else header_text(content.subject, content.subject_field)
    custom = custom_headers(request)
    if request.message_id:
        message_id = msg_id(request.message_id, "message_id", require_at=True)
    else:
        message_id = make_msgid(domain=sender.ascii_domain)
    in_reply_to = None if not request.in_reply_to else msg_id(request.in_reply_to, "in_reply_to",
                                                               require_at=False)
    refs = references(request.references) if request.references else []
    return _HeaderValues(subject, custom, message_id, in_reply_to, refs)


def _put_headers(msg: EmailMessage, parties: _Parties, values: _HeaderValues, priority: str | None) -> None:
    """Write the headers in their fixed order; Bcc is never written (it travels in the envelope only)."""
    put_addresses(msg, "From", [parties.sender])
    if parties.to:
        put_addresses(msg, "To", parties.to)
    if parties.cc:
        put_addresses(msg, "Cc", parties.cc)
    if parties.reply_to:
        put_addresses(msg, "Reply-To", parties.reply_to)
    if values.subject is not None:
        put_text(msg, "Subject", values.subject, unstructured=True)
    msg.set_raw("Date", format_datetime(datetime.now().astimezone()))
    msg.set_raw("Message-ID", values.message_id)  # ids are never folded: a fold inside one breaks threading
    if values.in_reply_to:
        msg.set_raw("In-Reply-To", values.in_reply_to)
    if values.references:
        joined = " ".join(values.references)
        msg.set_raw("References", joined if len(joined) + 12 <= FOLD_AT else "\n ".join(values.references))
    for name, value in _PRIORITY_HEADERS.get(priority or "", ()):
        msg.set_raw(name, value)
    for name, value in values.custom:
        try:
            put_text(msg, name, value)
        except (ValueError, TypeError, IndexError) as exc:
            raise MessageError(f"cannot be used as a header value: {exc}", field=f"headers.{name}") from None


# --------------------------------------------------------------------------- compose


def compose(
    request: SendRequest,
    *,
    default_from: str | None = None,
    base_dir: Path | None = None,
    paths: PathPolicy | None = None,
) -> ComposedMessage:
    """Build the message for one record; raise MessageError naming the field at fault.

    ``default_from`` is the connection's sender, used when the record has no ``from``. ``base_dir``
    anchors relative attachment and template paths (default: the current directory). ``paths``, when
    given, is where those files may be read from (see :class:`PathPolicy`).
    """
    # Every check runs before the message is built, in the order of the fields a caller reads.
    content = _content(request, base_dir, paths)
    parties = _parties(request, default_from)
    values = _header_values(request, content, parties.sender)
    inline_parts, regular_parts = attachment_parts(request.attachments, base_dir, paths)

    needs_smtputf8 = parties.needs_smtputf8
    msg = EmailMessage(policy=_SMTPUTF8_POLICY if needs_smtputf8 else _SMTP_POLICY)
    _put_headers(msg, parties, values, request.priority)
    fill_body(msg, content.text, content.html, inline_parts, regular_parts)
    return ComposedMessage(
        message=msg,
        message_id=values.message_id,
        envelope_from=parties.sender.addr_spec,
        recipients=parties.envelope_recipients(),
        needs_smtputf8=needs_smtputf8,
    )
