"""The relay function's core: stream INSERT records -> one FIFO message each, in stream order.

Each message is an envelope with one item whose id (and the envelope's, and the FIFO dedup id)
is the stream record's `eventID`, and whose state is the NEW_IMAGE as plain JSON; the message
group is the record's partition-key value, so the drain keeps per-key order.

Order is why a failure stops the batch: Lambda retries a stream batch from the lowest reported
sequence number, so every later record is sent again anyway, and sending one of them now would
put it ahead of the failed one. A batch never holds two records of one group, so a partially
failed `SendMessageBatch` can never have delivered a record behind a failed group-mate. Records
already sent and sent again on retry carry the same dedup id (SQS drops them within five
minutes), and past that window the drain's delivery ledger still calls the API only once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runtime import codec
from runtime.errors import SluiceError
from runtime.relay.errors import StreamRecordError
from runtime.relay.filters import is_relayed
from runtime.relay.images import attribute_to_plain, image_to_plain

SEND_BATCH_MAX_ENTRIES = 10
# A FIFO group id: up to 128 characters of alphanumerics and punctuation.
_VALID_GROUP_ID = re.compile(r"^[A-Za-z0-9!-/:-@\[-`{-~]{1,128}$")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    sequence_number: str
    event_id: str
    group_id: str
    body: bytes


@dataclass
class RelayResult:
    sent: int = 0
    skipped: int = 0
    failed_sequence_number: str | None = None
    failure: str | None = None

    def batch_item_failures(self) -> list[dict[str, str]]:
        if self.failed_sequence_number is None:
            return []
        return [{"itemIdentifier": self.failed_sequence_number}]


@dataclass
class _Batch:
    messages: list[OutgoingMessage] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)
    size: int = 0

    def accepts(self, message: OutgoingMessage, max_bytes: int) -> bool:
        return (
            len(self.messages) < SEND_BATCH_MAX_ENTRIES
            and message.group_id not in self.groups
            and self.size + len(message.body) <= max_bytes
        )

    def add(self, message: OutgoingMessage) -> None:
        self.messages.append(message)
        self.groups.add(message.group_id)
        self.size += len(message.body)


def group_id_for(value: Any) -> str:
    """The FIFO group of a partition-key value: the value itself when SQS accepts it as a group
    id, else a fixed-length digest of it (same value, same group)."""
    text = value if isinstance(value, str) else codec.dumps(value).decode()
    if _VALID_GROUP_ID.match(text):
        return text
    return "h-" + hashlib.sha256(text.encode()).hexdigest()


def outgoing_message(record: Mapping[str, Any], group_key_field: str, max_bytes: int) -> OutgoingMessage:
    """The FIFO message for one INSERT record; StreamRecordError/MessageTooLarge if it has none."""
    change = record.get("dynamodb") or {}
    sequence_number, event_id = change.get("SequenceNumber"), record.get("eventID")
    if not isinstance(sequence_number, str) or not isinstance(event_id, str) or not event_id:
        raise StreamRecordError("stream record has no eventID or SequenceNumber")
    image = change.get("NewImage")
    if not isinstance(image, Mapping):
        raise StreamRecordError(f"record {event_id} has no NewImage (stream view type must include it)")
    key_value = (change.get("Keys") or {}).get(group_key_field) or image.get(group_key_field)
    if key_value is None:
        raise StreamRecordError(f"record {event_id} has no {group_key_field!r} to group by")
    item = codec.Item(id=event_id, step=0, attempt=0, state=image_to_plain(image))
    body = codec.encode(codec.Envelope(id=event_id, parent=None, items=(item,)))
    codec.check_message(body, limit=max_bytes)
    return OutgoingMessage(sequence_number, event_id, group_id_for(attribute_to_plain(key_value)), body)


def _batches(
    records: Sequence[Mapping[str, Any]], group_key_field: str, max_bytes: int, result: RelayResult
) -> Iterator[list[OutgoingMessage]]:
    batch = _Batch()
    for record in records:
        if not is_relayed(record):
            result.skipped += 1
            continue
        try:
            message = outgoing_message(record, group_key_field, max_bytes)
        except SluiceError as exc:
            if batch.messages:
                yield batch.messages
            result.failed_sequence_number = str((record.get("dynamodb") or {}).get("SequenceNumber", ""))
            result.failure = f"{type(exc).__name__}: {exc}"
            return
        if not batch.accepts(message, max_bytes):
            yield batch.messages
            batch = _Batch()
        batch.add(message)
    if batch.messages:
        yield batch.messages


def _send(sqs: Any, queue_url: str, batch: list[OutgoingMessage]) -> int | None:
    """Send one batch; the index of its first failed entry, or None when all were accepted."""
    entries = [
        {
            "Id": str(index),
            "MessageBody": message.body.decode(),
            "MessageGroupId": message.group_id,
            "MessageDeduplicationId": message.event_id,
        }
        for index, message in enumerate(batch)
    ]
    try:
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except (ClientError, BotoCoreError):
        return 0
    failed = [int(entry["Id"]) for entry in response.get("Failed", [])]
    return min(failed) if failed else None


def relay_records(
    records: Sequence[Mapping[str, Any]],
    *,
    sqs: Any,
    queue_url: str,
    group_key_field: str,
    max_message_bytes: int = codec.SQS_MAX_MESSAGE_BYTES,
) -> RelayResult:
    """Send every INSERT in `records` to the FIFO queue, in order, stopping at the first failure
    (see the module docs); the result names the record Lambda must retry from."""
    result = RelayResult()
    for batch in _batches(records, group_key_field, max_message_bytes, result):
        first_failed = _send(sqs, queue_url, batch)
        if first_failed is not None:
            result.sent += first_failed
            result.failed_sequence_number = batch[first_failed].sequence_number
            result.failure = "SendMessageBatch failed"
            return result
        result.sent += len(batch)
    return result


@dataclass(frozen=True, slots=True)
class StreamRelay:
    """The relay function's core bound to its queue and client (`build_relay`)."""

    sqs: Any
    queue_url: str
    group_key_field: str
    max_message_bytes: int = codec.SQS_MAX_MESSAGE_BYTES

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> RelayResult:
        return relay_records(
            records,
            sqs=self.sqs,
            queue_url=self.queue_url,
            group_key_field=self.group_key_field,
            max_message_bytes=self.max_message_bytes,
        )
