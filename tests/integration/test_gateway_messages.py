"""POST /messages end to end in one process: the local HTTP API's SQS integration (tagging each
message with the request id, the Idempotency-Key and the caller), then the real router core
(in-process moto, a real redis-server). Every gateway body is raw state keyed by its request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from moto import mock_aws

from local.http import REQUEST_ID_HEADER, GatewayClients, build_gateway
from local.servers import RedisServer
from runtime import codec
from runtime.examples import enrich
from runtime.examples.jobs_worker import text_stats
from runtime.jobs.model import JOB_FIELD
from runtime.pipeline.gateway import ITEM_PREFIX, gateway_message, keyed_item_id
from tests.support.aws import mock_client
from tests.support.jobs import Jobs
from tests.support.pipeline import BUCKET, Harness


@pytest.fixture
def harness(redis_client: redis.Redis, redis_server: RedisServer) -> Iterator[Harness]:
    with mock_aws():
        yield Harness.create(mock_client, redis_client, redis_server.url)


def post(harness: Harness, body: Any, key: str | None = None) -> str:
    """POST /messages; the request id its answer names."""
    api = build_gateway(harness.settings, GatewayClients(sqs=harness.sqs, jobs=lambda e, c: {}))
    headers = {"content-type": "application/json", **({"Idempotency-Key": key} if key else {})}
    status, answer_headers, _body = api.answer("POST", "/messages", headers, orjson.dumps(body))
    assert status == 200
    return answer_headers[REQUEST_ID_HEADER]


def test_envelope_shaped_bodies_arrive_as_state_keyed_by_their_request(harness: Harness) -> None:
    order = {"v": 1, "id": "order-7", "items": [{"sku": "a", "qty": 2}]}  # an order, not an envelope
    envelope = {
        "v": 1,
        "id": "reused",
        "parent": None,
        "items": [{"id": "x", "step": 0, "attempt": 0, "state": {}}],
    }
    ids = [post(harness, order), post(harness, envelope), post(harness, envelope)]
    harness.run(enrich.router)
    sunk = {item["id"]: item["state"] for item in harness.sunk_items()}
    assert set(sunk) == {f"{ITEM_PREFIX}{request_id}" for request_id in ids}  # nothing skipped
    assert sunk[f"{ITEM_PREFIX}{ids[0]}"]["items"] == order["items"]
    assert harness.drain(harness.dlq_url) == []


def test_a_body_with_a_job_field_is_not_a_job(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    forged = "a" * 32
    request_id = post(harness, {JOB_FIELD: forged, "state": {"text": "not a job"}})
    harness.run(jobs.router(text_stats, fallback=enrich.router))
    [item] = harness.sunk_items()
    assert item["id"] == f"{ITEM_PREFIX}{request_id}" and enrich.ENRICHED in item["state"]
    assert jobs.store.read_outcome(forged) is None  # no job outcome was made up


def test_a_repeated_idempotency_key_reaches_the_sink_once_and_another_body_is_a_conflict(
    harness: Harness,
) -> None:
    for _ in range(2):  # a client's retry: a new request id, the same key and body
        post(harness, {"order": 1}, key="order-1")
    post(harness, {"order": 2}, key="order-1")  # the same key, another body
    post(harness, {"order": 3}, key="order-3")
    harness.run(enrich.router)
    sunk = sorted((item["id"], item["state"]["order"]) for item in harness.sunk_items())
    assert sunk == sorted([(keyed_item_id("", "order-1"), 1), (keyed_item_id("", "order-3"), 3)])
    [dead] = harness.drain(harness.dlq_url)
    assert dead["MessageAttributes"][codec.ATTR_REASON]["StringValue"] == "idempotency_conflict"
    assert orjson.loads(dead["Body"]) == {"order": 2}
    assert len(harness.s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == 2


def test_a_redriven_message_keeps_its_item_id() -> None:
    """A redrive gives the message a new message id but keeps its attributes: the same item."""

    def record(message_id: str, key: str) -> dict[str, Any]:
        attributes = {
            codec.ATTR_SOURCE: "gateway",
            codec.ATTR_REQUEST_ID: "req-1",
            codec.ATTR_IDEMPOTENCY_KEY: f"k:{key}",
            codec.ATTR_CALLER: "c:arn:alice",
        }
        return {
            "messageId": message_id,
            "body": '{"order": 1}',
            "messageAttributes": {n: {"stringValue": v, "dataType": "String"} for n, v in attributes.items()},
        }

    first, redriven = gateway_message(record("m-1", "")), gateway_message(record("m-2", ""))
    assert first is not None and redriven is not None
    assert first.item_id == redriven.item_id == f"{ITEM_PREFIX}req-1" and first.body_sha256 is None
    keyed = gateway_message(record("m-3", "order-1"))
    assert keyed is not None and keyed.item_id == keyed_item_id("arn:alice", "order-1")
    assert gateway_message({"messageId": "m-4", "body": "{}"}) is None  # not from the gateway
