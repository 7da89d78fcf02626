"""The send request (one email per record), the activity's defaults, and the response record.

Validation here (the field checks are in ``_send_checks``) is syntactic and cheap, so a bad record fails
before anything is opened: addresses, header text (no line breaks or control characters), ids, header
names, attachment shape, template syntax. Work that needs I/O or the rendered values (reading files,
decoding base64, rendering templates) happens in :func:`mailconnector.mime.compose.compose`, which also
re-checks everything it puts in a header.

Records often come from CSV, where every cell is a string, so: an empty string means "not given"; an
address list may be one string separated by commas (or semicolons); ``headers``, ``data``,
``attachments`` and ``template`` may be JSON text; ``references`` may be one space-separated string;
``priority`` is case-insensitive.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from mailconnector.errors import MailConnectorError, MessageError
from mailconnector.records._send_checks import (
    MAX_FILENAME_CHARS as MAX_FILENAME_CHARS,  # the composer checks the names it writes against it too
    PRIORITY_HEADERS,
    FieldProblem,
    address_items,
    bare_content_id,
    blank_to_none,
    check_address,
    check_content_type,
    check_filename,
    check_header_name,
    check_header_text,
    check_html_template,
    check_message_id,
    check_path,
    check_ref_id,
    check_text_template,
    guess_content_type,
    header_name,
    header_value,
    id_text,
    json_text,
    lower_text,
    none_to_empty_dict,
    none_to_empty_list,
    parse_content_type,
    reference_list,
)
from mailconnector.records._send_errors import Loc, describe, record_label

__all__ = [
    "AttachmentSpec",
    "ErrorInfo",
    "RecipientResult",
    "SendDefaults",
    "SendRequest",
    "SendResponse",
    "TemplateSpec",
    "apply_defaults",
    "check_header_name",
    "guess_content_type",
    "parse_content_type",
    "parse_send_request",
    "send_request_schema",
    "send_response_schema",
]


# --------------------------------------------------------------------------- annotated types
# Validators sit on the inner ``str`` so that None skips them; ``blank_to_none`` runs first.

_AddressStr = Annotated[str, AfterValidator(check_address)]
_AddressList = Annotated[
    list[_AddressStr],
    BeforeValidator(address_items, json_schema_input_type=list[str] | str | None),
    Field(description="Addresses (`addr`, `Name <addr>`, `\"Last, First\" <addr>`): a list, or one "
                      "string separated by commas."),
]
_HeaderName = Annotated[str, AfterValidator(header_name)]
_HeaderValue = Annotated[str, BeforeValidator(header_value), AfterValidator(check_header_text)]
_RefId = Annotated[str, AfterValidator(check_ref_id)]
_OptText = Annotated[str | None, BeforeValidator(blank_to_none)]
_OptAddress = Annotated[_AddressStr | None, BeforeValidator(blank_to_none)]
_OptHeaderText = Annotated[Annotated[str, AfterValidator(check_header_text)] | None,
                           BeforeValidator(blank_to_none)]
_OptPath = Annotated[Annotated[str, AfterValidator(check_path)] | None, BeforeValidator(blank_to_none)]
_OptFilename = Annotated[Annotated[str, AfterValidator(check_filename)] | None,
                         BeforeValidator(blank_to_none)]
_OptContentType = Annotated[Annotated[str, AfterValidator(check_content_type)] | None,
                            BeforeValidator(blank_to_none)]
_OptContentId = Annotated[Annotated[str, AfterValidator(bare_content_id)] | None, BeforeValidator(blank_to_none)]
_OptMessageId = Annotated[Annotated[str, AfterValidator(check_message_id)] | None,
                          BeforeValidator(blank_to_none)]
_OptRefId = Annotated[_RefId | None, BeforeValidator(blank_to_none)]
_OptTextTemplate = Annotated[Annotated[str, AfterValidator(check_text_template)] | None,
                             BeforeValidator(blank_to_none)]
_OptHtmlTemplate = Annotated[Annotated[str, AfterValidator(check_html_template)] | None,
                             BeforeValidator(blank_to_none)]
Priority = Literal["high", "normal", "low"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class AttachmentSpec(_Model):
    """One attachment: exactly one of ``content_base64`` and ``path``."""

    filename: _OptFilename = Field(
        default=None, description="Name shown to the recipient; default: the file name of `path`.")
    content_type: _OptContentType = Field(
        default=None, description="MIME type; guessed from the file name when absent.")
    content_base64: _OptText = Field(
        default=None, description="The content, base64-encoded (whitespace ignored).")
    path: _OptPath = Field(
        default=None, description="A file to attach; relative paths are relative to the project directory.")
    inline: bool = Field(default=False, description="An image shown in the HTML body (needs content_id).")
    content_id: _OptContentId = Field(
        default=None, description="Referenced from the HTML as `cid:<content_id>`; with or without <>.")

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.content_base64 is None and self.path is None:
            raise FieldProblem("give one of content_base64 or path (neither was given)")
        if self.content_base64 is not None and self.path is not None:
            raise FieldProblem("give only one of content_base64 or path (both were given)")
        if self.inline and not self.content_id:
            raise FieldProblem("is required when inline is true", field="content_id")
        if self.content_type is None:
            self.content_type = guess_content_type(self.filename or self.path)
        return self

    @property
    def display_name(self) -> str | None:
        """The filename to send: the given one, else the last part of ``path``."""
        if self.filename:
            return self.filename
        if self.path:
            return PurePath(self.path).name or None
        return None


class TemplateSpec(_Model):
    """Jinja templates (strings, or files for the bodies) rendered with the record's ``data``.

    A rendered field replaces the record's plain field of the same name. HTML is autoescaped.
    """

    subject: _OptTextTemplate = None
    text: _OptTextTemplate = None
    html: _OptHtmlTemplate = None
    text_file: _OptPath = Field(
        default=None, description="A UTF-8 file holding the text template (relative to the project).")
    html_file: _OptPath = Field(
        default=None, description="A UTF-8 file holding the HTML template (relative to the project).")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.text is not None and self.text_file is not None:
            raise FieldProblem("give only one of text and text_file", field="text_file")
        if self.html is not None and self.html_file is not None:
            raise FieldProblem("give only one of html and html_file", field="html_file")
        return self

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in type(self).model_fields)


class _MessageFields(_Model):
    """The fields an activity's settings may default (everything but ``id`` and ``message_id``)."""

    from_: _OptAddress = Field(default=None, alias="from", description="`addr` or `Name <addr>`.")
    to: _AddressList = Field(default_factory=list)
    cc: _AddressList = Field(default_factory=list)
    bcc: _AddressList = Field(default_factory=list)
    reply_to: _AddressList = Field(default_factory=list)
    subject: _OptHeaderText = Field(default=None, description="Any Unicode; no line breaks.")
    text: _OptText = Field(default=None, description="Plain-text body.")
    html: _OptText = Field(default=None, description="HTML body; with `text` -> multipart/alternative.")
    attachments: Annotated[list[AttachmentSpec], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list)
    headers: Annotated[dict[_HeaderName, _HeaderValue], BeforeValidator(none_to_empty_dict)] = Field(
        default_factory=dict, description="Extra headers, name -> value.")
    in_reply_to: _OptRefId = Field(
        default=None, description="The Message-ID this replies to.")
    references: Annotated[
        list[_RefId] | None, BeforeValidator(reference_list, json_schema_input_type=list[str] | str | None)
    ] = Field(
        default=None, description="Message-IDs of the thread: a list, or one string separated by spaces.")
    priority: Annotated[Priority | None, BeforeValidator(lower_text)] = None
    template: Annotated[TemplateSpec | None, BeforeValidator(json_text)] = None
    data: Annotated[dict[str, Any], BeforeValidator(none_to_empty_dict)] = Field(
        default_factory=dict, description="Variables for the templates.")

    @model_validator(mode="after")
    def _priority_headers(self) -> Self:
        if self.priority in ("high", "low"):
            for name in self.headers:
                if name.lower() in PRIORITY_HEADERS:
                    raise FieldProblem(f"conflicts with priority={self.priority!r}", field=f"headers.{name}")
        seen: set[str] = set()
        for i, spec in enumerate(self.attachments):
            if spec.content_id is not None:
                if spec.content_id in seen:
                    raise FieldProblem(f"{spec.content_id!r} is used by two attachments",
                                       field=f"attachments[{i}].content_id")
                seen.add(spec.content_id)
        return self


class SendDefaults(_MessageFields):
    """Activity-level settings: a default for every record field except ``id`` and ``message_id``.

    A shared ``message_id`` would make every record a duplicate of the first, and ``id`` names a record.
    """


class SendRequest(_MessageFields):
    """One email to send."""

    id: Annotated[str | None, BeforeValidator(id_text)] = Field(
        default=None, description="The caller's record id, echoed in the response.")
    message_id: _OptMessageId = Field(
        default=None, description="Generated when absent; the idempotency key of the send ledger.")


# --------------------------------------------------------------------------- defaults


def _given(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def _merged_template(record: SendRequest, defaults: SendDefaults) -> TemplateSpec | None:
    own = record.template
    base = defaults.template
    if base is None:
        return own
    picked: dict[str, Any] = {}
    for name, file_name in (("subject", None), ("text", "text_file"), ("html", "html_file")):
        keys = [name] if file_name is None else [name, file_name]
        if own is not None and any(getattr(own, k) is not None for k in keys):
            source = own
        elif _given(getattr(record, name)):
            continue  # the record's plain value beats the default's template
        else:
            source = base
        for key in keys:
            picked[key] = getattr(source, key)
    merged = TemplateSpec.model_construct(**picked)
    return None if merged.is_empty() else merged


def apply_defaults(record: SendRequest, defaults: SendDefaults | None) -> SendRequest:
    """Fill what the record does not give from the activity's settings; return a new record.

    The rule: a record value counts as given unless it is None, an empty string, an empty list or an
    empty dict. A given value replaces the default, lists included (a record's ``to`` replaces the
    default ``to``, it is not appended to). Two dicts merge instead, the record's keys winning:
    ``headers`` (names compared case-insensitively) and ``data`` (so settings can hold common template
    variables). Templates are merged per body: for each of subject, text and html the record's template
    wins, then the record's plain value, then the default's template, then the default's plain value.
    """
    if defaults is None:
        return record
    update: dict[str, Any] = {}
    for name in SendDefaults.model_fields:
        if name in ("headers", "data", "template"):
            continue
        if not _given(getattr(record, name)):
            default = getattr(defaults, name)
            if _given(default):
                update[name] = list(default) if isinstance(default, list) else default
    if defaults.headers:
        own = {k.lower() for k in record.headers}
        headers = {k: v for k, v in defaults.headers.items() if k.lower() not in own}
        headers.update(record.headers)
        update["headers"] = headers
    if defaults.data:
        update["data"] = {**defaults.data, **record.data}
    template = _merged_template(record, defaults)
    if template is not record.template:
        update["template"] = template
    return record.model_copy(update=update) if update else record


# --------------------------------------------------------------------------- responses


class RecipientResult(_Model):
    """The server's answer for one refused recipient."""

    address: str
    code: int
    text: str


class ErrorInfo(_Model):
    """Why a record failed, in the shape of ``MailConnectorError.to_dict``."""

    type: str
    message: str
    retryable: bool
    code: int | None = None
    field: str | None = None
    hint: str | None = None
    topic: str | None = Field(None, description="a stable name for the kind of problem (e.g. path-not-allowed), "
                              "for programs")

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, MailConnectorError):
            code = getattr(exc, "code", None)
            field = getattr(exc, "field", None)
            return cls(type=exc.kind, message=exc.message, retryable=exc.retryable,
                       code=code if isinstance(code, int) and code else None,
                       field=field if isinstance(field, str) else None, hint=exc.hint, topic=exc.topic)
        return cls(type=type(exc).__name__, message=str(exc) or type(exc).__name__, retryable=False)


class SendResponse(_Model):
    """What Send Email yields for each input record."""

    id: str | None = Field(default=None, description="The record's `id`, if it had one.")
    index: int = Field(description="0-based position of the record in the input.")
    message_id: str = Field(description="The Message-ID, with angle brackets; empty if never composed.")
    status: Literal["sent", "partial", "failed", "skipped_duplicate", "uncertain", "dry_run"] = Field(
        description="sent; partial (some recipients refused); failed; skipped_duplicate (already sent, or "
                    "being sent by another sender); uncertain (an earlier attempt may have delivered it: not "
                    "sent again until resolved in the send ledger); dry_run (written to eml_path, not sent).")
    accepted: list[str] = Field(default_factory=list)
    refused: list[RecipientResult] = Field(default_factory=list)
    error: ErrorInfo | None = None
    attempts: int = 0
    elapsed_ms: float = 0.0
    eml_path: str | None = Field(default=None, description="Where --dry-run wrote the message.")
    saved_to_sent: bool | None = Field(
        default=None, description="With save_to_sent, on a sent or partial message: whether its copy was put into "
        "the Sent folder (false: the message was sent all the same; the log says why the copy failed).")


def send_request_schema() -> dict[str, Any]:
    """JSON Schema of one input record, with field names as written in records (``from``)."""
    return SendRequest.model_json_schema(by_alias=True, mode="validation")


def send_response_schema() -> dict[str, Any]:
    return SendResponse.model_json_schema(by_alias=True, mode="serialization")


# --------------------------------------------------------------------------- parsing with good errors


def _allowed_fields(parent: Loc) -> list[str]:
    model: type[BaseModel] = SendRequest
    names = [p for p in parent if isinstance(p, str)]
    if names and names[0] == "attachments":
        model = AttachmentSpec
    elif names and names[0] == "template":
        model = TemplateSpec
    return [info.alias or name for name, info in model.model_fields.items()]


def parse_send_request(data: Mapping[str, Any], *, index: int) -> SendRequest:
    """Validate one raw record; raise MessageError naming the record and every bad field.

    The message reads ``record 3: to[1]: 'bob@@example' is not a valid address: ...`` (the record's
    ``id`` replaces the index when it has one). ``MessageError.field`` is the first bad field.
    """
    try:
        return SendRequest.model_validate(data)
    except ValidationError as exc:
        problems = [describe(e, _allowed_fields) for e in exc.errors(include_url=False)]
        label = record_label(data, index) if isinstance(data, Mapping) else f"record {index}"
        text = "; ".join(f"{f}: {m}" if f else m for f, m in problems)
        error = MessageError(f"{label}: {text}")
        error.field = (problems[0][0] or None) if problems else None
        raise error from None
