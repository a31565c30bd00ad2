"""Typed exceptions of the jobs path."""

from __future__ import annotations

from runtime.errors import SluiceError


class BadJobRequest(SluiceError):
    """A request the jobs API refuses: `status` is the HTTP status, `code` a stable reason."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class IdempotencyConflict(BadJobRequest):
    """An `Idempotency-Key` already names a job with another body."""

    def __init__(self, detail: str) -> None:
        super().__init__(409, "idempotency_conflict", detail)
