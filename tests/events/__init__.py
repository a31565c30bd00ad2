"""Canonical Lambda event fixtures (the shapes AWS documents), and records built from them.

`sqs_record(message, queue_arn)` turns a message from `ReceiveMessage` into a Lambda SQS
record by filling the canonical record's fields, so every test feeds handlers the real shape.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import orjson

EVENTS = Path(__file__).parent


@functools.cache
def _load(name: str) -> dict[str, Any]:
    return orjson.loads((EVENTS / f"{name}.json").read_bytes())  # type: ignore[no-any-return]


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of `tests/events/<name>.json`."""
    return copy.deepcopy(_load(name))


def sqs_record(message: dict[str, Any], queue_arn: str, *, fifo: bool = False) -> dict[str, Any]:
    record = load_event("sqs_fifo" if fifo else "sqs_standard")["Records"][0]
    record.update(
        messageId=message["MessageId"],
        receiptHandle=message["ReceiptHandle"],
        body=message["Body"],
        md5OfBody=message.get("MD5OfBody", ""),
        eventSourceARN=queue_arn,
        attributes=dict(message.get("Attributes", {})),
        messageAttributes={
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
    )
    return record


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}
