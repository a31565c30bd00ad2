"""The router alone: a trivial router over 100-item envelopes, with the real ledger writes
(DynamoDB on the moto server), real Redis and a discarding result store. A transition is one item
through `router()`."""

from __future__ import annotations

import time
from typing import Any

import redis
from moto import mock_aws

from bench.measure import Measurement, Stopwatch
from runtime import codec
from runtime.clients import AWS_CLIENT_CONFIG, new_session
from runtime.config import PipelineSettings, QueueSettings, RedisSettings, Settings
from runtime.pipeline import DiscardingResultStore, PipelineClients, build_pipeline
from runtime.pipeline.ledger import create_ledger_table

ITEMS_PER_ENVELOPE = 100
MESSAGES_PER_BATCH = 100


def trivial_router(state: Any) -> None:
    """Every item is done after one transition."""
    return None


def _record(message_id: str, body: bytes) -> dict[str, Any]:
    """The shape Lambda's SQS event source mapping delivers."""
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body.decode(),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:bench",
        "awsRegion": "us-east-1",
    }


def _batch(batch_no: int) -> list[dict[str, Any]]:
    records = []
    for m in range(MESSAGES_PER_BATCH):
        envelope_id = f"bench-{batch_no}/{m}"
        items = tuple(
            codec.Item(id=f"f{batch_no}-{m}#{i}", step=0, attempt=0, state={"i": i, "name": "x" * 20})
            for i in range(ITEMS_PER_ENVELOPE)
        )
        records.append(_record(f"m-{batch_no}-{m}", codec.encode(codec.Envelope(envelope_id, None, items))))
    return records


def router_alone(redis_url: str, aws_endpoint_url: str | None, batches: int) -> Measurement:
    """`aws_endpoint_url` None: moto in-process (`mock_aws`), whose conditional PutItem is not
    capped by the moto server's HTTP loop (about 300-450 calls/s here)."""
    if aws_endpoint_url is None:
        with mock_aws():
            return _router_alone(redis_url, None, batches, "router:trivial (moto in-process)")
    return _router_alone(redis_url, aws_endpoint_url, batches, "router:trivial (moto server)")


def _router_alone(redis_url: str, aws_endpoint_url: str | None, batches: int, name: str) -> Measurement:
    ddb = new_session().client(
        "dynamodb", endpoint_url=aws_endpoint_url, region_name="us-east-1", config=AWS_CLIENT_CONFIG
    )
    sqs = new_session().client(
        "sqs", endpoint_url=aws_endpoint_url, region_name="us-east-1", config=AWS_CLIENT_CONFIG
    )
    table = f"bench-ledger-{time.monotonic_ns()}"
    create_ledger_table(ddb, table)
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    settings = Settings(redis=RedisSettings(url=redis_url), pipeline=PipelineSettings(ledger_table=table))
    clients = PipelineClients(sqs=sqs, dynamodb=ddb, redis=client, result_store=DiscardingResultStore())
    pipeline = build_pipeline(settings, clients, router=trivial_router)
    prepared = [_batch(b) for b in range(batches)]
    memory_before = int(client.info("memory")["used_memory"])
    transitions = ledger_writes = round_trips = messages = 0
    with Stopwatch() as watch:
        for records in prepared:
            result = pipeline.run(records, remaining_ms=600_000)
            if result.failed_message_ids:
                raise RuntimeError(f"router benchmark: {len(result.failed_message_ids)} messages failed")
            transitions += result.transitions
            ledger_writes += result.ledger_writes
            round_trips += result.redis_round_trips
            messages += result.messages
    memory_growth = int(client.info("memory")["used_memory"]) - memory_before
    return Measurement(
        name=name,
        seconds=watch.seconds,
        files=0,
        records=transitions,
        messages=messages,
        peak_rss_mb=watch.peak_rss_mb,
        extra={
            "transitions_per_s": round(transitions / watch.seconds, 1),
            "ledger_writes_per_message": round(ledger_writes / messages, 3),
            "redis_round_trips_per_message": round(round_trips / messages, 3),
            "redis_bytes_per_million_transitions": round(memory_growth / transitions * 1e6),
        },
    )


FAILING_ITEMS = 2_500
FAILING_RUNS = 3


def failing_router(state: Any) -> None:
    """Every item fails (a transient error: each leaves alone in its own retry envelope)."""
    raise ValueError(f"item {state['i']} cannot be routed: the downstream service refused it")


class CountingSqs:
    """Takes the router's sends and counts them. moto's SQS re-reads every message of a queue
    on each send, so 2,500 sends into one queue cost minutes and would measure moto, not the
    router; the ledger (DynamoDB) and the plan's S3 spill are moto's, in-process."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.messages += len(Entries)
        self.bytes += sum(len(e["MessageBody"].encode()) for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def change_message_visibility_batch(self, **_kwargs: Any) -> dict[str, Any]:
        return {"Successful": [], "Failed": []}


def failing_envelope(redis_url: str, runs: int = FAILING_RUNS) -> Measurement:
    """One loader-sized envelope of FAILING_ITEMS items that all fail: ms per envelope, and
    the bytes its plan costs in the ledger and in the S3 spill (median of `runs`)."""
    with mock_aws():
        ddb = new_session().client("dynamodb", region_name="us-east-1", config=AWS_CLIENT_CONFIG)
        s3 = new_session().client("s3", region_name="us-east-1", config=AWS_CLIENT_CONFIG)
        table, bucket = "bench-ledger-failing", "bench-results-failing"
        create_ledger_table(ddb, table)
        s3.create_bucket(Bucket=bucket)
        client = redis.Redis.from_url(redis_url)
        client.flushall()
        settings = Settings(
            redis=RedisSettings(url=redis_url),
            queues=QueueSettings(state_url="https://sqs.us-east-1.amazonaws.com/000000000000/bench"),
            pipeline=PipelineSettings(ledger_table=table, results_bucket=bucket),
        )
        sqs = CountingSqs()
        clients = PipelineClients(
            sqs=sqs, dynamodb=ddb, redis=client, result_store=DiscardingResultStore(), s3=s3
        )
        pipeline = build_pipeline(settings, clients, router=failing_router)
        timings: list[float] = []
        for run in range(runs):
            items = tuple(
                codec.Item(id=f"f{run}#{i}", step=0, attempt=0, state={"i": i, "name": "x" * 20})
                for i in range(FAILING_ITEMS)
            )
            body = codec.encode(codec.Envelope(f"failing-{run}/0", None, items))
            started = time.perf_counter()
            result = pipeline.run([_record(f"m-failing-{run}", body)], remaining_ms=600_000)
            timings.append(time.perf_counter() - started)
            if result.failed_message_ids or result.outcomes != {"retry": FAILING_ITEMS}:
                raise RuntimeError(f"failing-envelope benchmark: unexpected result {result}")
        item = ddb.get_item(TableName=table, Key={"pk": {"S": "failing-0/0"}})["Item"]
        ledger_bytes = sum(len(name) + _value_bytes(value) for name, value in item.items())
        spill = s3.list_objects_v2(Bucket=bucket, Prefix="ledger/failing-0/0/").get("Contents", [])
    seconds = sorted(timings)[len(timings) // 2]
    return Measurement(
        name=f"router:failing_{FAILING_ITEMS}_items",
        seconds=seconds,
        files=0,
        records=FAILING_ITEMS,
        messages=1,
        extra={
            "ms_per_envelope": round(seconds * 1000, 1),
            "envelope_bytes": len(body),
            "ledger_item_bytes": ledger_bytes,
            "s3_spill_bytes": sum(o["Size"] for o in spill),
            "retry_messages": sqs.messages // runs,
        },
    )


def _value_bytes(value: dict[str, Any]) -> int:
    """Roughly how DynamoDB sizes an attribute value (binary: its bytes; else its text)."""
    inner = next(iter(value.values()))
    return len(inner) if isinstance(inner, bytes) else len(str(inner).encode())
