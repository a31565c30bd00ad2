"""Canonical Lambda events (tests/events/*.json, the shapes AWS documents), and records built
from them.

`load_event(name)` is a fresh copy of one; `sqs_record(message, queue_arn)` turns a message from
`ReceiveMessage` into a Lambda SQS record by filling the canonical record's fields, so every test
feeds handlers the real shape.
"""

from __future__ import annotations

import base64
import copy
import functools
from pathlib import Path
from typing import Any

import orjson

EVENTS = Path(__file__).resolve().parents[1] / "events"


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


def http_api_event(
    name: str,
    *,
    method: str | None = None,
    path: str | None = None,
    route_key: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The canonical HTTP API request `name` (payload format 2.0: `http_api_v2_iam`, `_jwt`,
    `_binary`) with what the test sets: the route, a body (base64 when it is not UTF-8, as API
    Gateway sends it), extra headers (lower-cased, as API Gateway delivers them)."""
    event = load_event(name)
    context = event["requestContext"]
    if method is not None:
        context["http"]["method"] = method
    if path is not None:
        event["rawPath"] = context["http"]["path"] = path
    if route_key is not None:
        event["routeKey"] = context["routeKey"] = route_key
    if body is not None:
        try:
            event["body"], event["isBase64Encoded"] = body.decode(), False
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    event["headers"].update({header.lower(): value for header, value in (headers or {}).items()})
    if path_parameters is not None:
        event["pathParameters"] = path_parameters
    return event
