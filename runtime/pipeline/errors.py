"""Typed exceptions of the router framework."""

from __future__ import annotations

from runtime.errors import SluiceError


class PoisonItem(SluiceError):
    """Raised by a router (or a mutation) for input that can never succeed: the item goes to
    the DLQ at once with `reason`, without the retries a transient failure gets."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class PlanMismatch(SluiceError):
    """A re-run produced outputs other than the envelope's recorded plan: the router is not
    deterministic (or the code that builds bodies changed). Nothing is sent."""


class PlanNotReproducible(SluiceError):
    """A re-run could not rebuild a planned output because the router now fails for an item
    the plan routed: a transient failure; the delivery is retried later."""
