"""Where every record went: the sink (S3 objects the router wrote), the quarantine
(`rejected/**/*.reason.json`) and the inbox, checked against what was expected.

The same code serves the writer simulator's run summary (the expectation is the writer's
manifest: each file's record count and fate) and a run over the user's own files (`--inbox`,
where a file's record count and fate are observed, not known in advance). A record is
identified by its item id, `<file>#<index>`, which the loader assigns and every step keeps.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from runtime.ingest.layout import REASON_SUFFIX, printable_name, reason_name


def split_item_id(item_id: str) -> tuple[str, int]:
    """`<file>#<index>` → (file, index). An id of another shape (a request body's SQS message
    id, through the gateway) names a source of one record: (id, 0)."""
    file, sep, index = item_id.rpartition("#")
    if not sep or not index.isdigit():
        return item_id, 0
    return file, int(index)


def _ids_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        items = value.get("items")
        if isinstance(items, list):
            yield from _ids_in(items)
        elif isinstance(value.get("id"), str):
            yield value["id"]
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                yield entry["id"]


def item_ids_in_sink_object(body: bytes) -> list[str]:
    """The item ids one sink object holds: a JSON envelope-like object (`items`), a JSON array of
    items, or NDJSON with one item per line."""
    try:
        return list(_ids_in(orjson.loads(body)))
    except orjson.JSONDecodeError:
        return [item for line in body.splitlines() if line.strip() for item in _ids_in(orjson.loads(line))]


class S3SinkObserver:
    """The router's S3 sink, observed: reads each sink object once and keeps a count of every
    item id seen. Delivery times are the objects' `LastModified` (the sink's own clock, epoch
    seconds), not when we looked."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.counts: Counter[str] = Counter()
        self.objects = 0
        self.first_delivery_at: float | None = None
        self.last_delivery_at: float | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read objects not seen yet; returns how many records they held."""
        with self._lock:
            added = 0
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for entry in page.get("Contents", []):
                    key = entry["Key"]
                    if key in self._seen:
                        continue
                    body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    ids = item_ids_in_sink_object(body)
                    self.counts.update(ids)
                    self._seen.add(key)
                    self.objects += 1
                    added += len(ids)
                    if ids:
                        self._delivered_at(entry["LastModified"].timestamp())
            return added

    def _delivered_at(self, when: float) -> None:
        self.first_delivery_at = min(when, self.first_delivery_at or when)
        self.last_delivery_at = max(when, self.last_delivery_at or when)

    @property
    def records(self) -> int:
        return sum(self.counts.values())


class StateQueueObserver:
    """The end of an ingest-only run (no router), observed: receives every envelope on the state queue,
    counts its item ids and deletes it. A message received twice (visibility lapsed before the
    delete) is counted twice — a duplicate on the queue is a duplicate at this end."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.counts: Counter[str] = Counter()
        self.objects = 0
        self.first_delivery_at: float | None = None
        self.last_delivery_at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> int:
        from runtime.codec import decode

        with self._lock:
            added = 0
            while True:
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
                ).get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    ids = [item.id for item in decode(message["Body"]).items]
                    self.counts.update(ids)
                    self.objects += 1
                    added += len(ids)
                receipts = [
                    {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
                    for i, message in enumerate(messages)
                ]
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=receipts)
            if added:
                self.first_delivery_at = self.first_delivery_at or time.time()
                self.last_delivery_at = time.time()
            return added

    @property
    def records(self) -> int:
        return sum(self.counts.values())


class SinkObserver(Protocol):
    """Watches one end of a run and counts every item id that reached it."""

    counts: Counter[str]
    first_delivery_at: float | None
    last_delivery_at: float | None

    def refresh(self) -> int: ...


class SinkObservers:
    """Every end a run has (the router's S3 objects, the relay's API), observed as one."""

    def __init__(self, observers: Iterable[SinkObserver]) -> None:
        self.observers = list(observers)

    def refresh(self) -> int:
        return sum(observer.refresh() for observer in self.observers)

    @property
    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for observer in self.observers:
            total.update(observer.counts)
        return total

    @property
    def records(self) -> int:
        return sum(sum(observer.counts.values()) for observer in self.observers)

    @property
    def first_delivery_at(self) -> float | None:
        times = [o.first_delivery_at for o in self.observers if o.first_delivery_at is not None]
        return min(times) if times else None

    @property
    def last_delivery_at(self) -> float | None:
        times = [o.last_delivery_at for o in self.observers if o.last_delivery_at is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class Rejection:
    file: str
    code: str
    detail: str
    batch: str
    path: str


def read_rejections(share: Path) -> dict[str, list[Rejection]]:
    """Every quarantined entry under `rejected/<batch>/`, by file name, with its reason."""
    found: dict[str, list[Rejection]] = {}
    rejected = share / "rejected"
    if not rejected.is_dir():
        return found
    for directory, _subdirs, files in os.walk(rejected):
        names = set(files)
        for name in files:
            # Each quarantined entry beside its reason file, under the name sluice derives
            # (`<name>.reason.json`, shortened for a long name).
            if name.endswith(REASON_SUFFIX) or name.startswith(".") or reason_name(name) not in names:
                continue
            try:
                reason = orjson.loads((Path(directory) / reason_name(name)).read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a reason file is written to a temporary name and linked: never partial
            entry = Rejection(
                file=name,
                code=str(reason.get("code", "")),
                detail=str(reason.get("detail", "")),
                batch=str(reason.get("batch", Path(directory).name)),
                path=printable_name(str(Path(directory, name).relative_to(share))),
            )
            found.setdefault(name, []).append(entry)
    return found


@dataclass(frozen=True)
class Expected:
    """What must become of one file. `fate`/`records` are None when not known in advance (a
    user's own file): then the observed fate is reported and only loss inside the file's
    delivered range and duplicates can be detected."""

    file: str
    fate: str | None
    records: int | None
    codes: frozenset[str] = frozenset()


@dataclass
class FileFate:
    file: str
    fate: str  # delivered | rejected | skipped | pending
    records_delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    reason: str | None = None
    detail: str | None = None
    rejected_path: str | None = None
    expected_fate: str | None = None
    problem: str | None = None
    item_ids: list[str] = field(default_factory=list)

    def as_dict(self, *, with_ids: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": printable_name(self.file),  # a name that is not UTF-8, escaped for JSON
            "fate": self.fate,
            "records_delivered": self.records_delivered,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "reason": self.reason,
        }
        if self.detail is not None:
            out["detail"] = self.detail
        if self.rejected_path is not None:
            out["rejected_path"] = self.rejected_path
        if self.expected_fate is not None:
            out["expected_fate"] = self.expected_fate
        if self.problem is not None:
            out["problem"] = self.problem
        if with_ids:
            out["item_ids"] = self.item_ids
        return out


@dataclass
class Reconciliation:
    files: list[FileFate]
    records_expected: int
    records_delivered: int
    lost: int
    duplicates: int
    unexpected_ids: list[str]

    @property
    def problems(self) -> list[FileFate]:
        return [fate for fate in self.files if fate.problem is not None]

    @property
    def pending(self) -> list[FileFate]:
        return [fate for fate in self.files if fate.fate == "pending"]

    @property
    def settled(self) -> bool:
        """Every file has its final fate: none pending, none delivered with records missing (a
        file rejected after some of its records were expected stays a loss, but is final)."""
        return not self.pending and not any(f.lost for f in self.files if f.fate == "delivered")

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.unexpected_ids or self.problems)


def _group_by_file(counts: Counter[str]) -> dict[str, dict[int, int]]:
    by_file: dict[str, dict[int, int]] = {}
    for item_id, count in counts.items():
        file, index = split_item_id(item_id)
        by_file.setdefault(file, {})[index] = count
    return by_file


def _observed_fate(
    expected: Expected, delivered: dict[int, int], rejections: list[Rejection], in_inbox: bool
) -> str:
    if rejections:
        return "rejected"
    if delivered:
        return "delivered"
    if in_inbox and expected.fate == "skipped":
        return "skipped"
    return "pending"


def _judge(expected: Expected, fate: FileFate, delivered: dict[int, int]) -> None:
    """Fill in losses and the problem, if any, of one file."""
    # Records that must exist: the expected count, or (when unknown) every index below the
    # highest one delivered — a gap inside a delivered file is a lost record.
    must_exist = (
        expected.records if expected.records is not None else (max(delivered) + 1 if delivered else 0)
    )
    if expected.fate in (None, "delivered") and fate.fate in ("delivered", "pending"):
        fate.lost = sum(1 for index in range(must_exist) if index not in delivered)
    if expected.fate is not None and fate.fate != expected.fate:
        fate.problem = f"expected {expected.fate}, found {fate.fate}"
        if expected.fate == "delivered" and expected.records:
            fate.lost = expected.records - len(delivered)
    elif fate.fate == "rejected" and expected.codes and fate.reason not in expected.codes:
        fate.problem = f"rejected as {fate.reason}, expected one of {sorted(expected.codes)}"
    elif fate.fate == "pending" and expected.fate is None:
        fate.problem = "no fate yet"
    if fate.problem is None and (fate.lost or fate.duplicates):
        fate.problem = f"{fate.lost} lost, {fate.duplicates} duplicated"


def reconcile(
    expectations: Iterable[Expected],
    counts: Counter[str],
    rejections: dict[str, list[Rejection]],
    inbox_names: set[str],
) -> Reconciliation:
    """Each expected file's fate, and the run's exactly-once totals over the sink."""
    by_file = _group_by_file(counts)
    expected_list = list(expectations)
    known = {expected.file for expected in expected_list}
    unexpected = [f"{name}#*" for name in by_file if name not in known]
    files: list[FileFate] = []
    for expected in expected_list:
        delivered = by_file.get(expected.file, {})
        limit = expected.records
        beyond = [index for index in delivered if limit is not None and index >= limit]
        unexpected.extend(f"{expected.file}#{index}" for index in beyond)
        delivered = {index: count for index, count in delivered.items() if index not in beyond}
        found = rejections.get(expected.file, [])
        fate = FileFate(
            file=expected.file,
            fate=_observed_fate(expected, delivered, found, expected.file in inbox_names),
            records_delivered=len(delivered),
            duplicates=sum(count - 1 for count in delivered.values()),
            expected_fate=expected.fate,
            item_ids=[f"{expected.file}#{index}" for index in sorted(delivered)],
        )
        if found:
            fate.reason, fate.detail, fate.rejected_path = found[0].code, found[0].detail, found[0].path
        _judge(expected, fate, delivered)
        files.append(fate)
    return Reconciliation(
        files=files,
        records_expected=sum(expected.records or 0 for expected in expected_list),
        records_delivered=sum(fate.records_delivered for fate in files),
        lost=sum(fate.lost for fate in files),
        duplicates=sum(fate.duplicates for fate in files),
        unexpected_ids=sorted(unexpected),
    )
