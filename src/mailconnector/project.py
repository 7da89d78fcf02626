"""The project file ``mailconnector.yaml``: connections, activities and operations (SPEC section 5).

Connections are validated when first used, so a broken entry (say, an unset ``${env:}`` variable) only
stops the commands that need it; every error names the file, the line and the field.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from ._validation import config_error_from_validation
from ._yaml import LocatedYaml, load_yaml
from .connection import Connection
from .errors import ConfigError
from .secrets import SecretReferenceError, resolve_in_url
from .state import STATE_ENV, StateStore, Store

if TYPE_CHECKING:
    from .activities.read import ReadSettings
    from .activities.send import SendSettings

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "PROJECT_ENV",
    "PROJECT_FILE",
    "FileActivity",
    "OperationConfig",
    "Project",
    "ReadActivity",
    "SendActivity",
    "Transformation",
    "find_project_file",
    "project_schema",
]

PROJECT_FILE = "mailconnector.yaml"
PROJECT_ENV = "MAILCONNECTOR_PROJECT"
_TOP_LEVEL = {"connections", "activities", "operations", "settings"}
# Top-level keys starting with x- are ignored: a place for YAML anchors that entries reuse (as in Compose files).
_EXTENSION_PREFIX = "x-"


class FileActivity(BaseModel):
    """A file endpoint: JSON / JSON Lines / CSV records, a directory of .eml files, or stdin/stdout (``-``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["file"]
    path: str = Field(description="a file, a directory (format eml), or - for stdin/stdout")
    format: Literal["json", "jsonl", "csv", "eml"] | None = Field(
        None, description="default: from the file name (a directory means eml)")
    append: bool = Field(True, description="as a target: add each run's records to the file (the default), or "
                         "replace the file at each run (false; not for read-email sources, whose emails an "
                         "earlier run already acknowledged)")
    encoding: str = Field("utf-8", description="as a source: the file's text encoding (cp1252 for a CSV saved by "
                          "Excel on Windows, latin-1, utf-16, ...)")
    delimiter: str | None = Field(None, description="as a CSV source: what separates the columns: one character, "
                                  "or comma, semicolon, tab or pipe (default: detected from the header row)")

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        from .activities.files import check_encoding

        return check_encoding(v)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str | None) -> str | None:
        from .activities.files import parse_delimiter

        return None if v is None else parse_delimiter(v)


class SendActivity(BaseModel):
    model_config = ConfigDict(extra="allow")  # the remaining keys are record defaults (to, subject, ...)

    type: Literal["send-email"]
    connection: str


class ReadActivity(BaseModel):
    model_config = ConfigDict(extra="allow")  # the remaining keys are ReadSettings

    type: Literal["read-email"]
    connection: str


ActivityConfig = Annotated[FileActivity | SendActivity | ReadActivity, Field(discriminator="type")]


_CALLABLE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class Transformation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callable: str | None = Field(None, description="module:function; record in, record / list / None out")
    mapping: dict[str, str] | None = Field(None, description="output field -> Jinja expression over `record`")
    keep: bool = Field(False, description="with mapping: start from the source record, not an empty one")

    @model_validator(mode="after")
    def _one(self) -> Transformation:
        if (self.callable is None) == (self.mapping is None):
            raise ValueError("give exactly one of callable or mapping")
        if self.callable is not None and not re.fullmatch(_CALLABLE, self.callable):
            raise ValueError(f"{self.callable!r} is not module:function")
        return self


def _callable_shorthand(schema: dict[str, Any]) -> None:
    """The schema also accepts what the validator accepts: ``transformation: module:function``."""
    schema["anyOf"].insert(0, {"type": "string", "pattern": _CALLABLE, "description": "module:function"})


def _one_or_many(schema: dict[str, Any]) -> None:
    """The schema also accepts one operation name instead of a list."""
    items = {k: schema.pop(k) for k in ("type", "items")}
    schema["anyOf"] = [{"type": "string"}, items]


class Every(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: float = Field(gt=0, le=31 * 86400, description="seconds from the end of one run to the start of the next")


class OperationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="a read-email or file activity")
    target: str = Field(description="a send-email or file activity")
    transformation: Transformation | None = Field(
        None, description="module:function, or {callable: ...} / {mapping: ...}",
        json_schema_extra=_callable_shorthand)
    on_error: Literal["continue", "stop"] = Field(
        "continue", description="after a failed record: go on with the next, or stop reading (what was not "
        "delivered stays unread for the next run)")
    on_success: list[str] = Field(default_factory=list, description="operations to run after a clean run",
                                  json_schema_extra=_one_or_many)
    on_failure: list[str] = Field(default_factory=list, description="operations to run after a run with a "
                                  "failed record or an error", json_schema_extra=_one_or_many)
    interval: float = Field(60.0, gt=0, description="watch mode: seconds between polls without IDLE")
    trigger: Literal["watch"] | Every | None = Field(
        None, description="run by the workers (`mailconnector worker`), by one of them at a time: watch (new mail, "
        "via IDLE, as run --watch does; a read-email source) or {every: SECONDS}; without it, the operation runs "
        "when asked")
    key: str | None = Field(
        None, description="a send-email target's batch key: records sent under one key are never sent again "
        "under it, and a new key sends them again; {date} is today's date (UTC), e.g. 'statements-{date}'")

    def batch_key(self) -> str | None:
        """The key with today's date filled in (a daily operation sends the same file once a day)."""
        if self.key is None:
            return None
        return self.key.replace("{date}", time.strftime("%Y-%m-%d", time.gmtime()))

    @field_validator("on_success", "on_failure", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("transformation", mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        return {"callable": v} if isinstance(v, str) else v


_ACTIVITY_ADAPTER: TypeAdapter[Any] = TypeAdapter(ActivityConfig)
ACTIVITY_TYPES = ("file", "send-email", "read-email")
SOURCE_TYPES = ("read-email", "file")
TARGET_TYPES = ("send-email", "file")


def mapping_expression_problem(expr: str) -> str | None:
    """Why a mapping's Jinja expression cannot be compiled, or None (checked when the project is loaded)."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().compile_expression(expr)
    except TemplateSyntaxError as exc:
        return exc.message or str(exc)
    return None


class ProjectSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(None, description="the state store: a SQLite file (default "
                              ".mailconnector/state.db, relative to the project file) or a "
                              "postgresql://user:password@host:port/database URL (secrets through ${env:...} or "
                              "${file:...}); processes that share one share the send ledger, read state and "
                              "leases. MAILCONNECTOR_STATE overrides it")
    log_retention_days: float | None = Field(90, gt=0, description="operation logs older than this are removed "
                                             "(null: kept whatever their age)")
    log_retention_runs: int | None = Field(10000, gt=0, description="at most this many runs are kept "
                                           "(null: no limit)")
    lease_seconds: float = Field(60.0, ge=1, le=3600, description="how long a folder stays locked to a "
                                 "consumer that stopped renewing its lease (a killed process); renewed every "
                                 "third of it")
    broker: str | None = Field(None, description="the Celery broker of distributed runs and workers: "
                               "redis://HOST:6379/0 or amqp://USER:PASSWORD@HOST:5672// (secrets through ${env:...} "
                               "or ${file:...}); MAILCONNECTOR_BROKER overrides it. Needs settings.state on "
                               "PostgreSQL")
    chunk_size: int = Field(100, ge=1, le=10000, description="distributed runs: records per task (keep a chunk's "
                            "work well under redelivery_seconds)")
    redelivery_seconds: float = Field(90.0, ge=5, le=86400, description="distributed runs: how long the broker "
                                      "waits before it gives a chunk held by a worker that died to another "
                                      "(Redis' visibility timeout); a chunk still running then is not run twice "
                                      "(its lease), but waits")


class _ProjectFile(BaseModel):
    """The whole file, for the published JSON Schema (entries are validated one by one when used)."""

    model_config = ConfigDict(extra="forbid", title="mailconnector project file")

    connections: dict[str, Connection] = Field(default_factory=dict)
    activities: dict[str, ActivityConfig] = Field(default_factory=dict)
    operations: dict[str, OperationConfig] = Field(default_factory=dict)
    settings: ProjectSettings = Field(default_factory=ProjectSettings)


def project_schema() -> dict[str, Any]:
    """The JSON Schema of ``mailconnector.yaml``, activity settings included (their models live with the
    activities, so they are merged in here)."""
    from pydantic.json_schema import models_json_schema

    from .activities.read import ReadSettings
    from .activities.send import SendSettings
    from .records.send import SendDefaults

    _, top = models_json_schema(
        [(_ProjectFile, "validation"), (ReadSettings, "validation"), (SendSettings, "validation"),
         (SendDefaults, "validation")], by_alias=True)
    defs: dict[str, Any] = top["$defs"]
    schema: dict[str, Any] = defs.pop("_ProjectFile")
    send, read = defs["SendActivity"], defs["ReadActivity"]
    send["properties"].update({k: v for k, v in defs["SendSettings"]["properties"].items()})
    send["properties"].update({k: v for k, v in defs["SendDefaults"]["properties"].items()
                               if k not in send["properties"]})
    send["description"] = ("Send Email: connection, the activity's settings, and a default for any record "
                           "field (directly here or under defaults)")
    read["properties"].update(defs["ReadSettings"]["properties"])
    read["description"] = "Read Email: connection and the activity's settings"
    for entry in (send, read):
        entry["additionalProperties"] = False
    for name in ("SendSettings", "ReadSettings"):
        defs.pop(name)
    schema["$defs"] = defs
    schema["patternProperties"] = {f"^{_EXTENSION_PREFIX}": {
        "description": "ignored: a place for YAML anchors (&name) that entries reuse (*name, <<: *name)"}}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def find_project_file(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(PROJECT_ENV)
    if env:
        return Path(env)
    return Path.cwd() / PROJECT_FILE


@dataclass
class Project:
    path: Path
    doc: LocatedYaml
    _connections: dict[str, Connection] = field(default_factory=dict)
    _store: StateStore | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Project:
        """Load a project file (default: $MAILCONNECTOR_PROJECT, else ./mailconnector.yaml); a ``str`` path is
        as good as a ``Path``, since that is what a script most often has."""
        path = find_project_file(None if path is None else Path(path))
        doc = load_yaml(path)
        for key in doc.data:
            if key not in _TOP_LEVEL and not str(key).startswith(_EXTENSION_PREFIX):
                raise ConfigError(
                    f"unknown section (expected: {', '.join(sorted(_TOP_LEVEL))}; "
                    f"keys starting with {_EXTENSION_PREFIX} are ignored, e.g. for YAML anchors)",
                    source=str(path), line=doc.line_of([key]), field=str(key),
                )
        for section in ("connections", "activities", "operations", "settings"):
            value = doc.data.get(section)
            if value is not None and not isinstance(value, dict):
                raise ConfigError("must be a mapping of names to entries", source=str(path),
                                  line=doc.line_of([section]), field=section)
        return cls(path=path, doc=doc)

    @property
    def directory(self) -> Path:
        return self.path.resolve().parent

    @property
    def source(self) -> str:
        return str(self.path)

    def _section(self, name: str) -> dict[str, Any]:
        value = self.doc.data.get(name) or {}
        assert isinstance(value, dict)
        return value

    @property
    def connection_names(self) -> list[str]:
        return list(self._section("connections"))

    @property
    def uses_oauth2(self) -> bool:
        entries = self._section("connections").values()
        return any(isinstance(e, dict) and isinstance(e.get("auth"), dict) and e["auth"].get("type") == "oauth2"
                   for e in entries)

    @property
    def settings(self) -> ProjectSettings:
        try:
            return ProjectSettings.model_validate(self._section("settings"))
        except ValidationError as exc:
            raise config_error_from_validation(exc, source=self.source, prefix="settings",
                                               locate=self.doc.line_of) from None

    def connection(self, name: str) -> Connection:
        if name in self._connections:
            return self._connections[name]
        entries = self._section("connections")
        if name not in entries:
            known = ", ".join(entries) or "none"
            raise ConfigError(f"no connection named {name!r} (defined: {known})", source=self.source,
                              line=self.doc.line_of(["connections"]),
                              hint="add it under connections:, or run `mailconnector sandbox` for a local one")
        entry = entries[name]
        if not isinstance(entry, dict):
            raise ConfigError("must be a mapping", source=self.source,
                              line=self.doc.line_of(["connections", name]), field=f"connections.{name}")
        conn = Connection.from_dict(entry, name=name, source=self.source, base_dir=self.directory,
                                    locate=self.doc.line_of)
        self._connections[name] = conn
        return conn

    def store(self) -> StateStore:
        """The project's state store: ``$MAILCONNECTOR_STATE``, else ``settings.state``, else the default file."""
        if self._store is None:
            self._store = Store(self.state_target())
        return self._store

    def keep_store_of(self, earlier: Project) -> None:
        """Use ``earlier``'s open store when both point at the same place: a project file read again (the
        console does when it changes) keeps one connection pool instead of opening another each time."""
        if earlier._store is not None and self._store is None and earlier.state_target() == self.state_target():
            self._store = earlier._store

    def state_target(self) -> str:
        """Where the store is: a SQLite path (relative ones to the project's directory) or a URL, its
        secret references resolved."""
        configured = os.environ.get(STATE_ENV) or self.settings.state
        if not configured:
            return str(self.directory / ".mailconnector" / "state.db")
        try:
            target = resolve_in_url(configured, base_dir=self.directory)
        except SecretReferenceError as exc:
            raise ConfigError(f"settings.state: {exc}", source=self.source, field="settings.state") from None
        if "://" in target:
            return target
        path = Path(target).expanduser()
        return str(path if path.is_absolute() else self.directory / path)

    def activity(self, name: str) -> FileActivity | SendActivity | ReadActivity:
        entries = self._section("activities")
        if name not in entries:
            raise ConfigError(f"no activity named {name!r} (defined: {', '.join(entries) or 'none'})",
                              source=self.source)
        entry = entries[name]
        if not isinstance(entry, dict):
            raise ConfigError("must be a mapping with a type", source=self.source,
                              line=self.doc.line_of(["activities", name]), field=f"activities.{name}")
        kind = entry.get("type")
        if kind not in ACTIVITY_TYPES:
            where = ("activities", name, "type") if "type" in entry else ("activities", name)
            what = f"unknown activity type {kind!r}" if "type" in entry else "type is required"
            raise ConfigError(f"{what} (expected one of: {', '.join(ACTIVITY_TYPES)})", source=self.source,
                              line=self.doc.line_of(list(where)), field=f"activities.{name}.type")
        try:
            act: FileActivity | SendActivity | ReadActivity = _ACTIVITY_ADAPTER.validate_python(entry)
        except ValidationError as exc:
            raise config_error_from_validation(exc, source=self.source, prefix=f"activities.{name}",
                                               locate=self.doc.line_of) from None
        if isinstance(act, SendActivity | ReadActivity) and act.connection not in self.connection_names:
            raise ConfigError(f"no connection named {act.connection!r} "
                              f"(defined: {', '.join(self.connection_names) or 'none'})", source=self.source,
                              line=self.doc.line_of(["activities", name, "connection"]),
                              field=f"activities.{name}.connection")
        # The settings beside `type` and `connection` are checked here too, so that `validate_all()` (and every
        # command) reports a bad setting, with its line, before anything runs.
        if isinstance(act, SendActivity):
            self.send_settings(name, act)
        elif isinstance(act, ReadActivity):
            self.read_settings(name, act)
        return act

    def read_settings(self, name: str, config: ReadActivity) -> ReadSettings:
        """The Read Email settings of an activity, validated, with errors naming the project file's line."""
        from .activities.read import ReadSettings

        settings = dict(config.model_extra or {})
        directory = settings.get("directory")
        if isinstance(directory, str) and not Path(directory).expanduser().is_absolute():
            settings["directory"] = str(self.directory / directory)
        result = self._validated(ReadSettings, settings, name)
        try:
            result.check()
        except ConfigError as exc:
            key = exc.field or "type"
            raise ConfigError(exc.reason, source=self.source, line=self.doc.line_of(["activities", name, key]),
                              field=f"activities.{name}.{key}", hint=exc.hint) from None
        return result

    def send_settings(self, name: str, config: SendActivity) -> SendSettings:
        """The Send Email settings of an activity: its own settings, and a default for any record field
        (given under ``defaults:`` or directly beside the settings)."""
        from .activities.send import SendSettings
        from .records.send import SendDefaults

        extra = dict(config.model_extra or {})
        settings_keys = set(SendSettings.model_fields) - {"defaults"}
        settings = {k: extra.pop(k) for k in list(extra) if k in settings_keys}
        defaults = dict(extra.pop("defaults", None) or {})
        defaults.update(extra)  # to, cc, subject, ... given directly on the activity
        if isinstance(settings.get("dry_run"), str) and not Path(settings["dry_run"]).expanduser().is_absolute():
            settings["dry_run"] = str(self.directory / settings["dry_run"])
        if defaults:
            settings["defaults"] = self._validated(SendDefaults, defaults, name)
        return self._validated(SendSettings, settings, name)

    def _validated(self, model: type[M], data: Mapping[str, Any], name: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise config_error_from_validation(exc, source=self.source, prefix=f"activities.{name}",
                                               locate=self.doc.line_of) from None

    def operation(self, name: str) -> OperationConfig:
        entries = self._section("operations")
        if name not in entries:
            raise ConfigError(f"no operation named {name!r} (defined: {', '.join(entries) or 'none'})",
                              source=self.source)
        try:
            op = OperationConfig.model_validate(entries[name])
        except ValidationError as exc:
            raise config_error_from_validation(exc, source=self.source, prefix=f"operations.{name}",
                                               locate=self.doc.line_of) from None
        acts: dict[str, FileActivity | SendActivity | ReadActivity] = {}
        for role, allowed in (("source", SOURCE_TYPES), ("target", TARGET_TYPES)):
            act_name = getattr(op, role)
            line = self.doc.line_of(["operations", name, role])
            if act_name not in self._section("activities"):
                raise ConfigError(f"no activity named {act_name!r}", source=self.source, line=line,
                                  field=f"operations.{name}.{role}")
            act = self.activity(act_name)
            acts[role] = act
            if (role == "target" and isinstance(act, FileActivity) and not act.append
                    and isinstance(acts["source"], ReadActivity)):
                raise ConfigError(
                    f"{act_name!r} has append: false, which would replace "
                    "the file at each run and lose the records of earlier runs, whose emails were already "
                    "marked read (or moved)", source=self.source, line=line, field=f"operations.{name}.target",
                    hint=f"remove append: false from activities.{act_name} (file targets append by default)")
            if act.type not in allowed:
                kind = "a target-only" if role == "source" else "a source-only"
                raise ConfigError(
                    f"{act_name!r} is {kind} activity ({act.type}); a {role} must be one of: {', '.join(allowed)}",
                    source=self.source, line=line, field=f"operations.{name}.{role}")
        for key in ("on_success", "on_failure"):
            for i, chained in enumerate(getattr(op, key)):
                if chained not in self._section("operations"):
                    value = (entries[name] or {}).get(key)
                    line = self.doc.line_of(["operations", name, key, *([i] if isinstance(value, list) else [])])
                    raise ConfigError(f"no operation named {chained!r} "
                                      f"(defined: {', '.join(self._section('operations'))})", source=self.source,
                                      line=line, field=f"operations.{name}.{key}")
        if op.trigger == "watch" and not isinstance(acts["source"], ReadActivity):
            line = self.doc.line_of(["operations", name, "trigger"])
            raise ConfigError(f"watch needs a read-email source, and {op.source!r} is a file, which has no new "
                              "records to wait for", source=self.source, line=line, field=f"operations.{name}.trigger",
                              hint="use trigger: {every: SECONDS} to run it again and again")
        if op.transformation is not None and op.transformation.mapping is not None:
            for out_field, expr in op.transformation.mapping.items():
                problem = mapping_expression_problem(expr)
                if problem is not None:
                    line = self.doc.line_of(["operations", name, "transformation", "mapping", out_field])
                    raise ConfigError(f"invalid Jinja expression {expr!r}: {problem}", source=self.source, line=line,
                                      field=f"operations.{name}.transformation.mapping.{out_field}")
        return op

    def triggered_operations(self) -> list[str]:
        """The operations with a ``trigger`` (which the workers run), as written: each is checked when run."""
        return [name for name, entry in self._section("operations").items()
                if isinstance(entry, dict) and entry.get("trigger") is not None]

    def line_of(self, *path: str | int) -> int | None:
        """The line of a place in the project file (None when unknown), for errors that point at it."""
        return self.doc.line_of(list(path))

    def validate_all(self) -> None:
        """Validate every entry (for `mailconnector init` checks and CI of projects)."""
        self.settings  # noqa: B018  (validated on access: a wrong setting is reported here too)
        for name in self.connection_names:
            self.connection(name)
        for name in self._section("activities"):
            self.activity(name)
        for name in self._section("operations"):
            self.operation(name)
