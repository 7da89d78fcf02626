"""An operation's transformation as ``record -> [records]``: a Jinja mapping (sandboxed) or a declared
``module:function`` imported from the project directory."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError
from ..project import Project, Transformation

__all__ = ["Transform", "build_transformation"]

Transform = Callable[[dict[str, Any]], list[dict[str, Any]]]
_env = SandboxedEnvironment(autoescape=False)
_path_lock = threading.Lock()


def build_transformation(spec: Transformation | None, project: Project, operation: str = "") -> Transform:
    """The operation's transformation as ``record -> [records]`` (empty: drop the record)."""
    if spec is None:
        return lambda record: [record]
    if spec.callable is not None:
        return _callable_transform(spec.callable, project, operation)
    assert spec.mapping is not None
    compiled = {}
    for out_field, expr in spec.mapping.items():
        try:
            compiled[out_field] = _env.compile_expression(expr, undefined_to_none=True)
        except Exception as exc:  # jinja2.TemplateSyntaxError; the project check reports it with its line
            at = ("operations", operation, "transformation", "mapping", out_field)
            raise ConfigError(f"invalid expression {expr!r}: {exc}", source=project.source,
                              line=project.line_of(*at), field=".".join(at)) from None
    keep = spec.keep

    def mapping(record: dict[str, Any]) -> list[dict[str, Any]]:
        out: dict[str, Any] = dict(record) if keep else {}
        # Each field of the record is a variable, and `record` is the whole record (it wins a name clash).
        context = {k: v for k, v in record.items() if isinstance(k, str) and k.isidentifier()}
        context["record"] = record
        for out_field, fn in compiled.items():
            out[out_field] = fn(context)
        return [out]

    return mapping


def _callable_transform(target: str, project: Project, operation: str) -> Transform:
    """Only the declared ``module:function`` is imported (from the project directory first)."""
    module_name, func_name = target.split(":", 1)
    line = project.line_of("operations", operation, "transformation")
    field_name = f"operations.{operation}.transformation"
    try:
        module = _import_from(str(project.directory), module_name)
    except Exception as exc:
        raise ConfigError(f"cannot import {module_name} ({type(exc).__name__}: {exc})", source=project.source,
                          line=line, field=field_name,
                          hint="the module must be importable from the project directory") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"module {module_name} has no function {func_name}", source=project.source, line=line,
                          field=field_name)

    def call(record: dict[str, Any]) -> list[dict[str, Any]]:
        result = func(record)
        if result is None:
            return []
        if isinstance(result, dict):
            return [result]
        if isinstance(result, list) and all(isinstance(r, dict) for r in result):
            return result
        raise TypeError(f"{target} returned {type(result).__name__}; expected a dict, a list of dicts or None")

    return call


def _import_from(directory: str, module_name: str) -> ModuleType:
    """Import ``module_name`` with ``directory`` first on ``sys.path`` while it is imported, and only then.

    What the module imports as it is imported (a helper module beside it) is found there too. Left on the
    path, the project directory would shadow, for the rest of the process, any module of the same name
    imported later (a ``json.py`` or ``email.py`` in the project). The module itself stays imported, so a
    helper it imports only when its function runs must be imported at the top of the module instead.
    """
    with _path_lock:
        added = directory not in sys.path
        if added:
            sys.path.insert(0, directory)
        try:
            return importlib.import_module(module_name)
        finally:
            if added and directory in sys.path:
                sys.path.remove(directory)
