"""YAML loading that remembers where each value came from, so errors can name the line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["LocatedYaml", "load_yaml"]


class LocatedYaml:
    """A parsed document plus ``line_of(path)`` for any path of keys and indices into it."""

    def __init__(self, data: Any, node: yaml.Node | None, source: str) -> None:
        self.data = data
        self._node = node
        self.source = source

    def line_of(self, path: Sequence[str | int]) -> int | None:
        node = self._node
        line = node.start_mark.line + 1 if node is not None else None
        for key in path:
            if isinstance(node, yaml.MappingNode):
                found = None
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                        found = v
                        line = k.start_mark.line + 1
                        break
                if found is None:
                    return line
                node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def load_yaml(path: Path) -> LocatedYaml:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("project file not found", source=source,
                          topic="project-file-missing",
                          hint="create one with `mailconnector init`, or give the path of yours") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path (from --project too)
        raise ConfigError(f"cannot read the project file: {exc}", source=source) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML{at}: {exc.problem or exc}", source=source,
                          line=mark.line + 1 if mark is not None else None,
                          hint="check indentation and quoting around that line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the project file must be a mapping with connections, activities, operations",
                          source=source)
    return LocatedYaml(data, node, source)
