"""Typed exceptions of the router framework."""

from __future__ import annotations

from runtime.errors import SluiceError


class PoisonItem(SluiceError):
    """Raised by a router (or a mutation) for input that can never succeed: the item goes to
    the DLQ at once with `reason` (its `sluice-reason`) and `detail` (`sluice-detail`), without
    the retries a transient failure gets."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class PlanMismatch(SluiceError):
    """A router run lost the create-only race to a different recorded plan (its side effects
    or its output differ): the recorded plan is followed and the delivery is dead-lettered
    with reason `plan_mismatch` and both plan hashes."""


class LegacyPlan(SluiceError):
    """A stored plan written before plans recorded their bodies, not yet complete: it cannot be
    replayed without re-running the router, so its envelope fails (and, after the queue's
    redrive policy, reaches the DLQ) instead of risking different outputs under used ids."""


class PlanTooLarge(SluiceError):
    """A plan over the ledger's inline limit with no S3 bucket configured to spill it to."""
