"""Part senders: where packed parts go, an SQS queue (SendMessageBatch) or, for benchmarks,
nowhere.

A part sender either accepts every part it is given or raises; the loader acknowledges a part only
after `send` returned. The SQS sender groups parts into calls of at most 10 entries and 1 MiB
and retries the entries a call reports failed, with exponential backoff and jitter.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from runtime.codec import SQS_MAX_MESSAGE_BYTES, PackedPart, billing_units
from runtime.errors import EnvironmentFailure, TransientError
from runtime.ingest.failures import SendRejected, aws_failure, code_is_environmental, code_is_transient

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = SQS_MAX_MESSAGE_BYTES


__all__ = ["DiscardingPartSender", "PartSender", "SendRejected", "SqsPartSender", "check_part_sender"]


class PartSender(Protocol):
    calls: int
    billing_units: int
    ordered: bool  # parts must arrive in the order they are sent (a FIFO queue)

    def send(self, parts: Sequence[PackedPart]) -> None: ...


class DiscardingPartSender:
    """Accepts everything and keeps nothing (benchmarks of the loader core)."""

    ordered = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.billing_units = 0
        self.parts = 0

    def send(self, parts: Sequence[PackedPart]) -> None:
        with self._lock:  # runs send from several threads
            for group in call_groups(parts):
                self.calls += 1
                self.billing_units += group_billing_units(group)
            self.parts += len(parts)


def check_part_sender(sender: PartSender, max_message_bytes: int) -> None:
    """Once per run: a queue that cannot take what the loader packs stops it at once."""
    if isinstance(sender, SqsPartSender):
        sender.check_limit(max_message_bytes)


def call_groups(parts: Sequence[PackedPart]) -> list[list[PackedPart]]:
    """Consecutive groups of at most 10 parts and 1 MiB of payload (one SendMessageBatch each)."""
    groups: list[list[PackedPart]] = []
    current: list[PackedPart] = []
    size = 0
    for part in parts:
        if current and (len(current) == MAX_BATCH_ENTRIES or size + part.size > MAX_BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(part)
        size += part.size
    if current:
        groups.append(current)
    return groups


def group_billing_units(group: Sequence[PackedPart]) -> int:
    """A SendMessageBatch request is billed per started 64 KiB of its whole payload."""
    return billing_units(sum(part.size for part in group))


class SqsPartSender:
    """SendMessageBatch to one queue; FIFO when `group_id` is given (dedup id = envelope id)."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        group_id: str | None = None,
        max_attempts: int = 6,
        backoff_base_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.queue_url = queue_url
        self.group_id = group_id
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._sleep = sleep
        self.ordered = group_id is not None
        self._counts = threading.Lock()  # a loader sends from several threads
        self.calls = 0
        self.billing_units = 0

    def check_limit(self, max_message_bytes: int) -> None:
        """The queue must take what the loader packs: a queue whose MaximumMessageSize is
        below it would refuse every large part forever (an environment-wide failure)."""
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"]
            )["Attributes"]
        except (BotoCoreError, ClientError) as exc:
            raise aws_failure(exc, "GetQueueAttributes") from exc
        limit = int(attributes["MaximumMessageSize"])
        if limit < max_message_bytes:
            raise EnvironmentFailure(
                f"queue {self.queue_url} takes messages up to {limit} bytes (MaximumMessageSize), "
                f"below queues.max_message_bytes = {max_message_bytes}: set the queue's limit (the "
                "stacks do) or lower the setting"
            )

    def _entry(self, slot: int, part: PackedPart) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": str(slot), "MessageBody": part.body.decode()}
        if self.group_id is not None:
            entry["MessageGroupId"] = self.group_id
            entry["MessageDeduplicationId"] = part.id
        return entry

    def send(self, parts: Sequence[PackedPart]) -> None:
        for group in call_groups(parts):
            self._send_group(group)

    def _send_group(self, group: list[PackedPart]) -> None:
        pending = dict(enumerate(group))
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(random.uniform(0, self._backoff_base_s * 2**attempt))
            with self._counts:
                self.calls += 1
                self.billing_units += group_billing_units(list(pending.values()))
            try:
                response = self._client.send_message_batch(
                    QueueUrl=self.queue_url, Entries=[self._entry(s, p) for s, p in pending.items()]
                )
            except (BotoCoreError, ClientError) as exc:
                # boto3's standard retries already ran: transient, the environment, or this batch.
                raise aws_failure(exc, "SendMessageBatch") from exc
            failed = response.get("Failed") or []
            for failure in failed:
                code = str(failure.get("Code", ""))
                refused = pending[int(failure["Id"])].id
                if code_is_environmental(code):
                    raise EnvironmentFailure(f"SQS refused {refused}: {failure}")
                if failure.get("SenderFault") and not code_is_transient(code):
                    raise SendRejected(f"SQS refused {refused}: {failure}")
            pending = {int(f["Id"]): pending[int(f["Id"])] for f in failed}
            if not pending:
                return
        ids = ", ".join(p.id for p in pending.values())
        raise TransientError(f"SQS kept failing to accept {ids} after {self._max_attempts} attempts")
