"""The relay end to end on the moto server and a real redis-server: items written to the source
table -> its stream, polled with the stack's INSERT filter -> the relay handler -> the FIFO queue
-> the drain handler on "schedule ticks" -> the loopback API stub. An outage of several ticks,
then recovery, delivers every INSERT exactly once and in order per group; crashes around the
delivery record are real (a child process exits at a named kill point)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from local.functions import KillPlan, LocalFunction
from local.relay import ApiStub, StreamPoller
from local.servers import MotoServer, RedisServer
from runtime.clients import aws_client
from runtime.config import RedisSettings, RelaySettings, Settings, get_settings, to_environ
from runtime.handlers import drain as drain_handler
from runtime.handlers import relay as relay_handler
from runtime.relay.breaker import BREAKER_KEY
from runtime.relay.drain import IN_FLIGHT_MARGIN_S
from tests.support.aws import AwsClientFactory
from tests.support.events import load_event

pytestmark = pytest.mark.slow

PARAMETER = "/sluice/it/relay/api-key"
API_KEY = "it-key-0f9e"
GROUPS = ("c1", "c2", "c3")
CRASHING_DRAIN_TIMEOUT_S = 3
# A dead run's messages come back after its remaining time plus the in-flight margin.
IN_FLIGHT_WAIT_S = CRASHING_DRAIN_TIMEOUT_S + IN_FLIGHT_MARGIN_S + 0.3


@dataclass
class Relay:
    aws: AwsClientFactory
    stub: ApiStub
    redis: redis.Redis
    poller: StreamPoller
    relay: LocalFunction
    drain: LocalFunction
    fifo_url: str
    dlq_url: str

    def write(self, pk: str, seq: int) -> None:
        self.aws("dynamodb").put_item(
            TableName="source", Item={"pk": {"S": pk}, "sk": {"S": f"{seq:04d}"}, "seq": {"N": str(seq)}}
        )

    def pump_stream(self) -> None:
        while self.poller.poll_once() or self.poller.retrying:
            pass

    def tick(self) -> dict[str, Any]:
        result = self.drain.invoke(load_event("eventbridge_scheduled"))
        assert result.error is None, result.error
        report: dict[str, Any] = result.response
        return report

    def depth(self, url: str) -> int:
        attributes = self.aws("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def delivered_seqs_by_group(self) -> dict[str, list[int]]:
        by_group: dict[str, list[int]] = {}
        for request in self.stub.accepted():
            body = request.json()
            by_group.setdefault(body["pk"], []).append(body["seq"])
        return by_group


def _clear_caches() -> None:
    get_settings.cache_clear()
    aws_client.cache_clear()
    drain_handler._drain.cache_clear()
    relay_handler._relay.cache_clear()


def _provision(aws: AwsClientFactory) -> tuple[str, str, str]:
    dynamodb, sqs = aws("dynamodb"), aws("sqs")
    keys = {
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    stream_arn = dynamodb.create_table(
        TableName="source",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        **keys,
    )["TableDescription"]["LatestStreamArn"]
    dynamodb.create_table(TableName="ledger", **keys)
    dlq_url = sqs.create_queue(QueueName="relay-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    fifo_url = sqs.create_queue(
        QueueName="relay.fifo",
        Attributes={
            "FifoQueue": "true",
            "RedrivePolicy": f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"1000"}}',
        },
    )["QueueUrl"]
    aws("ssm").put_parameter(Name=PARAMETER, Value=API_KEY, Type="SecureString")
    return stream_arn, fifo_url, dlq_url


@pytest.fixture
def relay(
    aws: AwsClientFactory,
    moto: MotoServer,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Relay]:
    stream_arn, fifo_url, dlq_url = _provision(aws)
    with ApiStub() as stub:
        settings = Settings(
            env="it",
            redis=RedisSettings(url=redis_server.url, tls=False),
            relay=RelaySettings(
                fifo_url=fifo_url,
                dlq_url=dlq_url,
                ledger_table="ledger",
                api_url=stub.url,
                api_key_parameter=PARAMETER,
                calls_per_minute=10_000,
                burst_calls=100,
                receive_wait_s=1,
                connect_timeout_s=0.5,
                read_timeout_s=0.5,
                deadline_margin_s=1.5,
                retry_backoff_base_s=0.5,
                retry_backoff_cap_s=1,
                breaker_failure_threshold=2,
                breaker_backoff_base_s=0.3,
                breaker_backoff_cap_s=1,
            ),
        )
        for name, value in to_environ(settings).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        _clear_caches()
        relay_function = LocalFunction(name="relay", timeout_s=10)
        drain_function = LocalFunction(name="drain", timeout_s=6)
        poller = StreamPoller(aws("dynamodbstreams"), stream_arn, relay_function.invoke, batch_size=100)
        try:
            yield Relay(aws, stub, redis_client, poller, relay_function, drain_function, fifo_url, dlq_url)
        finally:
            _clear_caches()


def test_only_inserts_reach_the_queue(relay: Relay) -> None:
    for seq in range(1, 4):
        relay.write("c1", seq)
    dynamodb = relay.aws("dynamodb")
    dynamodb.update_item(  # MODIFY
        TableName="source",
        Key={"pk": {"S": "c1"}, "sk": {"S": "0001"}},
        UpdateExpression="SET touched = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    )
    relay.write("c1", 2)  # overwriting an item is a MODIFY too
    dynamodb.delete_item(TableName="source", Key={"pk": {"S": "c1"}, "sk": {"S": "0003"}})  # REMOVE
    relay.pump_stream()
    assert (relay.poller.stats.polled, relay.poller.stats.filtered_out) == (6, 3)
    assert relay.depth(relay.fifo_url) == 3
    relay.tick()
    assert [r.json()["seq"] for r in relay.stub.accepted()] == [1, 2, 3]
    assert all("touched" not in r.json() for r in relay.stub.accepted())


def test_an_outage_of_several_ticks_then_recovery_delivers_everything_once_in_order(relay: Relay) -> None:
    inserted = {group: list(range(1, 6)) for group in GROUPS}
    for seq in range(1, 6):  # interleaved, as concurrent writers would
        for group in GROUPS:
            relay.write(group, seq)
    relay.pump_stream()
    assert relay.depth(relay.fifo_url) == 15

    relay.stub.set_default(503)
    outage_ticks = 5
    for _ in range(outage_ticks):
        relay.tick()
        time.sleep(0.35)
    calls_during_outage = len(relay.stub.received)
    # The breaker opened after 2 failures; after that, at most one probe per tick.
    assert 2 <= calls_during_outage <= 2 + outage_ticks - 1
    assert relay.redis.hexists(BREAKER_KEY, "open_until")
    assert relay.stub.accepted() == []

    relay.stub.set_default(200)
    deadline = time.monotonic() + 20
    while relay.depth(relay.fifo_url) and time.monotonic() < deadline:
        relay.tick()
        time.sleep(0.3)
    assert relay.depth(relay.fifo_url) == 0 and relay.depth(relay.dlq_url) == 0

    keys = [r.header("Idempotency-Key") for r in relay.stub.accepted()]
    assert len(keys) == len(set(keys)) == 15  # each INSERT accepted exactly once
    assert relay.delivered_seqs_by_group() == inserted  # and in order within its group
    assert all(r.header("x-api-key") == API_KEY for r in relay.stub.received)
    assert not relay.redis.exists(BREAKER_KEY)


def _crashing_drain(step: str) -> LocalFunction:
    """The drain in a child process that dies at `step` on its first invocation only."""
    return LocalFunction(name="drain", timeout_s=CRASHING_DRAIN_TIMEOUT_S, kill=KillPlan(step))


def test_a_crash_between_the_2xx_and_the_delivery_record_resends_under_the_same_key(relay: Relay) -> None:
    relay.write("c1", 1)
    relay.pump_stream()
    relay.drain = _crashing_drain("relay.delivered")
    first = relay.drain.invoke(load_event("eventbridge_scheduled"))
    assert first.error is not None and "137" in first.error
    time.sleep(IN_FLIGHT_WAIT_S)
    relay.tick()
    keys = [r.header("Idempotency-Key") for r in relay.stub.received]
    assert len(keys) == 2 and keys[0] == keys[1]  # the API sees one key twice and can drop one
    assert relay.depth(relay.fifo_url) == 0


def test_a_crash_after_the_delivery_record_deletes_without_a_second_call(relay: Relay) -> None:
    relay.write("c1", 1)
    relay.pump_stream()
    relay.drain = _crashing_drain("relay.recorded")
    first = relay.drain.invoke(load_event("eventbridge_scheduled"))
    assert first.error is not None
    time.sleep(IN_FLIGHT_WAIT_S)
    report = relay.tick()
    assert report["already_delivered"] == 1 and report["api_calls"] == 0
    assert len(relay.stub.received) == 1
    assert relay.depth(relay.fifo_url) == 0


def test_a_record_that_can_never_be_relayed_ends_in_the_failure_destination(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_RELAY__GROUP_KEY_FIELD", "customer")  # only some items have one
    _clear_caches()
    failures: list[tuple[list[dict[str, Any]], str]] = []
    relay.poller = StreamPoller(
        relay.aws("dynamodbstreams"),
        relay.poller._arn,
        relay.relay.invoke,
        retry_attempts=2,
        on_failure=lambda records, reason: failures.append((records, reason)),
    )
    dynamodb = relay.aws("dynamodb")
    for seq, customer in ((1, "a"), (2, None), (3, "a")):
        item = {"pk": {"S": "p"}, "sk": {"S": f"{seq:04d}"}, "seq": {"N": str(seq)}}
        if customer:
            item["customer"] = {"S": customer}
        dynamodb.put_item(TableName="source", Item=item)
    relay.pump_stream()
    stats = relay.poller.stats
    assert (stats.invocations, stats.retries, stats.failed_batches) == (3, 2, 1)
    [(records, _)] = failures
    assert [r["dynamodb"]["NewImage"]["seq"]["N"] for r in records] == ["2", "3"]
    assert relay.depth(relay.fifo_url) == 1  # record 1, sent before the failure, once
