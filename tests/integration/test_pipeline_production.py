"""What production does to the router (issue 23), each with the exactly-once check at the sink:
big envelopes, redeliveries, routers that change their state, batch-mates that use the time
budget, Redis outages, dead letters that explain themselves, redrives. In-process moto (SQS,
DynamoDB, S3) and real redis-servers (one of them killed and restarted empty)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from moto import mock_aws

from local.servers import RedisServer, running_redis
from runtime import codec
from runtime.clients import make_redis
from runtime.config import RedisSettings
from runtime.pipeline import PoisonItem, mutation
from runtime.pipeline.fifo import ATTEMPTS_TTL_S
from runtime.pipeline.leases import ATTEMPTS_PREFIX
from runtime.pipeline.ledger import PLAN_REF_ATTRIBUTE, TTL_ATTRIBUTE
from tests.support.aws import mock_client
from tests.support.pipeline import BUCKET, LEDGER_TABLE, Harness, envelope

pytestmark = pytest.mark.slow

FAST_REDIS = {"timeout_s": 0.2, "retries": 1}


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        yield mock_client


@pytest.fixture
def make_harness(aws: Any, redis_client: redis.Redis, redis_server: RedisServer) -> Any:
    def make(*, client: Any = None, fifo: bool = False, **pipeline: Any) -> Harness:
        return Harness.create(aws, client or redis_client, redis_server.url, fifo=fifo, **pipeline)

    return make


def attributes_of(message: dict[str, Any]) -> dict[str, str]:
    return {name: value["StringValue"] for name, value in message.get("MessageAttributes", {}).items()}


def sunk_once(h: Harness) -> Counter[str]:
    ids = Counter(item["id"] for item in h.sunk_items())
    assert set(ids.values()) <= {1}, ids
    return ids


def ledger_item(h: Harness, envelope_id: str) -> dict[str, Any]:
    return h.dynamodb.get_item(TableName=LEDGER_TABLE, Key={"pk": {"S": envelope_id}}, ConsistentRead=True)[  # type: ignore[no-any-return]
        "Item"
    ]


# -- 1. a big envelope keeps per-item retry ------------------------------------------------------


def test_a_loader_sized_envelope_of_tiny_failing_items_has_a_plan_the_ledger_holds(make_harness: Any) -> None:
    """1 MiB of tiny items, every one failing with a maximum-length detail: far over DynamoDB's
    400 KB, so the plan goes to S3 and the item points to it; read back, it is the same plan."""
    from runtime.pipeline.plan import RETRY, Failure, ItemExtras, OutputRules, Plan, build_outputs

    h = make_harness()
    states = [{"n": n, "pad": "p" * 150} for n in range(6_000)]
    body = envelope("1mib-1", states)
    count = len(states)
    while len(body) > codec.SQS_MAX_MESSAGE_BYTES:  # the largest envelope SQS takes
        count -= 500
        body = envelope("1mib-1", states[:count])
    incoming = codec.decode(body)
    failure = Failure("ValueError", "d" * codec.MAX_DETAIL_CHARS, error="ValueError", step="router")
    extras = {i: ItemExtras(delay_s=900, failure=failure) for i in range(count)}
    outputs = build_outputs(
        incoming, RETRY * count, {}, extras, OutputRules(max_bytes=codec.SQS_MAX_MESSAGE_BYTES)
    )
    plan = Plan(RETRY * count, tuple(outputs))
    assert len(plan.to_bytes()) > 5 * 400_000
    assert h.ledger.create_or_get("1mib-1", plan).created
    assert PLAN_REF_ATTRIBUTE in ledger_item(h, "1mib-1")
    stored = h.ledger.read("1mib-1")
    assert stored is not None and stored.outputs == plan.outputs and stored.digest == plan.digest


def test_a_big_envelope_whose_items_all_fail_dead_letters_each_item_with_its_reason(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    h = make_harness(max_attempts=1)
    calls: list[int] = []
    hooked: list[str] = []

    def router(state: dict[str, Any]) -> None:
        calls.append(1)
        raise ValueError("x" * 2000)  # longer than a dead letter's detail may be

    router.on_poisoned = lambda state, reason, detail: hooked.append(reason)  # type: ignore[attr-defined]
    body = envelope("big-1", [{"n": n, "pad": "p" * 7000} for n in range(60)])
    h.send(body)
    result = h.process(h.receive(), router)
    assert result.failed_message_ids == [] and result.outcomes == {"poisoned": 60}
    assert PLAN_REF_ATTRIBUTE in ledger_item(h, "big-1")  # over DynamoDB's 400 KB: in S3
    [spilled] = h.s3.list_objects_v2(Bucket=BUCKET, Prefix="ledger/big-1/")["Contents"]
    assert spilled["Size"] > 400_000
    dead = h.drain(h.dlq_url)
    assert Counter(orjson.loads(m["Body"])["items"][0]["id"] for m in dead) == Counter(
        f"r#{n}" for n in range(60)
    )
    assert {attributes_of(m)[codec.ATTR_DETAIL] for m in dead} == {"x" * codec.MAX_DETAIL_CHARS}
    assert hooked == ["ValueError"] * 60

    # A redelivery after Redis lost everything and before the complete mark replays the plan
    # from S3: the same dead letters, the router not called again.
    redis_client.flushall()
    h.dynamodb.update_item(
        TableName=LEDGER_TABLE, Key={"pk": {"S": "big-1"}}, UpdateExpression="REMOVE complete"
    )
    h.send(body)
    again = h.process(h.receive(), router)
    assert again.followed_plans == 1 and again.failed_message_ids == []
    assert len(calls) == 60
    replayed = h.drain(h.dlq_url)
    assert sorted(m["Body"] for m in replayed) == sorted(m["Body"] for m in dead)
    assert h.sink_objects() == {} and h.drain(h.state_url) == []


# -- 2. ledger first, the router's side effects once ----------------------------------------------


def test_user_code_runs_once_per_envelope_across_three_redeliveries_even_without_redis(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    h = make_harness()
    effects: Counter[str] = Counter()

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        if "charged" in state:
            return None
        effects[state["order"]] += 1  # e.g. a payment API that returns a new id per call
        return {**state, "charged": f"payment-{sum(effects.values())}"}

    bodies = [envelope(f"order-{n}", [{"order": f"o{n}"}], prefix=f"o{n}") for n in range(3)]
    for body in bodies:
        h.send(body)
    h.process(h.receive(), router)
    for _ in range(3):  # three redeliveries of every envelope, Redis flushed before each
        redis_client.flushall()
        for body in bodies:
            h.send(body)
        again = h.process(h.receive(), router)
        assert again.failed_message_ids == [] and again.plan_mismatches == 0
    h.run(router)
    assert effects == {"o0": 1, "o1": 1, "o2": 1}
    assert sunk_once(h) == {"o0#0": 1, "o1#0": 1, "o2#0": 1}
    assert sorted(i["state"]["charged"] for i in h.sunk_items()) == ["payment-1", "payment-2", "payment-3"]


# -- 3. the router gets a private copy -------------------------------------------------------------


def test_a_router_that_changes_its_state_then_raises_leaves_the_item_as_it_was(make_harness: Any) -> None:
    h = make_harness(max_attempts=3)
    failures: list[int] = []
    seen: list[dict[str, Any]] = []

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(dict(state))
        if state.get("done"):
            return None
        state["half_applied"] = True  # changed in place...
        if not failures:
            failures.append(1)
            raise TimeoutError("...then failed")
        return {"n": state["n"], "done": True}

    h.send(envelope("copy-1", [{"n": 0}]))
    h.run(router)
    assert sunk_once(h) == {"r#0": 1}
    assert seen[:2] == [{"n": 0}, {"n": 0}]  # the retry got the item as it was
    [item] = h.sunk_items()
    assert item["state"] == {"n": 0, "done": True}
    assert item["history"] == ["retry 1: TimeoutError", "router"]


# -- 4. FIFO budget fairness ------------------------------------------------------------------------


def test_a_fifo_envelope_that_ran_out_of_time_its_batch_mates_used_is_handed_back_uncharged(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    h = make_harness(fifo=True, max_attempts=1, time_budget_margin_s=0.1)
    ran: list[str] = []

    def router(state: dict[str, Any]) -> None:
        ran.append(state["name"])
        time.sleep(state["s"])

    h.send(envelope("hog", [{"name": "hog", "s": 0.9}], prefix="hog"), group_id="A")
    small = [{"name": f"small{n}", "s": 0.3} for n in range(3)]
    h.send(envelope("small", small, prefix="small"), group_id="B")
    messages = h.receive()
    assert [orjson.loads(m["Body"])["id"] for m in messages] == ["hog", "small"]
    # 1.6 s less the 100 ms margin: "small" starts with at most 0.6 s of the 1.5 s budget
    # (less than its half share) and needs 0.9 s.
    first = h.process(messages, router, remaining_ms=1600)
    assert "small0" in ran and len(first.failed_message_ids) == 1  # it started, and ran out
    assert redis_client.get(ATTEMPTS_PREFIX + "small") is None  # no attempt counted
    [back] = h.receive()  # visibility 0: back at once
    second = h.process([back], router, remaining_ms=1600)
    assert second.failed_message_ids == []
    assert h.drain(h.dlq_url) == []  # with max_attempts 1, one charged attempt would poison it
    assert sunk_once(h) == {"hog#0": 1, "small#0": 1, "small#1": 1, "small#2": 1}


def test_a_fifo_envelope_that_had_the_whole_budget_is_charged(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    h = make_harness(fifo=True, max_attempts=2, time_budget_margin_s=0.1)
    h.send(envelope("slow", [{"s": 0.1}] * 4, prefix="slow"), group_id="A")
    h.process(h.receive(), lambda s: time.sleep(s["s"]), remaining_ms=300)
    assert redis_client.get(ATTEMPTS_PREFIX + "slow") == b"1"
    assert 0 < redis_client.pttl(ATTEMPTS_PREFIX + "slow") <= ATTEMPTS_TTL_S * 1000


# -- 5. Redis down is slow, not stopped ----------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def test_redis_killed_mid_batch_then_restarted_empty_loses_and_doubles_nothing(
    make_harness: Any, own_redis: RedisServer
) -> None:
    client = make_redis(RedisSettings(url=own_redis.url), **FAST_REDIS)
    h = make_harness(client=client)
    runs: Counter[str] = Counter()

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        runs[state["k"]] += 1
        if state["k"] == "b" and not state.get("moved"):
            own_redis.kill()  # mid-batch: the leases were taken, the done markers never land
        return {**state, "moved": True} if not state.get("moved") else None

    bodies = [envelope(f"kill-{k}", [{"k": k}], prefix=k) for k in "abc"]
    for body in bodies:
        h.send(body)
    first = h.process(h.receive(), router)
    assert first.failed_message_ids == [] and first.redis_unavailable == 1
    own_redis.restart(keep_data=False)
    for body in bodies:  # every envelope again, to an empty Redis
        h.send(body)
    h.run(router)
    assert runs == {"a": 2, "b": 2, "c": 2}  # one routing per envelope: the first and its successor
    assert sunk_once(h) == {"a#0": 1, "b#0": 1, "c#0": 1}


class SilentServer:
    """A socket that accepts connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_redis_that_never_answers_costs_one_bounded_wait_per_invocation(
    make_harness: Any, silent: SilentServer
) -> None:
    client = make_redis(RedisSettings(url=f"redis://127.0.0.1:{silent.port}"), **FAST_REDIS)
    h = make_harness(client=client)
    for n in range(3):
        h.send(envelope(f"hung-{n}", [{"n": n}], prefix=f"h{n}"))
    result = h.process(h.receive(), lambda s: None)
    assert result.failed_message_ids == [] and result.redis_unavailable == 1
    # One failing call (connect and command each retried once), then no more Redis.
    assert len(silent.accepted) <= (1 + FAST_REDIS["retries"]) ** 2
    for n in range(3):  # redelivered: the ledger alone recognises them
        h.send(envelope(f"hung-{n}", [{"n": n}], prefix=f"h{n}"))
    again = h.process(h.receive(), lambda s: None)
    assert again.followed_plans == 3 and again.failed_message_ids == []
    assert sunk_once(h) == {"h0#0": 1, "h1#0": 1, "h2#0": 1}


def test_fifo_attempts_fall_back_to_the_receive_count_without_redis(
    make_harness: Any, silent: SilentServer
) -> None:
    client = make_redis(RedisSettings(url=f"redis://127.0.0.1:{silent.port}"), **FAST_REDIS)
    h = make_harness(client=client, fifo=True, max_attempts=2)

    def router(state: dict[str, Any]) -> None:
        if state["name"] == "bad":
            raise KeyError("bad")

    h.send(envelope("fifo-bad", [{"name": "bad"}], prefix="bad"), group_id="G")
    h.send(envelope("fifo-ok", [{"name": "ok"}], prefix="ok"), group_id="G")
    h.run(router, timeout_s=20)
    [dead] = h.drain(h.dlq_url)
    assert attributes_of(dead)[codec.ATTR_ATTEMPTS] == "2"  # ApproximateReceiveCount
    assert sunk_once(h) == {"ok#0": 1}


# -- 6. dead letters explain themselves ------------------------------------------------------------


@mutation
def add_total(state: dict[str, Any]) -> dict[str, Any]:
    state["total"] = state["price"] * state["qty"]
    return state


def test_a_dead_letter_says_why_where_and_after_how_many_attempts(make_harness: Any) -> None:
    h = make_harness(max_attempts=3, history_limit=8)
    hooked: list[tuple[Any, str, str]] = []

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        return add_total(state) if "total" not in state else None

    router.on_poisoned = lambda state, reason, detail: hooked.append((state, reason, detail))  # type: ignore[attr-defined]
    h.send(envelope("dl-1", [{"price": 2, "qty": 3}, {"price": "a", "qty": None}]))
    h.run(router)
    [dead] = h.drain(h.dlq_url)
    attributes = attributes_of(dead)
    assert attributes[codec.ATTR_REASON] == "TypeError"
    assert attributes[codec.ATTR_ERROR] == "TypeError"
    assert attributes[codec.ATTR_STEP] == "add_total"
    assert attributes[codec.ATTR_ATTEMPTS] == "3"
    assert attributes[codec.ATTR_SOURCE] == "router:state"
    assert "can't multiply" in attributes[codec.ATTR_DETAIL]
    trace = attributes[codec.ATTR_TRACE]
    assert "add_total" in trace and len(trace.encode()) <= codec.MAX_TRACE_BYTES
    [item] = orjson.loads(dead["Body"])["items"]
    assert item["dead_letter"] == "TypeError"
    assert item["history"] == ["retry 1: TypeError", "retry 2: TypeError", "dead-lettered: TypeError"]
    assert hooked == [({"price": "a", "qty": None}, "TypeError", attributes[codec.ATTR_DETAIL])]
    assert sunk_once(h) == {"r#0": 1}


def test_a_poison_item_names_its_reason_detail_and_step(make_harness: Any) -> None:
    h = make_harness()

    @mutation
    def check(state: dict[str, Any]) -> dict[str, Any]:
        raise PoisonItem("not_an_order", "an order needs a price")

    h.send(envelope("dl-2", [{}]))
    h.run(check)
    [dead] = h.drain(h.dlq_url)
    assert attributes_of(dead) == {
        codec.ATTR_REASON: "not_an_order",
        codec.ATTR_DETAIL: "an order needs a price",
        codec.ATTR_SOURCE: "router:state",
        codec.ATTR_STEP: "check",
        codec.ATTR_ATTEMPTS: "1",
        codec.ATTR_ERROR: "PoisonItem",
    }


# -- 7. a redrive gives a fresh start ---------------------------------------------------------------


def redrive(h: Harness) -> list[dict[str, Any]]:
    """What the README shows with the SQS CLI: receive from the DLQ, send to the source queue
    (the explicit destination), delete from the DLQ. moto has no StartMessageMoveTask."""
    moved = h.drain(h.dlq_url)
    for message in moved:
        h.sqs.send_message(
            QueueUrl=h.state_url, MessageBody=message["Body"], MessageAttributes=message["MessageAttributes"]
        )
    return moved


def test_a_redriven_item_gets_a_full_max_attempts_and_its_ledger_ttl_re_armed(make_harness: Any) -> None:
    h = make_harness(max_attempts=3, history_limit=8)
    broken = {"on": True}
    calls: list[int] = []

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        calls.append(1)
        if broken["on"]:
            raise ConnectionError("the API is away")
        return None if state.get("step") else {"step": 1}

    h.send(envelope("rd-1", [{"n": 0}]))
    h.run(router)
    assert len(calls) == 3
    [moved] = redrive(h)
    h.run(router)  # still broken: a full max_attempts again, not one
    assert len(calls) == 6
    [again] = redrive(h)
    dead_id = orjson.loads(again["Body"])["id"]
    assert orjson.loads(again["Body"])["items"][0]["history"].count("redriven") == 1
    broken["on"] = False
    h.run(router)
    assert sunk_once(h) == {"r#0": 1}
    [item] = h.sunk_items()
    assert item["step"] == 1 and item["attempt"] == 0 and item["history"][-2:] == ["redriven", "router"]

    # The same dead letter redriven twice (say an operator sent it again): recognised by the
    # ledger, its TTL re-armed, nothing routed or sent again.
    expires = int(ledger_item(h, dead_id)[TTL_ATTRIBUTE]["N"])
    time.sleep(1.0)
    h.redis.flushall()  # long after: the done marker has expired
    h.sqs.send_message(QueueUrl=h.state_url, MessageBody=again["Body"])
    assert h.process(h.receive(), router).followed_plans == 1
    assert int(ledger_item(h, dead_id)[TTL_ATTRIBUTE]["N"]) > expires
    assert len(calls) == 8 and sunk_once(h) == {"r#0": 1}
    assert moved["Body"] != again["Body"]


# -- 8. the same envelope twice in one batch shares its fate -----------------------------------------


def test_the_same_envelope_twice_in_one_batch_shares_its_fate(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    from runtime.pipeline.leases import Leases

    h = make_harness()
    body = envelope("twice-1", [{"n": 0}])
    h.send(body)
    h.send(body)
    other = Leases(redis_client, lease_ms=60_000, done_ttl_ms=1_000)
    other.claim(["twice-1"])
    messages = h.receive()
    assert len(messages) == 2
    bounced = h.process(messages, lambda s: None)
    assert sorted(bounced.failed_message_ids) == sorted(m["MessageId"] for m in messages)
    redis_client.flushall()
    h.send(body)
    h.send(body)
    both = h.receive()
    assert len(both) == 2
    done = h.process(both, lambda s: None)
    assert done.failed_message_ids == [] and done.ledger_writes == 1
    assert sunk_once(h) == {"r#0": 1}
