"""Send record -> ``EmailMessage``: the MIME tree, the headers, and the guard against header injection.

The tree, from the outside in::

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
(written here, see "the tree") and Unicode attachment names as RFC 2231 parameters (by the stdlib).
Internationalised domains alone do not need SMTPUTF8: they are sent in their IDNA (``xn--``) form.

Every value that reaches a header is checked here again for line breaks and control characters, because
templates produce new values after the record was validated and a record may be built without validation.
A record naming a file (an attachment's ``path``, a template's ``text_file`` / ``html_file``) could read
any file this process can read; with a :class:`PathPolicy` (the Send Email activity always gives one) a
path must resolve, after symlinks, inside an allowed directory or be one of the allowed files.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message, MIMEPart
from email.policy import Policy
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path

from mailconnector.errors import MessageError
from mailconnector.mime._addresses import (
    AddressError,
    ParsedAddress,
    check_header_text,
    looks_secret,
    normalize_msg_id,
    parse_address,
    parse_msg_id_list,
    short,
    split_addresses,
)
from mailconnector.mime._header_fields import FOLD_AT, MAX_LINE_OCTETS, put_addresses, put_text
from mailconnector.mime._templates import TemplateProblem, render_template
from mailconnector.records.send import (
    MAX_FILENAME_CHARS,
    AttachmentSpec,
    SendRequest,
    check_header_name,
    guess_content_type,
    parse_content_type,
)

__all__ = ["ComposedMessage", "PathPolicy", "compose"]

# Attachment parts are built under a 7-bit policy so set_content never picks 8bit. Rendering never
# refolds values we stored pre-formatted (see "the tree" below).
_PART_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")
_SMTP_POLICY = policy.SMTP.clone(refold_source="none")
_SMTPUTF8_POLICY = policy.SMTPUTF8.clone(refold_source="none")
_ASCII_BYTES = bytes(range(128))
_NEWLINES = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile("[^\t\n\x0c -~]")  # in ASCII text: what 7bit should not carry
_WHITESPACE = re.compile(r"\s+")
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
            hint="move the file into one of them, or allow its directory: --attachment-dir DIR on the command "
                 "line, attachment_dirs: [DIR] on the send-email activity",
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
        text = payload.replace("\n", "\r\n") if "\r" not in payload else _NEWLINES.sub("\r\n", payload)
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
    path = _resolve(name, base_dir)
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


# --------------------------------------------------------------------------- header values


def _address(text: str, field: str) -> ParsedAddress:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise MessageError(str(exc), field=field) from None


def _addresses(items: Sequence[str] | str, field: str) -> list[ParsedAddress]:
    if isinstance(items, str):  # a request built without validation may still hold the raw string
        try:
            items = split_addresses(items)
        except AddressError as exc:
            raise MessageError(str(exc), field=field) from None
    return [_address(item, f"{field}[{i}]") for i, item in enumerate(items)]


def _header_text(value: str, field: str) -> str:
    try:
        return check_header_text(value)
    except AddressError as exc:
        raise MessageError(str(exc), field=field) from None


def _msg_id(value: str, field: str, *, require_at: bool) -> str:
    try:
        return normalize_msg_id(value, require_at=require_at)
    except AddressError as exc:
        raise MessageError(str(exc), field=field) from None


def _references(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        try:
            return parse_msg_id_list(value)
        except AddressError as exc:
            raise MessageError(str(exc), field="references") from None
    return [_msg_id(item, f"references[{i}]", require_at=False) for i, item in enumerate(value)]


def _custom_headers(request: SendRequest) -> list[tuple[str, str]]:
    out = []
    for name, value in request.headers.items():
        field = f"headers.{name}"
        if not isinstance(name, str) or not isinstance(value, str):
            raise MessageError("header names and values must be text", field=field)
        try:
            check_header_name(name, priority=request.priority)
        except ValueError as exc:
            raise MessageError(str(exc), field=field) from None
        try:
            out.append((name, check_header_text(value)))
        except AddressError as exc:
            message = str(exc).replace(short(value), "the value") if looks_secret(name) else str(exc)
            raise MessageError(message, field=field) from None
    return out


# --------------------------------------------------------------------------- attachments


def _resolve(name: str, base_dir: Path | None) -> Path:
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return path


def _attachment_bytes(spec: AttachmentSpec, index: int, base_dir: Path | None,
                      paths: PathPolicy | None = None) -> bytes:
    if spec.content_base64 is not None:
        field = f"attachments[{index}].content_base64"
        compact = _WHITESPACE.sub("", spec.content_base64)
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MessageError(f"is not valid base64: {exc}", field=field) from None
    field = f"attachments[{index}].path"
    if spec.path is None:
        raise MessageError("give one of content_base64 or path", field=f"attachments[{index}]")
    if "\x00" in spec.path:
        raise MessageError(f"{short(spec.path)} contains a NUL character", field=field)
    path = _resolve(spec.path, base_dir)
    if paths is not None:
        paths.check(path, field)
    try:
        if not path.is_file():
            if not path.exists():
                raise MessageError(f"file not found: {short(str(path))}", field=field)
            # Devices and FIFOs could block or never end; directories cannot be attached.
            raise MessageError(f"{short(str(path))} is not a regular file", field=field)
        return path.read_bytes()
    except OSError as exc:
        raise MessageError(f"{short(str(path))} cannot be read: {exc.strerror}", field=field) from None


def _filename(spec: AttachmentSpec, index: int) -> str | None:
    name = spec.display_name
    if name is None:
        return None
    field = f"attachments[{index}].filename" if spec.filename else f"attachments[{index}].path"
    _header_text(name, field)
    if len(name) > MAX_FILENAME_CHARS:
        raise MessageError(
            f"is {len(name)} characters long; at most {MAX_FILENAME_CHARS} are allowed", field=field
        )
    if spec.filename is not None and ("/" in name or "\\" in name):
        raise MessageError(f"{short(name)} must be a bare file name, without directories", field=field)
    return name


def _seven_bit_message(data: bytes) -> str | None:
    """An embedded message as CRLF text if it may travel as 7bit (RFC 2046 forbids base64 there)."""
    if not data.isascii() or b"\x00" in data:
        return None
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if any(len(line) > MAX_LINE_OCTETS for line in lines):
        return None
    return b"\r\n".join(lines).decode("ascii")


def _attachment_part(spec: AttachmentSpec, index: int, base_dir: Path | None, *, inline: bool,
                     paths: PathPolicy | None = None) -> MIMEPart:
    name = _filename(spec, index)
    content_id = None
    if spec.content_id is not None:
        content_id = _msg_id(spec.content_id, f"attachments[{index}].content_id", require_at=False)
    content_type = spec.content_type or guess_content_type(name or spec.path)
    try:
        maintype, subtype, params = parse_content_type(content_type)
    except ValueError as exc:
        raise MessageError(str(exc), field=f"attachments[{index}].content_type") from None
    data = _attachment_bytes(spec, index, base_dir, paths)
    disposition = "inline" if inline else "attachment"
    part = _new()
    if maintype == "message":
        text = _seven_bit_message(data)
        if text is not None:
            part["Content-Type"] = f"{maintype}/{subtype}"
            for key, value in params.items():
                part.set_param(key, value)
            part["Content-Transfer-Encoding"] = "7bit"
            part["Content-Disposition"] = disposition
            if name is not None:
                part.set_param("filename", name, header="Content-Disposition")
            if content_id is not None:
                part["Content-ID"] = content_id
            part.set_payload(text)
            return part
        # Not 7-bit clean: carry it as opaque bytes rather than break the message/* encoding rules.
        maintype, subtype, params = "application", "octet-stream", {}
    # The headers come from set_content (RFC 2231 names, parameters); the body is encoded here, the same
    # 76-column base64 as set_content's, at a fraction of its per-line Python loop (the hot spot of bulk
    # sending with attachments).
    part.set_content(
        b"",
        maintype,
        subtype,
        disposition=disposition,
        filename=name,
        cid=content_id,
        params=params or None,
    )
    part.set_payload(_base64_body(data))
    return part


def _base64_body(data: bytes) -> str:
    """Base64 in lines of 76 characters, each ending in a newline (as ``base64.encodebytes``)."""
    encoded = binascii.b2a_base64(data, newline=False)
    full = len(encoded) // 76
    # One C call splits the full lines. A Struct of its own, not struct.unpack(): the module-level
    # functions cache every format they see, and this one is as long as the attachment is big.
    lines = list(struct.Struct("76s" * full).unpack(encoded[: full * 76])) if full else []
    if len(encoded) % 76:
        lines.append(encoded[full * 76:])
    del encoded
    if not lines:
        return ""
    lines.append(b"")
    joined = b"\n".join(lines)
    del lines  # before the copy into a str: a 1 MB attachment then peaks at ~3 MB here, not ~5 MB
    return joined.decode("ascii")


# --------------------------------------------------------------------------- the tree
# Speed: composing is on the hot path of bulk sending, and the header registry of policy.default costs
# more than everything else in a message (a plain stdlib composition runs ~300 messages/s here). So the
# headers we own are formatted here and stored with set_raw(): plain ASCII folded at spaces, addresses
# folded between tokens, Unicode subjects and display names as RFC 2047 base64 words. Only custom headers
# with non-ASCII values and the attachment parts (RFC 2231 file names) go through the header registry.
# Rendering uses refold_source="none", so pre-formatted values are written as they are (we keep them
# within the line limits) and header objects fold themselves.


def _body(content: str) -> tuple[str, str]:
    """(payload, Content-Transfer-Encoding) for a text body, always 7-bit clean, ending in a newline."""
    if "\r" in content:
        content = _NEWLINES.sub("\n", content)
    if not content.endswith("\n"):
        content += "\n"
    if (
        content.isascii()
        and not _CONTROL.search(content)
        and max(map(len, content.split("\n"))) <= MAX_LINE_OCTETS
    ):
        return content, "7bit"
    data = content.encode("utf-8")
    high = len(data.translate(None, _ASCII_BYTES))
    # Quoted-printable triples each non-ASCII byte; base64 costs a third of everything.
    if high * 6 > len(data):
        return base64.encodebytes(data).decode("ascii"), "base64"
    return binascii.b2a_qp(data, istext=True).decode("ascii"), "quoted-printable"


def _text_part(target: MIMEPart, content: str, subtype: str) -> MIMEPart:
    payload, cte = _body(content)
    target.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    target.set_raw("Content-Transfer-Encoding", cte)
    target.set_payload(payload)
    return target


def _multipart(target: MIMEPart, subtype: str, children: Iterable[MIMEPart], params: str = "") -> MIMEPart:
    # A random boundary cannot occur in the content by chance, so the generator need not search for it.
    boundary = f"=_{secrets.token_hex(16)}"
    target.set_raw("Content-Type", f'multipart/{subtype};{params}\n boundary="{boundary}"')
    for child in children:
        target.attach(child)
    return target


def _new() -> MIMEPart:
    return MIMEPart(policy=_PART_POLICY)


def _fill_body(
    root: EmailMessage,
    text: str | None,
    html: str | None,
    inline: list[MIMEPart],
    regular: list[MIMEPart],
) -> None:
    """Put the body tree into ``root`` (which already carries the envelope headers)."""
    if html is None and inline:
        # Nothing can reference them; send them along, still marked inline with their Content-ID.
        regular = inline + regular
        inline = []

    def html_node(target: MIMEPart) -> MIMEPart:
        if not inline:
            return _text_part(target, html or "", "html")
        return _multipart(target, "related", [_text_part(_new(), html or "", "html"), *inline],
                          ' type="text/html";')

    def body_node(target: MIMEPart) -> MIMEPart:
        if text is not None and html is not None:
            return _multipart(target, "alternative", [_text_part(_new(), text, "plain"), html_node(_new())])
        if html is not None:
            return html_node(target)
        return _text_part(target, text or "", "plain")

    root.set_raw("MIME-Version", "1.0")
    if not regular:
        body_node(root)
        return
    body = [body_node(_new())] if text is not None or html is not None else []
    _multipart(root, "mixed", [*body, *regular])


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
    content = _content(request, base_dir, paths)

    sender_text = request.from_ or default_from
    if not sender_text:
        raise MessageError(
            "no sender: give 'from' in the record or the activity settings, or the connection's from_address",
            field="from",
        )
    sender = _address(sender_text, "from")
    to = _addresses(request.to, "to")
    cc = _addresses(request.cc, "cc")
    bcc = _addresses(request.bcc, "bcc")
    reply_to = _addresses(request.reply_to, "reply_to")
    if not (to or cc or bcc):
        raise MessageError("at least one recipient is required in to, cc or bcc", field="to")

    subject = None if content.subject is None else _header_text(content.subject, content.subject_field)
    custom = _custom_headers(request)
    if request.message_id:
        message_id = _msg_id(request.message_id, "message_id", require_at=True)
    else:
        message_id = make_msgid(domain=sender.ascii_domain)
    in_reply_to = None if not request.in_reply_to else _msg_id(request.in_reply_to, "in_reply_to",
                                                                require_at=False)
    references = _references(request.references) if request.references else []

    inline_parts: list[MIMEPart] = []
    regular_parts: list[MIMEPart] = []
    for index, spec in enumerate(request.attachments):
        if spec.inline:
            inline_parts.append(_attachment_part(spec, index, base_dir, inline=True, paths=paths))
        else:
            regular_parts.append(_attachment_part(spec, index, base_dir, inline=False, paths=paths))

    needs_smtputf8 = any(a.smtputf8 for a in (sender, *to, *cc, *bcc, *reply_to))
    msg = EmailMessage(policy=_SMTPUTF8_POLICY if needs_smtputf8 else _SMTP_POLICY)
    put_addresses(msg, "From", [sender])
    if to:
        put_addresses(msg, "To", to)
    if cc:
        put_addresses(msg, "Cc", cc)
    if reply_to:
        put_addresses(msg, "Reply-To", reply_to)
    if subject is not None:
        put_text(msg, "Subject", subject, unstructured=True)
    msg.set_raw("Date", format_datetime(datetime.now().astimezone()))
    msg.set_raw("Message-ID", message_id)  # ids are never folded: a fold inside one breaks threading
    if in_reply_to:
        msg.set_raw("In-Reply-To", in_reply_to)
    if references:
        joined = " ".join(references)
        msg.set_raw("References", joined if len(joined) + 12 <= FOLD_AT else "\n ".join(references))
    for name, value in _PRIORITY_HEADERS.get(request.priority or "", ()):
        msg.set_raw(name, value)
    for name, value in custom:
        try:
            put_text(msg, name, value)
        except (ValueError, TypeError, IndexError) as exc:
            raise MessageError(f"cannot be used as a header value: {exc}", field=f"headers.{name}") from None

    _fill_body(msg, content.text, content.html, inline_parts, regular_parts)

    recipients: list[str] = []
    seen: set[str] = set()
    for parsed in (*to, *cc, *bcc):
        if parsed.addr_spec not in seen:
            seen.add(parsed.addr_spec)
            recipients.append(parsed.addr_spec)
    return ComposedMessage(
        message=msg,
        message_id=message_id,
        envelope_from=sender.addr_spec,
        recipients=recipients,
        needs_smtputf8=needs_smtputf8,
    )
