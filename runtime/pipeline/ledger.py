"""The router's ledger of record: one create-only DynamoDB item per incoming envelope.

Table shape (the stateful stack creates it; tests create it with `create_ledger_table`):
partition key `pk` (string) = the envelope id, on-demand billing, TTL attribute `expires_at`
(epoch seconds) = write time + the dedup horizon, so an envelope id stays recognisable for as
long as any copy of it can still arrive (source queue retention + DLQ retention + the ingest
re-send horizon).

Writes per envelope: one conditional `PutItem` that creates the plan — and, when it already
exists, returns the stored plan in the same call (`ReturnValuesOnConditionCheckFailure`) — and,
for plans that send messages, one conditional `UpdateItem` setting `complete`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from runtime.pipeline.plan import Plan

PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
PLAN_ATTRIBUTE = "plan"
COMPLETE_ATTRIBUTE = "complete"
_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """The plan that governs an envelope, and whether this run is the one that created it."""

    plan: Plan
    created: bool


class Ledger:
    def __init__(self, dynamodb: Any, table: str, *, horizon_s: int) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._horizon_s = horizon_s

    def create_or_get(self, envelope_id: str, plan: Plan) -> StoredPlan:
        """Write `plan` unless the envelope has one already; return the plan that governs it."""
        item = {
            PARTITION_KEY: {"S": envelope_id},
            PLAN_ATTRIBUTE: {"B": plan.to_bytes()},
            TTL_ATTRIBUTE: {"N": str(int(time.time()) + self._horizon_s)},
        }
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != _CONDITION_FAILED:
                raise
            stored = exc.response.get("Item") or self._read(envelope_id)
            return StoredPlan(plan=_plan_of(stored), created=False)
        return StoredPlan(plan=plan, created=True)

    def _read(self, envelope_id: str) -> dict[str, Any]:
        response = self._dynamodb.get_item(
            TableName=self._table, Key={PARTITION_KEY: {"S": envelope_id}}, ConsistentRead=True
        )
        return response["Item"]  # type: ignore[no-any-return]

    def mark_complete(self, envelope_id: str) -> None:
        """Set `complete` on an existing plan (never re-creates one that is gone)."""
        self._dynamodb.update_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": envelope_id}},
            UpdateExpression="SET #c = :t",
            ConditionExpression="attribute_exists(#pk)",
            ExpressionAttributeNames={"#c": COMPLETE_ATTRIBUTE, "#pk": PARTITION_KEY},
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )

    def read(self, envelope_id: str) -> Plan | None:
        """The stored plan, if any (for tests and operators)."""
        response = self._dynamodb.get_item(
            TableName=self._table, Key={PARTITION_KEY: {"S": envelope_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return _plan_of(item) if item else None


def _plan_of(item: dict[str, Any]) -> Plan:
    complete = bool(item.get(COMPLETE_ATTRIBUTE, {}).get("BOOL", False))
    return Plan.from_bytes(item[PLAN_ATTRIBUTE]["B"], complete=complete)


def create_ledger_table(dynamodb: Any, table: str) -> None:
    """Create the ledger table the way the stateful stack does (for tests and the local runtime)."""
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
