"""Messages from the HTTP API's `POST /messages`: raw state, keyed by the request.

The SQS integration (stacks/gateway.py) tags every message it sends with message attributes set
from the request's context: `sluice-source: gateway`, `sluice-request-id: <API Gateway request
id>`, `sluice-idempotency-key: k:<Idempotency-Key header>` and `sluice-caller: c:<caller>` (the
constant prefixes keep a missing header or caller from making an empty value, which SQS would
refuse). A tagged message is always one raw item whose state is the whole body — never sniffed
as an envelope, never a job, whatever keys it has — and whose id (and envelope id) is

- `gw-<request id>`, or
- `gw-k-<derived id of caller and key>` when the request carried an `Idempotency-Key`: a
  retried POST is then the same envelope to the router's ledger and leases, so it reaches the
  sink once. Its body's sha256 is recorded create-only in the ledger table (`idem#<id>`, kept
  for the dedup horizon); the same key with another body is quarantined `idempotency_conflict`.

These ids keep through a redrive (SQS keeps message attributes; the message id is new).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from runtime import codec
from runtime.declarations.integration import (  # noqa: F401 - the integration's names, read here and by local/http.py
    CALLER_VALUE_PREFIX,
    GATEWAY_SOURCE,
    IAM_CALLER_VARIABLE,
    IDEMPOTENCY_KEY_VARIABLE,
    JWT_CALLER_VARIABLE,
    KEY_VALUE_PREFIX,
    REQUEST_ID_VARIABLE,
    integration_attributes,
)
from runtime.pipeline.ledger import PARTITION_KEY, TTL_ATTRIBUTE
from runtime.pipeline.plan import Failure

SOURCE = GATEWAY_SOURCE
ITEM_PREFIX = "gw-"
IDEMPOTENCY_CONFLICT = "idempotency_conflict"
RECORD_PREFIX = "idem#"
_CONDITION_FAILED = "ConditionalCheckFailedException"
_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def fill_in(
    attributes: Mapping[str, Mapping[str, str]], variables: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """The attributes as API Gateway sends them: each `${name}` replaced by its value ("" when
    the request has none)."""
    return {
        name: {
            **attribute,
            "StringValue": _VARIABLE.sub(lambda m: variables.get(m.group(1), ""), attribute["StringValue"]),
        }
        for name, attribute in attributes.items()
    }


@dataclass(frozen=True, slots=True)
class GatewayMessage:
    """What the integration's attributes say about one message."""

    item_id: str
    body_sha256: str | None  # set when an Idempotency-Key names the item

    def envelope(self, state: Any) -> codec.Envelope:
        item = codec.Item(id=self.item_id, step=0, attempt=0, state=state)
        return codec.Envelope(id=self.item_id, parent=None, items=(item,))


def _attribute(record: Mapping[str, Any], name: str) -> str | None:
    value = (record.get("messageAttributes") or {}).get(name) or {}
    text = value.get("stringValue")
    return text if isinstance(text, str) else None


def gateway_message(record: Mapping[str, Any]) -> GatewayMessage | None:
    """The gateway tags of a Lambda SQS record; None when the gateway did not send it."""
    if _attribute(record, codec.ATTR_SOURCE) != SOURCE:
        return None
    request_id = _attribute(record, codec.ATTR_REQUEST_ID) or record.get("messageId", "")
    key = (_attribute(record, codec.ATTR_IDEMPOTENCY_KEY) or "").removeprefix(KEY_VALUE_PREFIX)
    if not key:
        return GatewayMessage(item_id=f"{ITEM_PREFIX}{request_id}", body_sha256=None)
    caller = (_attribute(record, codec.ATTR_CALLER) or "").removeprefix(CALLER_VALUE_PREFIX)
    digest = hashlib.sha256(str(record.get("body", "")).encode()).hexdigest()
    return GatewayMessage(item_id=keyed_item_id(caller, key), body_sha256=digest)


def keyed_item_id(caller: str, key: str) -> str:
    """The item id an `Idempotency-Key` names, scoped by its caller."""
    return f"{ITEM_PREFIX}k-{codec.derived_id(caller, key)}"


class IdempotencyRecords:
    """Create-only `idem#<item id>` items in the ledger table: the body an Idempotency-Key
    first came with."""

    def __init__(self, dynamodb: Any, table: str, *, horizon_s: int) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._horizon_s = horizon_s

    def conflicts(self, item_id: str, body_sha256: str) -> bool:
        """Record the body for the key (create-only); True when the key came with another."""
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    PARTITION_KEY: {"S": f"{RECORD_PREFIX}{item_id}"},
                    "sha256": {"S": body_sha256},
                    TTL_ATTRIBUTE: {"N": str(int(time.time()) + self._horizon_s)},
                },
                ConditionExpression="attribute_not_exists(#pk) OR sha256 = :h",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ExpressionAttributeValues={":h": {"S": body_sha256}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != _CONDITION_FAILED:
                raise
            return True
        return False


class _Delivery(Protocol):
    gateway: GatewayMessage | None
    envelope: codec.Envelope | None
    quarantine: Failure | None


def quarantine_conflicts(deliveries: Sequence[_Delivery], records: IdempotencyRecords) -> None:
    """A gateway message whose Idempotency-Key first came with another body goes to the DLQ
    under its own message id (the key's envelope id belongs to the first body)."""
    for delivery in deliveries:
        gateway = delivery.gateway
        if gateway is None or gateway.body_sha256 is None or delivery.envelope is None:
            continue
        if records.conflicts(gateway.item_id, gateway.body_sha256):
            delivery.envelope = None
            detail = f"the Idempotency-Key of {gateway.item_id} came first with another body"
            delivery.quarantine = Failure(IDEMPOTENCY_CONFLICT, detail, poison_now=True)
