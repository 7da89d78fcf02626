"""Step recording for the connection Test: sessions mark their phases, the Test reports them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import MailConnectorError

__all__ = ["StepRecorder", "StepResult", "step"]


@dataclass
class StepResult:
    server: str
    name: str
    status: str = "skipped"  # passed | failed | skipped; running while a listener watches it
    ms: float = 0.0
    detail: str = ""
    error: str | None = None
    error_type: str | None = None
    hint: str | None = None
    exception: MailConnectorError | None = field(default=None, repr=False, compare=False)  # why it failed

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "exception"}


@dataclass
class StepRecorder:
    """``listener`` sees each step when it starts (status ``running``) and again when it ends: a console
    shows the steps as they complete instead of after the whole Test."""

    server: str
    steps: list[StepResult] = field(default_factory=list)
    listener: Callable[[StepResult], None] | None = None

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepResult]:
        result = StepResult(self.server, name, status="running")
        self.steps.append(result)
        self._tell(result)
        t0 = time.perf_counter()
        try:
            yield result
            result.status = "passed"
        except MailConnectorError as exc:
            result.status = "failed"
            result.error, result.error_type, result.hint = exc.message, exc.kind, exc.hint
            result.exception = exc
            raise
        finally:
            result.ms = round((time.perf_counter() - t0) * 1000, 1)
            if result.status == "running":  # stopped by something that is not ours (an interrupt)
                result.status = "skipped"
            self._tell(result)

    def _tell(self, result: StepResult) -> None:
        if self.listener is not None:
            self.listener(result)


@contextlib.contextmanager
def step(recorder: StepRecorder | None, name: str) -> Iterator[StepResult]:
    """A recorded step, or a throw-away result when nobody records."""
    if recorder is None:
        yield StepResult("", name)
        return
    with recorder.step(name) as result:
        yield result


def shorten(text: str, limit: int = 120) -> str:
    """A step's detail cut at a word boundary (a greeting can be long; half a word reads as a typo)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut + "…"
