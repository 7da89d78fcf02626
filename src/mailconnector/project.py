"""The project file ``mailconnector.yaml``: connections, activities and operations (SPEC section 5).

Connections are validated when first used, so a broken entry (say, an unset ``${env:}`` variable) only
stops the commands that need it; every error names the file, the line and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._yaml import LocatedYaml, load_yaml
from .connection import Connection
from .errors import ConfigError
from .store import Store

__all__ = ["PROJECT_ENV", "PROJECT_FILE", "Project", "find_project_file"]

PROJECT_FILE = "mailconnector.yaml"
PROJECT_ENV = "MAILCONNECTOR_PROJECT"
_TOP_LEVEL = {"connections", "activities", "operations", "settings"}


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
    _store: Store | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Project:
        path = find_project_file(path)
        doc = load_yaml(path)
        for key in doc.data:
            if key not in _TOP_LEVEL:
                raise ConfigError(
                    f"line {doc.line_of([key])}: {key}: unknown section (expected: {', '.join(sorted(_TOP_LEVEL))})",
                    source=str(path),
                )
        for section in ("connections", "activities", "operations", "settings"):
            value = doc.data.get(section)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"line {doc.line_of([section])}: {section}: must be a mapping of names to entries",
                                  source=str(path))
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
    def settings(self) -> dict[str, Any]:
        return self._section("settings")

    def connection(self, name: str) -> Connection:
        if name in self._connections:
            return self._connections[name]
        entries = self._section("connections")
        if name not in entries:
            known = ", ".join(entries) or "none"
            raise ConfigError(f"no connection named {name!r} (defined: {known})", source=self.source,
                              hint="add it under connections:, or run `mailconnector sandbox` for a local one")
        entry = entries[name]
        if not isinstance(entry, dict):
            raise ConfigError(f"line {self.doc.line_of(['connections', name])}: connections.{name}: "
                              "must be a mapping", source=self.source)
        conn = Connection.from_dict(entry, name=name, source=self.source, base_dir=self.directory,
                                    locate=self.doc.line_of)
        self._connections[name] = conn
        return conn

    def store(self) -> Store:
        if self._store is None:
            configured = self.settings.get("state")
            path = Path(configured) if configured else self.directory / ".mailconnector" / "state.db"
            if not path.is_absolute():
                path = self.directory / path
            self._store = Store(path)
        return self._store
