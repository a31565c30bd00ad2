"""`sluice dlq ls|show|redrive QUEUE`: dead letters with the reasons sluice attached
(`sluice-*` message attributes, docs/bad-input.md#dead-letter-attributes), and redrive.

Redrive sends each chosen message's body unchanged to the queue whose redrive policy names the
DLQ (so its envelope id is kept and the router's ledger still deduplicates), in the order the DLQ
returns them (FIFO: per group, with the message's own MessageGroupId and deduplication id), and
deletes it from the DLQ only after the send succeeded. A crash between the two leaves the message
in both; the second copy carries the same envelope id, which the ledger recognises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ops.target import Target
from runtime import codec

LISTING_VISIBILITY_S = 30  # messages stay hidden this long while one command walks the queue


class DlqError(RuntimeError):
    """The queue is not a dead-letter queue of this environment, or a message is not there."""


@dataclass(frozen=True)
class Queues:
    dlq_url: str
    source_url: str
    fifo: bool


def resolve(target: Target, name: str) -> Queues:
    sqs = target.client("sqs")
    by_arn: dict[str, str] = {}
    policies: dict[str, str] = {}
    for url in target.queue_urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"])[
            "Attributes"
        ]
        by_arn[attributes["QueueArn"]] = url
        if "RedrivePolicy" in attributes:
            policies[json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]] = url
    for arn, url in by_arn.items():
        if name in (url, url.rsplit("/", 1)[-1]):
            if arn not in policies:
                raise DlqError(
                    f"{name} is not a dead-letter queue of {target.name} (no queue redrives to it)"
                )
            return Queues(dlq_url=url, source_url=policies[arn], fifo=url.endswith(".fifo"))
    known = sorted(by_arn[arn].rsplit("/", 1)[-1] for arn in policies)
    raise DlqError(f"no queue {name} in {target.name}; its dead-letter queues: {', '.join(known)}")


def _receive(target: Target, url: str, visibility_s: int) -> Iterator[dict[str, Any]]:
    sqs = target.client("sqs")
    while True:
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return
        yield from messages


def _release(target: Target, url: str, messages: list[dict[str, Any]]) -> None:
    """Make messages visible again at once."""
    sqs = target.client("sqs")
    for start in range(0, len(messages), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages[start : start + 10])
        ]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)


def describe(message: dict[str, Any]) -> dict[str, Any]:
    attributes = {
        name: value.get("StringValue", value.get("BinaryValue"))
        for name, value in message.get("MessageAttributes", {}).items()
    }
    try:
        envelope_id = json.loads(message["Body"]).get("id")
    except (ValueError, AttributeError):
        envelope_id = None
    system = message.get("Attributes", {})
    return {
        "message_id": message["MessageId"],
        "envelope_id": envelope_id,
        "reason": attributes.get(codec.ATTR_REASON),
        "step": attributes.get(codec.ATTR_STEP),
        "attempts": attributes.get(codec.ATTR_ATTEMPTS),
        "error": attributes.get(codec.ATTR_ERROR),
        "detail": attributes.get(codec.ATTR_DETAIL),
        "source": attributes.get(codec.ATTR_SOURCE),
        "group": system.get("MessageGroupId"),
        "receive_count": int(system.get("ApproximateReceiveCount", 0)),
        "sent_at_ms": int(system.get("SentTimestamp", 0)),
    }


def list_messages(target: Target, queues: Queues) -> list[dict[str, Any]]:
    messages = list(_receive(target, queues.dlq_url, LISTING_VISIBILITY_S))
    _release(target, queues.dlq_url, messages)
    return [describe(m) for m in messages]


def show(target: Target, queues: Queues, wanted: str) -> dict[str, Any]:
    messages = list(_receive(target, queues.dlq_url, LISTING_VISIBILITY_S))
    try:
        for message in messages:
            summary = describe(message)
            if wanted in (summary["message_id"], summary["envelope_id"]):
                return {
                    **summary,
                    "body": message["Body"],
                    "message_attributes": message.get("MessageAttributes", {}),
                }
    finally:
        _release(target, queues.dlq_url, messages)
    raise DlqError(f"no message {wanted} (message id or envelope id) in {queues.dlq_url.rsplit('/', 1)[-1]}")


def _send_kwargs(queues: Queues, message: dict[str, Any]) -> dict[str, Any]:
    kept = {
        name: value
        for name, value in message.get("MessageAttributes", {}).items()
        if not name.startswith(codec.ATTR_PREFIX)
    }
    kwargs: dict[str, Any] = {"QueueUrl": queues.source_url, "MessageBody": message["Body"]}
    if kept:
        kwargs["MessageAttributes"] = kept
    if queues.fifo:
        system = message["Attributes"]
        kwargs["MessageGroupId"] = system["MessageGroupId"]
        kwargs["MessageDeduplicationId"] = system.get("MessageDeduplicationId") or message["MessageId"]
    return kwargs


def redrive(
    target: Target, queues: Queues, *, reason: str | None, maximum: int | None, dry_run: bool
) -> dict[str, Any]:
    """Send the chosen messages back to the source queue; delete each only after its send."""
    sqs = target.client("sqs")
    hidden = sqs.get_queue_attributes(
        QueueUrl=queues.dlq_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )
    in_flight_before = int(hidden["Attributes"].get("ApproximateNumberOfMessagesNotVisible", 0))
    messages = list(_receive(target, queues.dlq_url, LISTING_VISIBILITY_S * 4))
    chosen = [m for m in messages if reason is None or describe(m)["reason"] == reason]
    if maximum is not None:
        chosen = chosen[:maximum]
    chosen_ids = {m["MessageId"] for m in chosen}
    moved: list[dict[str, Any]] = []
    try:
        if not dry_run:
            for message in chosen:
                sqs.send_message(**_send_kwargs(queues, message))
                sqs.delete_message(QueueUrl=queues.dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved.append(describe(message))
    finally:
        left = [m for m in messages if m["MessageId"] not in chosen_ids or dry_run]
        left += [m for m in chosen if not dry_run and m["MessageId"] not in {d["message_id"] for d in moved}]
        _release(target, queues.dlq_url, left)
    return {
        "dlq": queues.dlq_url.rsplit("/", 1)[-1],
        "to": queues.source_url.rsplit("/", 1)[-1],
        "dry_run": dry_run,
        "matched": [describe(m) for m in chosen] if dry_run else moved,
        "redriven": len(moved),
        "left_in_dlq": len(messages) - len(moved),
        # Letters another reader held when this started were not seen: run again once they are back.
        "in_flight_not_seen": in_flight_before,
    }
