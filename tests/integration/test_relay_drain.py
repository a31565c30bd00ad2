"""The drain's core against in-process moto (FIFO + DLQ, ledger, SSM), a real redis-server and
the loopback API stub: what each answer does to a message, order within a group, the budget,
the breaker, the key cache. Durations are about a second."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from moto import mock_aws

from local.relay import ApiStub, StubResponse
from runtime import codec
from runtime.config import RelaySettings, Settings
from runtime.relay.api import ApiResponse
from runtime.relay.breaker import BREAKER_KEY
from runtime.relay.drain import Drain, DrainReport, retry_visibility_s
from runtime.relay.ledger import DeliveryLedger
from runtime.relay.wiring import DrainClients, RelayClients, build_drain, build_relay
from tests.support.aws import mock_client
from tests.support.relay import stream_record

pytestmark = pytest.mark.slow

API_KEY = "test-key-never-logged-7f3a"
PARAMETER = "/sluice/test/relay/api-key"
REGION = "us-east-1"


class Env:
    """Everything one drain test needs; `drain()` is the Drain the handler would build (kept, as
    the handler keeps it, until the settings change; overrides build another)."""

    def __init__(self, redis_client: redis.Redis, stub: ApiStub) -> None:
        self.redis = redis_client
        self.stub = stub
        self.sqs = mock_client("sqs")
        self.dynamodb = mock_client("dynamodb")
        self.ssm = mock_client("ssm")
        self.parameter_reads = 0
        self.ssm.meta.events.register("before-call.ssm.GetParameter", self._count_read)
        dlq = self.sqs.create_queue(QueueName="relay-dlq.fifo", Attributes={"FifoQueue": "true"})
        self.dlq_url = dlq["QueueUrl"]
        self.fifo_url = self.sqs.create_queue(QueueName="relay.fifo", Attributes={"FifoQueue": "true"})[
            "QueueUrl"
        ]
        self.dynamodb.create_table(
            TableName="ledger",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        self.ssm.put_parameter(Name=PARAMETER, Value=API_KEY, Type="SecureString")
        self.clients = DrainClients(sqs=self.sqs, dynamodb=self.dynamodb, redis=self.redis, ssm=self.ssm)
        self.settings = self.make_settings()
        self._drain: Drain | None = None

    def _count_read(self, **_: Any) -> None:
        self.parameter_reads += 1

    def make_settings(self, **overrides: Any) -> RelaySettings:
        values: dict[str, Any] = {
            "fifo_url": self.fifo_url,
            "dlq_url": self.dlq_url,
            "ledger_table": "ledger",
            "api_url": self.stub.url,
            "api_key_parameter": PARAMETER,
            "api_key_cache_s": 60,
            "calls_per_minute": 1000,
            "burst_calls": 1000,
            "receive_wait_s": 0,
            "connect_timeout_s": 0.5,
            "read_timeout_s": 0.5,
            "deadline_margin_s": 1.0,
            "retry_backoff_base_s": 1.0,
            "retry_backoff_cap_s": 2,
            "breaker_failure_threshold": 3,
            "breaker_backoff_base_s": 1.0,
            "breaker_backoff_cap_s": 4,
        }
        return RelaySettings(**{**values, **overrides})

    def configure(self, **overrides: Any) -> None:
        """New settings for every later run (and a new drain, as a new deployment would)."""
        self.settings = self.make_settings(**overrides)
        self._drain = None

    def drain(self, **overrides: Any) -> Drain:
        if overrides:
            return build_drain(Settings(relay=self.make_settings(**overrides)), self.clients)
        if self._drain is None:
            self._drain = build_drain(Settings(relay=self.settings), self.clients)
        return self._drain

    def run(self, **overrides: Any) -> DrainReport:
        return self.drain(**overrides).run(lambda: 30.0)

    def enqueue(self, *records: tuple[int, str]) -> None:
        """Relay INSERT records (sequence number, partition key) the way the relay function does."""
        relay = build_relay(Settings(relay=self.settings), RelayClients(sqs=self.sqs))
        result = relay([stream_record(seq, pk, {"seq": seq}) for seq, pk in records])
        assert result.batch_item_failures() == []

    def counts(self, url: str | None = None) -> tuple[int, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url or self.fifo_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def delivered_record(self, event_id: str) -> dict[str, Any] | None:
        item = self.dynamodb.get_item(
            TableName="ledger", Key={"pk": {"S": f"relay#{event_id}"}, "sk": {"S": "delivery"}}
        ).get("Item")
        return item


@pytest.fixture
def stub() -> Iterator[ApiStub]:
    with ApiStub() as server:
        yield server


@pytest.fixture
def env(redis_client: redis.Redis, stub: ApiStub) -> Iterator[Env]:
    with mock_aws():
        yield Env(redis_client, stub)


def accepted_ids(stub: ApiStub) -> list[str]:
    return [request.header("Idempotency-Key") or "" for request in stub.accepted()]


def test_a_2xx_deletes_after_recording_the_delivery(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.enqueue((1, "a"), (2, "b"), (3, "a"))
    report = env.run()
    assert (report.delivered, report.api_calls, report.stopped) == (3, 3, "empty")
    assert env.counts() == (0, 0)
    assert sorted(accepted_ids(env.stub)) == ["ev0001", "ev0002", "ev0003"]
    first = env.stub.received[0]
    assert first.header("x-api-key") == API_KEY
    assert first.header("content-type") == "application/json"
    assert first.json() == {"pk": "a", "sk": "item", "seq": 1}
    for event_id in ("ev0001", "ev0002", "ev0003"):
        record = env.delivered_record(event_id)
        assert record is not None and record["status"] == {"N": "200"} and "expires_at" in record
    captured = capsys.readouterr()
    assert API_KEY not in captured.out + captured.err


def test_a_500_keeps_the_message_and_holds_its_group_in_order(env: Env) -> None:
    env.enqueue((1, "a"), (2, "b"), (3, "a"), (4, "a"))
    env.stub.script(500)  # the first call: ev0001 (group a)
    report = env.run()
    assert report.api_errors == 1 and report.delivered == 1  # only group b went through
    assert [(r.header("Idempotency-Key"), r.status) for r in env.stub.received] == [
        ("ev0001", 500),
        ("ev0002", 200),
    ]
    assert env.delivered_record("ev0001") is None
    # ev0001 backs off; its group-mates are handed back, but FIFO keeps the group locked.
    assert env.counts() == (2, 1)
    report = env.run()
    assert (report.received, report.api_calls) == (0, 0)
    time.sleep(1.1)  # the backoff (1 s base, equal jitter)
    report = env.run()
    assert report.delivered == 3
    assert [i for i in accepted_ids(env.stub) if i != "ev0002"] == ["ev0001", "ev0003", "ev0004"]
    assert env.counts() == (0, 0)


def test_a_429_honours_retry_after_and_pauses_every_group(env: Env) -> None:
    env.enqueue((1, "a"), (2, "b"))
    env.stub.script(StubResponse.throttled(retry_after_s=2))
    report = env.run()
    assert report.api_calls == 1 and report.breaker_opened and report.stopped == "breaker_opened"
    assert env.counts() == (1, 1)  # ev0002 handed back at once, ev0001 invisible for Retry-After
    assert env.run().stopped == "breaker_open"  # no receive at all while the API says wait
    time.sleep(1.3)  # past the retry backoff (1 s) but inside Retry-After (2 s)
    assert env.counts() == (1, 1)
    time.sleep(0.9)
    assert env.counts() == (2, 0)
    report = env.run()  # the probe (ev0001 or ev0002) succeeds, the breaker closes, the rest go
    assert report.admission == "probe" and report.delivered == 2
    assert env.counts() == (0, 0)
    assert sorted(accepted_ids(env.stub)) == ["ev0001", "ev0002"]


def test_a_400_goes_to_the_dlq_with_the_response_and_the_group_goes_on(env: Env) -> None:
    env.enqueue((1, "a"), (2, "a"))
    env.stub.script(StubResponse(400, b'{"error":"field x is required"}'))
    report = env.run()
    assert (report.rejected, report.delivered) == (1, 1)
    assert env.counts() == (0, 0)
    dead = env.sqs.receive_message(QueueUrl=env.dlq_url, MessageAttributeNames=["All"])["Messages"]
    assert len(dead) == 1
    assert codec.decode(dead[0]["Body"]).id == "ev0001"
    attributes = dead[0]["MessageAttributes"]
    assert attributes[codec.ATTR_REASON]["StringValue"] == "api_rejected"
    assert attributes[codec.ATTR_STATUS]["StringValue"] == "400"
    assert attributes[codec.ATTR_RESPONSE]["StringValue"] == '{"error":"field x is required"}'
    assert env.delivered_record("ev0001") is None and env.delivered_record("ev0002") is not None


def test_an_invalid_body_goes_to_the_dlq_without_a_call(env: Env) -> None:
    env.sqs.send_message(
        QueueUrl=env.fifo_url, MessageBody="not json", MessageGroupId="g", MessageDeduplicationId="x1"
    )
    report = env.run()
    assert report.rejected == 1 and env.stub.received == []
    dead = env.sqs.receive_message(QueueUrl=env.dlq_url, MessageAttributeNames=["All"])["Messages"]
    assert dead[0]["MessageAttributes"][codec.ATTR_REASON]["StringValue"] == "invalid_envelope"


def test_a_recorded_delivery_is_deleted_without_a_second_call(env: Env) -> None:
    env.enqueue((1, "a"), (2, "a"))
    DeliveryLedger(env.dynamodb, env.settings).record_delivery("ev0001", 200)  # delivered, then crashed
    report = env.run()
    assert (report.already_delivered, report.delivered) == (1, 1)
    assert accepted_ids(env.stub) == ["ev0002"]
    assert env.counts() == (0, 0)


def test_a_timeout_is_retried(env: Env) -> None:
    env.enqueue((1, "a"))
    env.stub.script(StubResponse(200, delay_s=1.0))  # slower than the 0.5 s read timeout
    report = env.run()
    assert (report.api_errors, report.delivered) == (1, 0)
    assert env.counts() == (0, 1)


def test_the_api_key_is_read_once_per_cache_period(env: Env) -> None:
    env.configure(api_key_cache_s=1)
    env.enqueue((1, "a"), (2, "b"))
    env.run()
    env.enqueue((3, "c"))
    env.run()
    assert (len(env.stub.accepted()), env.parameter_reads) == (3, 1)
    time.sleep(1.1)
    env.enqueue((4, "d"))
    env.run()
    assert env.parameter_reads == 2
    # A 401 means the key may have been rotated: it is read again before the next call.
    env.enqueue((5, "e"))
    env.stub.script(401)
    env.run()
    assert env.parameter_reads == 2
    env.enqueue((6, "f"))
    env.run()
    assert env.parameter_reads == 3


def test_the_rate_limit_is_shared_and_respected(env: Env) -> None:
    env.enqueue(*((seq, f"g{seq}") for seq in range(1, 6)))
    # 2 a minute, both at once: the third call would be 30 s away, past this run's 29 s.
    report = env.run(calls_per_minute=2, burst_calls=2)
    assert (report.api_calls, report.stopped) == (2, "budget")
    report = env.run(calls_per_minute=2, burst_calls=2)  # another drain: the bucket is shared
    assert (report.api_calls, report.stopped) == (0, "budget")
    assert env.counts() == (3, 0)  # nothing left in flight: the rest waits for the tokens


def test_the_rate_limit_spaces_calls_instead_of_bursting(env: Env) -> None:
    env.enqueue(*((seq, f"g{seq}") for seq in range(1, 5)))
    report = env.run(calls_per_minute=300, burst_calls=1)  # one call per 0.2 s
    assert report.delivered == 4
    times = sorted(request.at for request in env.stub.received)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.15, gaps  # a lower bound only: a loaded machine is slower, never faster


def test_long_polling_waits_for_a_message_before_the_run_ends(env: Env) -> None:
    timer = threading.Timer(0.5, lambda: env.enqueue((1, "a")))
    timer.start()
    report = env.run(receive_wait_s=3)
    timer.join()
    assert (report.delivered, report.stopped) == (1, "empty")


def _dead_letters(env: Env) -> list[dict[str, Any]]:
    response = env.sqs.receive_message(
        QueueUrl=env.dlq_url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
    )
    return list(response.get("Messages", []))


def test_a_message_refused_past_max_attempts_is_dead_lettered_and_its_group_resumes(env: Env) -> None:
    env.enqueue((1, "a"), (2, "a"))
    env.stub.script(StubResponse(503, b'{"error":"busy"}'), StubResponse(503, b'{"error":"still busy"}'))
    first = env.run(max_attempts=2, retry_backoff_cap_s=1)
    assert (first.api_errors, first.delivered) == (1, 0)
    time.sleep(1.1)  # the 1 s backoff cap
    second = env.run(max_attempts=2, retry_backoff_cap_s=1)
    assert (second.rejected, second.delivered) == (1, 1)  # ev0002, its group-mate, goes on
    assert accepted_ids(env.stub) == ["ev0002"]
    assert env.counts() == (0, 0)
    dead = _dead_letters(env)
    assert [codec.decode(m["Body"]).id for m in dead] == ["ev0001"]
    attributes = dead[0]["MessageAttributes"]
    assert attributes[codec.ATTR_REASON]["StringValue"] == "max_attempts"
    assert attributes[codec.ATTR_STATUS]["StringValue"] == "503"
    assert attributes[codec.ATTR_RESPONSE]["StringValue"] == '{"error":"still busy"}'
    assert attributes[codec.ATTR_ATTEMPTS]["StringValue"] == "2"
    assert attributes[codec.ATTR_SOURCE]["StringValue"] == "relay/relay.fifo"
    assert codec.ATTR_DETAIL in attributes


def test_a_message_past_max_age_is_dead_lettered_without_a_call(env: Env) -> None:
    env.enqueue((1, "a"), (2, "b"))
    time.sleep(1.1)
    env.enqueue((3, "b"))
    report = env.run(max_age_s=1)
    assert (report.rejected, report.delivered) == (2, 1)
    assert accepted_ids(env.stub) == ["ev0003"]
    dead = _dead_letters(env)
    assert sorted(codec.decode(m["Body"]).id for m in dead) == ["ev0001", "ev0002"]
    assert {m["MessageAttributes"][codec.ATTR_REASON]["StringValue"] for m in dead} == {"max_age"}
    assert all(codec.ATTR_STATUS not in m["MessageAttributes"] for m in dead)  # never called


def test_a_300_is_not_a_delivery(env: Env) -> None:
    env.enqueue((1, "a"))
    env.stub.script(300)
    report = env.run()
    assert (report.delivered, report.api_errors) == (0, 1)
    assert env.delivered_record("ev0001") is None
    assert env.counts() == (0, 1)  # kept, invisible for its backoff


def test_backoff_doubles_with_each_attempt(env: Env) -> None:
    settings = env.make_settings(retry_backoff_base_s=1.0, retry_backoff_cap_s=1000)
    no_hint = ApiResponse(status=503)
    # attempt 4: 1 s doubled three times = 8 s, with equal jitter between 4 and 8
    assert all(4 <= retry_visibility_s(settings, no_hint, 4) <= 8 for _ in range(50))
    assert all(retry_visibility_s(settings, no_hint, 1) <= 1 for _ in range(50))


def test_a_delivery_record_lives_for_the_dedup_horizon(env: Env) -> None:
    before = time.time()
    DeliveryLedger(env.dynamodb, env.make_settings(ledger_ttl_s=86_400)).record_delivery("ev0009", 200)
    record = env.delivered_record("ev0009")
    assert record is not None
    expires = int(record["expires_at"]["N"])
    assert before + 86_400 - 1 <= expires <= time.time() + 86_400 + 1


def test_the_deadline_stops_a_run_before_it_receives(env: Env) -> None:
    env.enqueue((1, "a"))
    report = env.drain().run(lambda: 0.5)  # under the 1 s margin
    assert (report.received, report.stopped) == (0, "deadline")
    assert env.counts() == (1, 0)


def _expire_breaker(client: redis.Redis) -> None:
    """Make the breaker's probe due now (rewrite its deadline instead of waiting)."""
    client.hset(BREAKER_KEY, "open_until", "0")


def test_an_outage_opens_the_breaker_which_probes_with_one_message_at_a_capped_backoff(env: Env) -> None:
    env.enqueue(*((seq, f"g{seq}") for seq in range(1, 7)))
    env.stub.set_default(503)
    report = env.run(breaker_failure_threshold=2)
    assert (report.api_calls, report.stopped, report.breaker_opened) == (2, "breaker_opened", True)
    assert report.released == report.received - 2
    for _ in range(3):  # ticks during the outage receive nothing at all
        assert env.run().stopped == "breaker_open"
    assert len(env.stub.received) == 2
    backoffs = []
    for _ in range(4):  # each failed probe is one call, and the backoff doubles up to the cap
        _expire_breaker(env.redis)
        report = env.run()
        assert (report.admission, report.received, report.api_calls) == ("probe", 1, 1)
        backoffs.append(float(env.redis.hget(BREAKER_KEY, "backoff_s") or 0))
    assert backoffs == [2.0, 4.0, 4.0, 4.0]
    env.stub.set_default(200)
    time.sleep(2.1)  # the failed messages' own retry visibility (cap 2 s)
    _expire_breaker(env.redis)
    report = env.run()
    assert report.admission == "probe" and report.delivered == 6
    assert sorted(accepted_ids(env.stub)) == [f"ev{seq:04d}" for seq in range(1, 7)]
    assert not env.redis.exists(BREAKER_KEY)


def test_an_open_breaker_still_dead_letters_what_is_too_old_once_per_sweep_interval(env: Env) -> None:
    env.enqueue((1, "a"), (2, "b"))
    time.sleep(1.1)
    env.enqueue((3, "c"))
    env.redis.hset(BREAKER_KEY, mapping={"open_until": str(time.time() + 3600), "backoff_s": "900"})
    report = env.run(max_age_s=1, sweep_interval_s=3600)
    assert (report.stopped, report.rejected, report.api_calls) == ("breaker_open", 2, 0)
    assert env.counts() == (1, 0)  # the young one is handed back at once
    assert sorted(m["MessageAttributes"][codec.ATTR_REASON]["StringValue"] for m in _dead_letters(env)) == [
        "max_age",
        "max_age",
    ]
    assert env.run(max_age_s=1, sweep_interval_s=3600).received == 0  # one sweep per interval
