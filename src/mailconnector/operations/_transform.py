"""An operation's transformation as ``record -> [records]``: a Jinja mapping (sandboxed) or a declared
``module:function`` imported from the project directory."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError
from ..project import Project, Transformation

__all__ = ["Transform", "build_transformation"]

Transform = Callable[[dict[str, Any]], list[dict[str, Any]]]
_env = SandboxedEnvironment(autoescape=False)


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
            where = project.locate("operations", operation, "transformation", "mapping", out_field)
            raise ConfigError(f"{where}operations.{operation}.transformation.mapping.{out_field}: "
                              f"invalid expression {expr!r}: {exc}", source=project.source) from None
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
    where = project.locate("operations", operation, "transformation")
    field_name = f"operations.{operation}.transformation"
    project_dir = str(project.directory)
    if project_dir not in sys.path:
        sys.path.insert(0, project_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{where}{field_name}: cannot import {module_name} ({type(exc).__name__}: {exc})",
                          source=project.source,
                          hint="the module must be importable from the project directory") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"{where}{field_name}: module {module_name} has no function {func_name}",
                          source=project.source)

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


