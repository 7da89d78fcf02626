"""Jinja rendering for send records: sandboxed, strict, compiled once per distinct template source.

Templates may arrive inside records, i.e. from whatever feeds the operation, so they run in Jinja's
``SandboxedEnvironment`` (no attribute access to internals) with ``StrictUndefined`` (a misspelt variable
is an error, not an empty string). Two environments exist for the whole process: one autoescaping for
HTML bodies, one plain for subjects and text bodies. ``from_string`` does not cache, so compiled templates
are kept in an LRU cache keyed by their source.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["TemplateProblem", "compile_template", "render_template"]

_TEMPLATE_FILENAME = "<template>"
# Caps for the operators a hostile template could use to exhaust memory ('x' * 10**10, 9**9**9).
_MAX_REPEAT_LEN = 1_000_000
_MAX_POWER_BITS = 100_000


class TemplateProblem(ValueError):
    """A template that does not compile or render; ``line`` is 1-based when known."""

    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.reason = reason
        self.line = line


class _Environment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | bytes | Sequence)
                    and isinstance(times, int)
                    and len(seq) * times > _MAX_REPEAT_LEN
                ):
                    raise SecurityError("the repeated value would be too large")
            return operator.mul(left, right)
        if operator_ == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and right > 0
                and left.bit_length() * right > _MAX_POWER_BITS
            ):
                raise SecurityError("the power would be too large")
            return operator.pow(left, right)
        return super().call_binop(context, operator_, left, right)


_PLAIN = _Environment(undefined=StrictUndefined, autoescape=False)
_HTML = _Environment(undefined=StrictUndefined, autoescape=True)


@lru_cache(maxsize=512)
def compile_template(source: str, *, html: bool) -> Template:
    """Compile once; raise TemplateProblem with the line of a syntax error."""
    env = _HTML if html else _PLAIN
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(exc.message or "syntax error", exc.lineno) from None


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_template(source: str, data: Mapping[str, Any], *, html: bool) -> str:
    """Render with ``data`` as the top-level variables; any failure becomes TemplateProblem."""
    template = compile_template(source, html=html)
    try:
        return template.render(data)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(exc.message or "syntax error", exc.lineno) from None
    except Exception as exc:  # the template is user code: any error it raises is the record's fault
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, SecurityError):
            reason = f"not allowed in a template: {reason}"
        raise TemplateProblem(reason, _template_line(exc.__traceback__)) from None
