"""An SQS event source mapping, locally: pollers that receive from a queue and invoke a
function the way Lambda's mapping does.

What it reproduces, because the handlers' exactly-once logic depends on it:
- batches up to `batch_size` records, gathered for at most the batching window once the first
  record arrived (with no window: whatever is available now), trimmed to Lambda's 6 MB
  invocation payload (the rest is carried into the next batch, still in flight);
- `ReportBatchItemFailures`: only the records not named in `batchItemFailures` are deleted; a
  malformed response (an unknown or empty identifier) fails the whole batch, as on AWS;
- a function error or timeout deletes nothing: every record reappears after the visibility
  timeout (or whatever visibility the handler set) and the queue's own redrive policy moves
  it to the DLQ after `maxReceiveCount` receives (moto applies the policy on receive);
- `max_concurrency` pollers, each with one invocation in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from local.functions import LOCAL_REGION, InvocationResult, LocalFunction

LAMBDA_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# The JSON around each record's body (ids, receipt handle, attributes) in an SQS event.
RECORD_OVERHEAD_BYTES = 1024
SQS_MAX_RECEIVE = 10


@dataclass(frozen=True)
class SqsMapping:
    queue_url: str
    queue_arn: str
    batch_size: int
    batching_window_s: float = 0.0
    max_concurrency: int = 2
    report_batch_item_failures: bool = True
    max_payload_bytes: int = LAMBDA_MAX_PAYLOAD_BYTES


@dataclass
class MappingStats:
    received: int = 0
    deleted: int = 0
    reported_failures: int = 0
    failed_batches: int = 0
    batches: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def _lambda_attribute(attribute: dict[str, Any]) -> dict[str, Any]:
    return {
        "stringValue": attribute.get("StringValue"),
        "binaryValue": attribute.get("BinaryValue"),
        "stringListValues": attribute.get("StringListValues", []),
        "binaryListValues": attribute.get("BinaryListValues", []),
        "dataType": attribute["DataType"],
    }


def lambda_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One SQS message as Lambda's SQS event shows it (camelCase, `eventSourceARN`)."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": LOCAL_REGION,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _record_size(message: dict[str, Any]) -> int:
    return len(message["Body"].encode()) + RECORD_OVERHEAD_BYTES


def failed_message_ids(response: Any, batch_ids: set[str]) -> set[str]:
    """The message ids a `ReportBatchItemFailures` response names; the whole batch when the
    response is malformed (Lambda then treats the invocation as a complete failure)."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return set(batch_ids)
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(batch_ids)
    named: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch_ids:
            return set(batch_ids)
        named.add(identifier)
    return named


class SqsPoller:
    """`max_concurrency` threads, each gathering a batch and invoking the function with it."""

    def __init__(
        self,
        sqs: Any,
        function: LocalFunction,
        mapping: SqsMapping,
        *,
        on_batch_done: Callable[[list[dict[str, Any]], set[str]], None] | None = None,
    ) -> None:
        self.sqs = sqs
        self.function = function
        self.mapping = mapping
        self.stats = MappingStats()
        self._on_batch_done = on_batch_done
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.mapping.max_concurrency):
            thread = threading.Thread(
                target=self._poll_forever, name=f"esm-{self.function.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 60.0) -> bool:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _poll_forever(self) -> None:
        carried: list[dict[str, Any]] = []
        while not self._stop.is_set():
            batch = self._gather(carried)
            batch, carried = self._trim(batch)
            if batch:
                self.process(batch)
        self._release(carried)

    def _receive(self, wanted: int, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.mapping.queue_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        self.stats.add(received=len(messages))
        return messages

    def _gather(self, carried: list[dict[str, Any]]) -> list[dict[str, Any]]:
        mapping = self.mapping
        batch = list(carried)
        window_end = time.monotonic() + mapping.batching_window_s if batch else None
        while len(batch) < mapping.batch_size and not self._stop.is_set():
            if sum(_record_size(m) for m in batch) >= mapping.max_payload_bytes:
                break
            wanted = min(SQS_MAX_RECEIVE, mapping.batch_size - len(batch))
            messages = self._receive(wanted, wait_s=0 if batch else 1)
            batch.extend(messages)
            if not batch:
                continue
            if window_end is None:
                window_end = time.monotonic() + mapping.batching_window_s
            remaining_window = window_end - time.monotonic()
            if remaining_window <= 0:
                break
            if len(messages) < wanted:
                if mapping.batching_window_s == 0:
                    break
                self._stop.wait(min(0.1, remaining_window))
        return batch

    def _trim(self, batch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Split off what would push the invocation over Lambda's payload limit."""
        total = 0
        for index, message in enumerate(batch):
            total += _record_size(message)
            if total > self.mapping.max_payload_bytes and index > 0:
                return batch[:index], batch[index:]
        return batch, []

    def process(self, batch: list[dict[str, Any]]) -> set[str]:
        """Invoke the function with one batch and settle it; returns the ids left undeleted."""
        event = {"Records": [lambda_record(m, self.mapping.queue_arn) for m in batch]}
        self.stats.add(batches=1, in_flight=1)
        try:
            result = self.function.invoke(event)
        finally:
            self.stats.add(in_flight=-1)
        failed = self._failed(result, {m["MessageId"] for m in batch})
        succeeded = [m for m in batch if m["MessageId"] not in failed]
        self._delete(succeeded)
        self.stats.add(
            reported_failures=len(failed) if result.ok else 0, failed_batches=0 if result.ok else 1
        )
        if self._on_batch_done is not None:
            self._on_batch_done(batch, failed)
        return failed

    def _failed(self, result: InvocationResult, batch_ids: set[str]) -> set[str]:
        if not result.ok:
            return set(batch_ids)
        if not self.mapping.report_batch_item_failures:
            return set()
        return failed_message_ids(result.response, batch_ids)

    def _delete(self, messages: Iterable[dict[str, Any]]) -> None:
        pending = list(messages)
        for start in range(0, len(pending), SQS_MAX_RECEIVE):
            chunk = pending[start : start + SQS_MAX_RECEIVE]
            response = self.sqs.delete_message_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            self.stats.add(deleted=len(response.get("Successful", [])))

    def _release(self, carried: list[dict[str, Any]]) -> None:
        """On stop, hand carried records back to the queue at once rather than after their
        visibility timeout."""
        for start in range(0, len(carried), SQS_MAX_RECEIVE):
            chunk = carried[start : start + SQS_MAX_RECEIVE]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )
