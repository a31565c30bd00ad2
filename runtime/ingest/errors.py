"""Typed outcomes of the ingest protocol. Each maps to one fate in one place."""

from __future__ import annotations

from runtime.errors import SluiceError


class RejectedFile(SluiceError):
    """A file fails deterministically: it is quarantined in rejected/<batch>/ with `code`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class BatchMustHalt(SluiceError):
    """A batch cannot be resumed safely (a part mismatch, a member gone): it goes to halted/."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BatchFailed(SluiceError):
    """This batch failed, not transiently (its data, its names, a part SQS refuses): the run
    counts; after `ingest.max_crash_runs` the culprit (header index), if known, is quarantined
    with `code`, else the batch halts with it."""

    def __init__(self, code: str, detail: str, culprit: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.culprit = culprit
