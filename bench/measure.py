"""What every scenario reports: wall time, SQS API calls and billed request units (counted
from the requests boto3 actually makes), bytes, and peak RSS; plus the cost model."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.codec import attributes_size, billing_units

# us-east-1 list prices (docs/operations.md#what-it-will-cost-sluice-cost); the output says so.
PRICE_REGION = "us-east-1"
SQS_STANDARD_PER_MILLION_UNITS = 0.40
SQS_FIFO_PER_MILLION_UNITS = 0.50

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process."""
    # Not Linux, or not permitted: the peak then spans earlier scenarios (still an upper bound).
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_rss_mb() -> float:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _message_bytes(entry: dict[str, Any]) -> int:
    return len(entry["MessageBody"].encode()) + attributes_size(entry.get("MessageAttributes"))


@dataclass
class SqsMeter:
    """Counts SQS requests and the 64 KiB units each is billed as, via botocore's event hooks."""

    calls: Counter[str] = field(default_factory=Counter)
    billed_units: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0

    def attach(self, client: Any) -> Any:
        # before-parameter-build sees the caller's parameters, once per API call (not per retry).
        client.meta.events.register("before-parameter-build.sqs.*", self._count)
        return client

    def _count(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls[model.name] += 1
        payload = 0
        if model.name == "SendMessageBatch":
            for entry in params.get("Entries", []):
                payload += _message_bytes(entry)
            self.messages_sent += len(params.get("Entries", []))
        elif model.name == "SendMessage":
            payload = _message_bytes(params)
            self.messages_sent += 1
        self.bytes_sent += payload
        self.billed_units += billing_units(payload)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class Measurement:
    name: str
    seconds: float
    files: int
    records: int
    sqs_calls: int = 0
    billed_units: int = 0
    bytes_sent: int = 0
    messages: int = 0
    peak_rss_mb: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def billed_units_per_record(self) -> float:
        return self.billed_units / self.records if self.records else 0.0

    def cost_per_million_records(self, price_per_million_units: float) -> float:
        return self.billed_units_per_record * price_per_million_units

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "files": self.files,
            "records": self.records,
            "records_per_s": round(self.records_per_s, 1),
            "files_per_s": round(self.files_per_s, 1),
            "sqs_calls": self.sqs_calls,
            "billed_units": self.billed_units,
            "billed_units_per_record": round(self.billed_units_per_record, 6),
            "bytes_sent": self.bytes_sent,
            "messages": self.messages,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "sqs_cost_per_million_records_usd": {
                "standard": round(self.cost_per_million_records(SQS_STANDARD_PER_MILLION_UNITS), 4),
                "fifo": round(self.cost_per_million_records(SQS_FIFO_PER_MILLION_UNITS), 4),
            },
            **self.extra,
        }


def median_of(runs: int, scenario: Callable[[], Measurement]) -> Measurement:
    """The run with the median records/s of `runs` runs of a scenario (this machine's disk and
    scheduler move a figure by about ±10 % from run to run); the spread is kept beside it."""
    measured = sorted((scenario() for _ in range(runs)), key=lambda m: m.records_per_s)
    median = measured[len(measured) // 2]
    median.extra.update(
        {
            "runs": runs,
            "min_records_per_s": round(measured[0].records_per_s, 1),
            "max_records_per_s": round(measured[-1].records_per_s, 1),
        }
    )
    return median


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        reset_peak_rss()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.peak_rss_mb = peak_rss_mb()
