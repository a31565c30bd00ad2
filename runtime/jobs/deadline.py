"""The jobs function's answer deadline: every I/O call of a request runs against the time the
invocation has left (`context.get_remaining_time_in_millis()`), less a margin for answering.

A call that has not returned by then is abandoned (it finishes, or fails, on its own thread
while the caller answers) and raises `OutOfTime`; the caller decides what the answer is. So the
client always gets sluice's answer, never API Gateway's own timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from runtime.errors import TransientError

T = TypeVar("T")

# The HTTP API ends every integration at 30 s; the jobs function's timeout is at most 29 s.
DEFAULT_REMAINING_S = 29.0


class OutOfTime(TransientError):
    """An I/O call could not finish before the answer was due."""


def countdown(seconds: float) -> Callable[[], float]:
    """A remaining-time function for callers without a Lambda context: `seconds` from now."""
    ends = time.monotonic() + seconds
    return lambda: ends - time.monotonic()


class _Call:
    """One call on its own thread; its result or exception is kept for the waiting caller."""

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.function, self.args = function, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            self.error = exc


class AnswerDeadline:
    """The time a request has for its I/O: `remaining_s()` less `margin_s`."""

    def __init__(self, remaining_s: Callable[[], float], margin_s: float) -> None:
        self._remaining_s = remaining_s
        self._margin_s = margin_s

    def left(self) -> float:
        return self._remaining_s() - self._margin_s

    def call(self, function: Callable[..., T], *args: Any, cap_s: float | None = None) -> T:
        """`function(*args)` if it returns within the time left (and `cap_s`), else OutOfTime."""
        limit = self.left() if cap_s is None else min(self.left(), cap_s)
        name = getattr(function, "__name__", "call")
        if limit <= 0:
            raise OutOfTime(f"no time left for {name}")
        call = _Call(function, args)
        thread = threading.Thread(target=call.run, name=f"bounded-{name}", daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            raise OutOfTime(f"{name} did not return within {limit:.2f} s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]
