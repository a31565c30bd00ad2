"""The router's ledger of record: one create-only DynamoDB item per incoming envelope.

Table shape (the stateful stack creates it; tests create it with `create_ledger_table`):
partition key `pk` (string) = the envelope id, on-demand billing, TTL attribute `expires_at`
(epoch seconds) = write time + the dedup horizon, so an envelope id stays recognisable for as
long as any copy of it can still arrive (source queue retention + DLQ retention + the ingest
re-send horizon).

A plan holds its outputs' bodies (`runtime.pipeline.plan`). While the encoded plan fits
`INLINE_MAX_BYTES` it is stored inline (`plan`, binary); a larger one is written first to a
create-only S3 object (`If-None-Match: *`, keyed by the envelope id and the plan's hash, so two
different plans never share a key) and the item records its key (`plan_ref`) and hash
(`plan_sha`). The create-only item decides which plan governs; an S3 object of a plan that
lost the race is never read.

Reads: one consistent `BatchGetItem` per batch before any user code runs (ledger first).
Writes per envelope: one conditional `PutItem` that creates the plan — and, when it already
exists, returns the stored plan in the same call (`ReturnValuesOnConditionCheckFailure`) — and,
for plans that send messages, one conditional `UpdateItem` setting `complete`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from runtime.declarations.names import LEDGER_PARTITION_KEY, LEDGER_TTL_ATTRIBUTE
from runtime.errors import TransientError
from runtime.pipeline.errors import PlanTooLarge
from runtime.pipeline.plan import Plan, sha256_hex
from runtime.pipeline.result_store import S3ResultStore

PARTITION_KEY = LEDGER_PARTITION_KEY
TTL_ATTRIBUTE = LEDGER_TTL_ATTRIBUTE
PLAN_ATTRIBUTE = "plan"
PLAN_REF_ATTRIBUTE = "plan_ref"
PLAN_SHA_ATTRIBUTE = "plan_sha"
COMPLETE_ATTRIBUTE = "complete"
# DynamoDB's item limit is 400 KB, attribute names and the key included: keep a margin.
INLINE_MAX_BYTES = 380_000
BATCH_GET_KEYS = 100
BATCH_GET_ROUNDS = 8
_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """The plan that governs an envelope, and whether this run is the one that created it."""

    plan: Plan
    created: bool


class Ledger:
    """`spill` stores plans over the inline limit (an `S3ResultStore` under the ledger's prefix)."""

    def __init__(
        self, dynamodb: Any, table: str, *, horizon_s: int, spill: S3ResultStore | None = None
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._horizon_s = horizon_s
        self._spill = spill
        self.inline_bytes = 0
        self.spill_bytes = 0

    def _expires_at(self) -> dict[str, str]:
        return {"N": str(int(time.time()) + self._horizon_s)}

    def create_or_get(self, envelope_id: str, plan: Plan) -> StoredPlan:
        """Write `plan` unless the envelope has one already; return the plan that governs it."""
        item = {
            PARTITION_KEY: {"S": envelope_id},
            TTL_ATTRIBUTE: self._expires_at(),
            **self._plan_fields(envelope_id, plan),
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
            stored = exc.response.get("Item") or self._get(envelope_id)
            if stored is None:  # expired between the two calls: nothing governs, try again later
                raise TransientError(f"the plan of {envelope_id} vanished") from exc
            return StoredPlan(plan=self._plan_of(envelope_id, stored), created=False)
        return StoredPlan(plan=plan, created=True)

    def _plan_fields(self, envelope_id: str, plan: Plan) -> dict[str, Any]:
        data = plan.to_bytes()
        if len(data) + len(envelope_id) <= INLINE_MAX_BYTES:
            self.inline_bytes += len(data)
            return {PLAN_ATTRIBUTE: {"B": data}}
        if self._spill is None:
            raise PlanTooLarge(
                f"the plan of {envelope_id} is {len(data)} bytes and no bucket is set to hold it"
            )
        digest = sha256_hex(data)
        name = f"{envelope_id}/{digest}"
        self._spill.write(name, data)
        self.spill_bytes += len(data)
        self.inline_bytes += len(name) + len(digest)
        return {PLAN_REF_ATTRIBUTE: {"S": name}, PLAN_SHA_ATTRIBUTE: {"S": digest}}

    def _get(self, envelope_id: str) -> dict[str, Any] | None:
        response = self._dynamodb.get_item(
            TableName=self._table, Key={PARTITION_KEY: {"S": envelope_id}}, ConsistentRead=True
        )
        return response.get("Item")  # type: ignore[no-any-return]

    def read_many(self, envelope_ids: Sequence[str]) -> dict[str, Plan]:
        """The stored plans of `envelope_ids` that have one (consistent reads, batched)."""
        found: dict[str, Plan] = {}
        unique = list(dict.fromkeys(envelope_ids))
        for start in range(0, len(unique), BATCH_GET_KEYS):
            keys = [{PARTITION_KEY: {"S": e}} for e in unique[start : start + BATCH_GET_KEYS]]
            for item in self._batch_get(keys):
                envelope_id = item[PARTITION_KEY]["S"]
                found[envelope_id] = self._plan_of(envelope_id, item)
        return found

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(BATCH_GET_ROUNDS):
            response = self._dynamodb.batch_get_item(RequestItems=request)
            items.extend(response.get("Responses", {}).get(self._table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
            time.sleep(0.05 * (2**attempt))
        raise TransientError("the ledger kept leaving keys unprocessed")

    def mark_complete(self, envelope_id: str) -> None:
        """Set `complete` on an existing plan (never re-creates one that is gone)."""
        self._set_existing(envelope_id, COMPLETE_ATTRIBUTE, {"BOOL": True})

    def rearm(self, envelope_id: str) -> None:
        """Restart an existing plan's TTL from now (a redrive must stay recognisable)."""
        self._set_existing(envelope_id, TTL_ATTRIBUTE, self._expires_at())

    def _set_existing(self, envelope_id: str, attribute: str, value: dict[str, Any]) -> None:
        self._dynamodb.update_item(
            TableName=self._table,
            Key={PARTITION_KEY: {"S": envelope_id}},
            UpdateExpression="SET #a = :v",
            ConditionExpression="attribute_exists(#pk)",
            ExpressionAttributeNames={"#a": attribute, "#pk": PARTITION_KEY},
            ExpressionAttributeValues={":v": value},
        )

    def read(self, envelope_id: str) -> Plan | None:
        """The stored plan, if any (for tests and operators)."""
        item = self._get(envelope_id)
        return self._plan_of(envelope_id, item) if item else None

    def _plan_of(self, envelope_id: str, item: dict[str, Any]) -> Plan:
        complete = bool(item.get(COMPLETE_ATTRIBUTE, {}).get("BOOL", False))
        if PLAN_ATTRIBUTE in item:
            return Plan.from_bytes(item[PLAN_ATTRIBUTE]["B"], complete=complete)
        if self._spill is None:
            raise PlanTooLarge(f"the plan of {envelope_id} is in S3 and no bucket is set to read it")
        data = self._spill.read(item[PLAN_REF_ATTRIBUTE]["S"])
        if sha256_hex(data) != item[PLAN_SHA_ATTRIBUTE]["S"]:
            raise TransientError(f"the S3 copy of {envelope_id}'s plan does not match its hash")
        return Plan.from_bytes(data, complete=complete)


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
