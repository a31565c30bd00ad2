"""SQS output: batched sends (10 entries, bounded bytes per request) and visibility bounces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runtime import codec
from runtime.kill import kill_point
from runtime.observability import logger
from runtime.pipeline.plan import Output

SEND_BATCH_ENTRIES = 10
SEND_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send, and which incoming message (`owner`) it belongs to."""

    queue_url: str
    output: Output
    owner: int
    group_id: str | None = None  # FIFO queues only: MessageGroupId (dedup id = the output id)

    def entry(self, entry_id: str) -> dict[str, Any]:
        planned = self.output.planned
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": self.output.body.decode()}
        if self.group_id is not None:
            entry["MessageGroupId"] = self.group_id
            entry["MessageDeduplicationId"] = planned.id
        elif planned.delay_s:
            entry["DelaySeconds"] = planned.delay_s
        if self.output.attributes:
            entry["MessageAttributes"] = self.output.attributes
        return entry

    @property
    def size(self) -> int:
        return codec.check_message(self.output.body, self.output.attributes)


def _chunks(outgoing: Sequence[Outgoing], max_request_bytes: int) -> Iterator[list[Outgoing]]:
    """Consecutive runs of one queue's messages, at most 10 and `max_request_bytes` each."""
    chunk: list[Outgoing] = []
    chunk_bytes = 0
    for message in outgoing:
        size = message.size
        full = len(chunk) == SEND_BATCH_ENTRIES or chunk_bytes + size > max_request_bytes
        if chunk and (full or message.queue_url != chunk[0].queue_url):
            yield chunk
            chunk, chunk_bytes = [], 0
        chunk.append(message)
        chunk_bytes += size
    if chunk:
        yield chunk


def send_all(sqs: Any, outgoing: Sequence[Outgoing], *, max_request_bytes: int) -> set[int]:
    """Send every message in order; return the owners of messages that could not be sent.

    Entries SQS rejects as transient are sent again (same id, same body); an owner with a
    message that still failed is not marked complete, so its redelivery sends again.
    """
    failed_owners: set[int] = set()
    for number, chunk in enumerate(_chunks(outgoing, max_request_bytes)):
        # Once one of an owner's messages failed, its plan is not complete: skip the rest.
        failed_owners |= _send_chunk(sqs, [m for m in chunk if m.owner not in failed_owners])
        if number == 0:
            kill_point("router.after_first_send")
    return failed_owners


def _send_chunk(sqs: Any, chunk: list[Outgoing]) -> set[int]:
    pending = {str(i): message for i, message in enumerate(chunk)}
    for _ in range(SEND_ATTEMPTS):
        if not pending:
            return set()
        queue_url = next(iter(pending.values())).queue_url
        try:
            response = sqs.send_message_batch(
                QueueUrl=queue_url, Entries=[m.entry(entry_id) for entry_id, m in pending.items()]
            )
        except (BotoCoreError, ClientError):  # after botocore's own retries: these owners fail
            logger.exception("SendMessageBatch failed", extra={"queue": queue_url})
            return {message.owner for message in pending.values()}
        failed = response.get("Failed", [])
        permanent = [f for f in failed if f.get("SenderFault")]
        if permanent:
            logger.error("SQS rejected output messages", extra={"failed": permanent})
            return {pending[f["Id"]].owner for f in failed}
        pending = {f["Id"]: pending[f["Id"]] for f in failed}
    return {message.owner for message in pending.values()}


@dataclass(frozen=True, slots=True)
class Bounce:
    receipt_handle: str
    visibility_s: int


def change_visibility(sqs: Any, queue_url: str, bounces: Sequence[Bounce]) -> None:
    """Set each message's visibility (best effort: a bounce that fails is retried by SQS anyway)."""
    for start in range(0, len(bounces), SEND_BATCH_ENTRIES):
        chunk = bounces[start : start + SEND_BATCH_ENTRIES]
        entries = [
            {"Id": str(i), "ReceiptHandle": b.receipt_handle, "VisibilityTimeout": b.visibility_s}
            for i, b in enumerate(chunk)
        ]
        try:
            response = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (BotoCoreError, ClientError):
            logger.exception("visibility change failed; SQS's own visibility timeout applies")
            continue
        if response.get("Failed"):
            logger.warning("visibility change failed", extra={"failed": response["Failed"]})
