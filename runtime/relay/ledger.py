"""Delivery records: one create-only item per delivered stream record in the pipeline's ledger
table, under the relay's own key prefix (`relay#<eventID>`), written right after the API's 2xx
and before the message is deleted. A message received again (a crash before its delete, a
duplicate past FIFO's five-minute dedup window) whose record exists is deleted without a call.
Items expire after the dedup horizon.
"""

from __future__ import annotations

import time
from typing import Any

from runtime.config import RelaySettings

KEY_PREFIX = "relay#"
DELIVERY_SORT_VALUE = "delivery"


class DeliveryLedger:
    def __init__(self, dynamodb: Any, settings: RelaySettings) -> None:
        self._dynamodb = dynamodb
        self._table = settings.ledger_table
        self._partition_key = settings.ledger_partition_key
        self._sort_key = settings.ledger_sort_key
        self._ttl_attribute = settings.ledger_ttl_attribute
        self._ttl_s = settings.ledger_ttl_s

    def _key(self, event_id: str) -> dict[str, dict[str, str]]:
        key = {self._partition_key: {"S": f"{KEY_PREFIX}{event_id}"}}
        if self._sort_key:
            key[self._sort_key] = {"S": DELIVERY_SORT_VALUE}
        return key

    def delivered(self, event_id: str) -> bool:
        response = self._dynamodb.get_item(
            TableName=self._table,
            Key=self._key(event_id),
            ConsistentRead=True,
            ProjectionExpression="#pk",
            ExpressionAttributeNames={"#pk": self._partition_key},
        )
        return "Item" in response

    def record_delivery(self, event_id: str, status: int) -> bool:
        """Create the delivery record; False when it existed already (never overwritten)."""
        now = time.time()
        item = {
            **self._key(event_id),
            "kind": {"S": "relay-delivery"},
            "status": {"N": str(status)},
            "delivered_at": {"N": f"{now:.3f}"},
            self._ttl_attribute: {"N": str(int(now) + self._ttl_s)},
        }
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": self._partition_key},
            )
        except self._dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True
