"""The router on standard queues: in-process moto (SQS, DynamoDB, S3) and a real Redis."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from moto import mock_aws

from local.servers import RedisServer
from runtime import codec, metric_names
from runtime.codec import ATTR_REASON, ATTR_SOURCE
from runtime.examples.hello import router as hello_router
from runtime.pipeline import Pipeline, PoisonItem, mutation
from runtime.pipeline.leases import Leases
from tests.support.aws import mock_client
from tests.support.pipeline import Harness, envelope

pytestmark = pytest.mark.slow


@pytest.fixture
def make_harness(redis_client: redis.Redis, redis_server: RedisServer) -> Iterator[Any]:
    with mock_aws():

        def make(**pipeline: Any) -> Harness:
            return Harness.create(mock_client, redis_client, redis_server.url, **pipeline)

        yield make


def bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [orjson.loads(m["Body"]) for m in messages]


def invoke_function(
    monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline, event: dict[str, Any], *, fifo: bool = False
) -> Any:
    """The real router function (its decorators included) over `pipeline` in place of the one
    its cached builder would make from the environment."""
    from local.functions import LambdaContext
    from runtime.handlers import fifo_router, router

    function = fifo_router if fifo else router
    monkeypatch.setattr(function, "_pipeline", lambda: pipeline)
    return function.handler(event, LambdaContext(function.__name__, 30))


def test_hello_world_is_done_after_two_steps(make_harness: Any) -> None:
    h = make_harness()
    h.send(envelope("hello-1", [{}]))
    h.run(hello_router)

    [item] = h.sunk_items()
    assert item["state"] == {"greeting": "hello", "name": "world"}
    assert item["step"] == 2
    assert [r.transitions for r in h.results] == [1, 1, 1]  # greeting, name, then None
    steps = [step for r in h.results for (step, _status) in r.steps]
    assert steps == ["add_greeting", "add_name", "done"]
    assert h.drain(h.dlq_url) == []


def test_next_states_are_packed_into_as_few_messages_as_fit(make_harness: Any) -> None:
    h = make_harness(max_message_bytes=2048)
    h.send(envelope("pack-1", [{"n": i, "pad": "x" * 100} for i in range(40)]))
    result = h.process(h.receive(), lambda s: {**s, "seen": True} if "seen" not in s else None)

    outputs = h.drain(h.state_url)
    outputs.sort(key=lambda m: orjson.loads(m["Body"])["items"][0]["state"]["n"])
    sizes = [len(m["Body"].encode()) for m in outputs]
    assert all(size <= 2048 for size in sizes) and len(outputs) > 1
    parsed = bodies(outputs)
    items = [item for body in parsed for item in body["items"]]
    assert [i["id"] for i in items] == [f"r#{n}" for n in range(40)]
    assert all(i["state"]["seen"] and i["step"] == 1 for i in items)
    for size, following in zip(sizes[:-1], parsed[1:], strict=True):  # greedy: the next item did not fit
        assert size + 1 + len(codec.dumps(following["items"][0])) > 2048
    assert result.outcomes == {"next": 40}
    assert result.ledger_writes == 2  # the plan and its complete mark, not one per item


def test_a_mutation_never_changes_the_callers_object() -> None:
    @mutation
    def deepen(state: dict[str, Any]) -> dict[str, Any]:
        state["nested"]["list"].append(3)
        state["top"] = "changed"
        return state

    original = {"nested": {"list": [1, 2]}, "top": "kept"}
    updated = deepen(original)
    assert original == {"nested": {"list": [1, 2]}, "top": "kept"}
    assert updated == {"nested": {"list": [1, 2, 3]}, "top": "changed"}


def test_redelivery_after_complete_sends_nothing(make_harness: Any, redis_client: redis.Redis) -> None:
    h = make_harness()
    body = envelope("again-1", [{}])
    h.send(body)
    h.process(h.receive(), hello_router)
    first = h.drain(h.state_url)
    assert len(first) == 1

    redis_client.flushall()  # no done marker: only the ledger's complete mark can stop it
    h.send(body)
    result = h.process(h.receive(), hello_router)
    assert result.followed_plans == 1 and result.failed_message_ids == []
    assert h.drain(h.state_url) == []

    h.send(body)  # and with the done marker back, Redis skips it without the ledger
    result = h.process(h.receive(), hello_router)
    assert result.skipped_done == 1 and result.ledger_writes == 0
    assert h.drain(h.state_url) == []


def test_poison_item_reaches_the_dlq_after_max_attempts_while_mates_complete(make_harness: Any) -> None:
    h = make_harness(max_attempts=3)
    calls: list[int] = []

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        if state.get("bad"):
            calls.append(1)
            raise ValueError("cannot handle this one")
        return None

    h.send(envelope("mixed-1", [{"n": 0}, {"n": 1, "bad": True}, {"n": 2}]))
    h.run(router)

    assert sorted(i["state"]["n"] for i in h.sunk_items()) == [0, 2]
    [dead] = h.drain(h.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "ValueError"
    [item] = orjson.loads(dead["Body"])["items"]
    assert item["id"] == "r#1" and item["attempt"] == 2
    assert len(calls) == 3  # attempts 0, 1 and 2, each in its own retry envelope
    outcomes = sum((r.outcomes for r in h.results), start=type(h.results[0].outcomes)())
    assert outcomes == {"done": 2, "retry": 2, "poisoned": 1}


def test_retry_delay_is_backoff_with_jitter_recorded_in_the_plan(make_harness: Any) -> None:
    h = make_harness(backoff_base_s=4, backoff_cap_s=900, max_attempts=5)
    h.send(envelope("delay-1", [{"n": 0}], attempt=3))
    result = h.process(h.receive(), lambda s: 1 / 0, rng=random.Random(7))
    assert result.outcomes == {"retry": 1}
    plan = h.ledger.read("delay-1")
    assert plan is not None
    [retry] = plan.outputs
    assert 16 <= retry.delay_s <= 32  # 4 * 2**3 = 32, equal jitter keeps the upper half
    assert retry.planned.reason == "ZeroDivisionError"


def test_router_that_never_finishes_ends_in_the_dlq_with_step_limit(make_harness: Any) -> None:
    h = make_harness(max_steps=3)
    h.send(envelope("loop-1", [{"n": 0}]))
    h.run(lambda s: {**s, "n": s["n"] + 1})

    [dead] = h.drain(h.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "step limit"
    [item] = orjson.loads(dead["Body"])["items"]
    assert item["step"] == 3 and item["state"] == {"n": 3}
    assert h.sunk_items() == []


def test_poison_item_exception_skips_the_retries(make_harness: Any) -> None:
    h = make_harness(max_attempts=5)

    def router(state: Any) -> None:
        raise PoisonItem("unsupported", "no handler for this kind")

    h.send(envelope("now-1", [{"n": 0}]))
    h.run(router)
    [dead] = h.drain(h.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "unsupported"
    assert len(h.results) == 1


def test_out_of_time_items_leave_together_in_one_continuation(make_harness: Any) -> None:
    import time

    h = make_harness(time_budget_margin_s=0.1)
    runs: dict[int, int] = {}

    def slow_router(state: dict[str, Any]) -> None:
        runs[state["n"]] = runs.get(state["n"], 0) + 1
        time.sleep(0.05)
        return None

    h.send(envelope("slow-1", [{"n": i} for i in range(10)]))
    first = h.process(h.receive(), slow_router, remaining_ms=275)
    # 275 ms less the 100 ms margin: item i starts no earlier than 50 ms * i, so at most 4 run.
    assert 1 <= first.outcomes["done"] <= 4 and first.outcomes["continued"] >= 1
    assert first.outcomes["done"] + first.outcomes["continued"] == 10
    [continuation] = bodies(h.receive())
    ran = first.outcomes["done"]
    assert [i["state"]["n"] for i in continuation["items"]] == list(range(ran, 10))
    assert continuation["parent"] == "slow-1" and len(continuation["id"]) == 26

    h.run(slow_router)
    assert runs == {n: 1 for n in range(10)}  # nothing ran twice
    assert sorted(i["state"]["n"] for i in h.sunk_items()) == list(range(10))


def test_derived_ids_stay_26_characters_however_deep(make_harness: Any) -> None:
    h = make_harness(max_steps=1000, history_limit=3)
    h.send(envelope("batch-with-a-long-name/17", [{"n": 0}]))
    depth = 30
    ids: list[str] = []
    for _ in range(depth):
        messages = h.receive()
        ids.extend(orjson.loads(m["Body"])["id"] for m in messages)
        h.process(messages, lambda s: {"n": s["n"] + 1} if s["n"] < depth - 1 else None)
    assert len(ids) == depth
    assert all(len(i) == 26 for i in ids[1:])
    [item] = h.sunk_items()
    assert item["step"] == depth - 1
    assert item["history"] == ["<lambda>"] * 3  # bounded history


def test_a_redelivery_replays_the_recorded_plan_without_calling_the_router(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    """Ledger first: user code (here a side effect that returns a new id each time) runs once
    per envelope, however often the envelope comes back."""
    h = make_harness()
    side_effects = iter(range(1000))
    calls: list[int] = []

    def router(state: dict[str, Any]) -> dict[str, Any] | None:
        if "order" in state:
            return None
        calls.append(1)
        return {"order": next(side_effects)}

    body = envelope("effect-1", [{"n": 0}])
    h.send(body)
    first = h.process(h.receive(), router)
    assert first.outcomes == {"next": 1} and len(calls) == 1
    [sent] = h.drain(h.state_url)

    # Three redeliveries: Redis lost and the complete mark lost (a crash before it), Redis lost
    # again, then with the done marker back.
    replayed: list[dict[str, Any]] = []
    for redelivery in range(3):
        if redelivery < 2:
            redis_client.flushall()
        if redelivery == 0:
            h.dynamodb.update_item(
                TableName="sluice-test-ledger",
                Key={"pk": {"S": "effect-1"}},
                UpdateExpression="REMOVE complete",
            )
        h.send(body)
        again = h.process(h.receive(), router)
        assert again.failed_message_ids == [] and again.plan_mismatches == 0
        replayed.extend(h.drain(h.state_url))
    assert len(calls) == 1  # the router ran once for this envelope
    assert [(m["Body"], m["MD5OfBody"]) for m in replayed] == [(sent["Body"], sent["MD5OfBody"])]
    h.send(sent["Body"])
    h.run(router)
    assert [i["state"] for i in h.sunk_items()] == [{"order": 0}]  # exactly once at the sink


def test_a_router_run_that_loses_the_race_to_a_different_plan_is_dead_lettered_with_both_hashes(
    make_harness: Any,
) -> None:
    from runtime.codec import ATTR_DETAIL, ATTR_ERROR
    from runtime.pipeline.plan import OutputRules, Plan, build_outputs

    h = make_harness()
    body = envelope("race-1", [{"n": 0}])
    theirs = Plan("D", tuple(build_outputs(codec.decode(body), "D", {}, {}, OutputRules(max_bytes=4096))))

    def router(state: dict[str, Any]) -> dict[str, Any]:
        # Meanwhile another worker (no Redis to keep it out) recorded a plan of its own.
        h.ledger.create_or_get("race-1", theirs)
        return {"n": 1}

    h.send(body)
    result = h.process(h.receive(), router)
    assert result.plan_mismatches == 1 and result.failed_message_ids == []
    [dead] = h.drain(h.dlq_url)
    attributes = {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}
    assert attributes[ATTR_REASON] == "plan_mismatch"
    assert attributes[ATTR_ERROR] == "PlanMismatch"
    assert theirs.digest in attributes[ATTR_DETAIL]
    assert dead["Body"] == body.decode()  # the delivery as it came
    assert h.drain(h.state_url) == []  # this run's output was not sent: the recorded plan governs
    assert [i["state"] for i in h.sunk_items()] == [{"n": 0}]


def test_bad_json_is_quarantined_and_a_plain_json_body_is_one_item(make_harness: Any) -> None:
    h = make_harness()
    h.send("{not json")
    h.send('{"order": 7}')
    h.run(lambda s: None)

    [dead] = h.drain(h.dlq_url)
    assert dead["Body"] == "{not json"
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "invalid_json"
    assert dead["MessageAttributes"][ATTR_SOURCE]["StringValue"]
    [item] = h.sunk_items()
    assert item["state"] == {"order": 7}
    assert len(item["id"]) == 36  # the SQS message id


def test_delivery_leased_elsewhere_is_bounced_for_the_lease_remaining(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    h = make_harness()
    other = Leases(redis_client, lease_ms=5_000, done_ttl_ms=1_000)
    other.claim(["busy-1"])
    h.send(envelope("busy-1", [{}]))
    result = h.process(h.receive(), hello_router)
    assert result.bounced == 1 and len(result.failed_message_ids) == 1
    assert h.receive() == []  # invisible for the rest of the other worker's lease
    assert h.drain(h.state_url) == []
    assert h.ledger.read("busy-1") is None


def test_handler_takes_the_canonical_lambda_event(make_harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.pipeline import build_pipeline
    from tests.support.events import load_event

    h = make_harness()
    pipeline = build_pipeline(h.settings, h.clients, router=hello_router)

    response = invoke_function(monkeypatch, pipeline, load_event("sqs_standard"))
    assert response == {"batchItemFailures": []}
    outputs = bodies(h.drain(h.state_url))
    assert sorted(len(o["items"]) for o in outputs) == [1, 1]
    states = sorted((o["items"][0]["state"] for o in outputs), key=len)
    assert states == [{"greeting": "hello"}, {"order": 42, "from": "the HTTP API", "greeting": "hello"}]
    assert {o["parent"] for o in outputs} == {"batch-1/0", "2e1424d4-f796-459a-8184-9c92662be6da"}


def test_codec_round_trips_history() -> None:
    item = codec.Item(id="a", step=2, attempt=0, state={}, history=("x", "y"))
    envelope_ = codec.Envelope(id="e", parent=None, items=(item,))
    assert codec.decode(codec.encode(envelope_)) == envelope_


def test_ledger_item_expires_after_the_dedup_horizon(make_harness: Any) -> None:
    import time

    h = make_harness(dedup_horizon_s=3 * 86_400)
    h.send(envelope("ttl-1", [{}]))
    h.process(h.receive(), hello_router)
    item = h.dynamodb.get_item(TableName="sluice-test-ledger", Key={"pk": {"S": "ttl-1"}})["Item"]
    assert abs(int(item["expires_at"]["N"]) - (time.time() + 3 * 86_400)) < 60
    assert item["complete"] == {"BOOL": True}


def test_the_handler_runs_the_router_its_settings_name(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.pipeline import build_pipeline

    h = make_harness(router="runtime.examples.hello:router")
    pipeline = build_pipeline(h.settings, h.clients)

    h.send(envelope("named-1", [{}]))
    messages = h.receive()
    assert invoke_function(monkeypatch, pipeline, {"Records": h.records(messages)}) == {
        "batchItemFailures": []
    }
    [out] = bodies(h.drain(h.state_url))
    assert out["items"][0]["state"] == {"greeting": "hello"}


def test_a_router_spec_must_name_a_callable() -> None:
    from runtime.errors import ConfigError
    from runtime.pipeline.state import load_router

    assert load_router("runtime.examples.hello:router") is hello_router
    for bad in ("runtime.examples.hello", "runtime.examples.hello:add_greeting.__doc__", ":router"):
        with pytest.raises((ConfigError, AttributeError)):
            load_router(bad)


def test_metrics_name_plan_mismatches_and_steps(capsys: pytest.CaptureFixture[str]) -> None:
    from collections import Counter

    from runtime.observability import metrics
    from runtime.pipeline import BatchResult, publish

    @metrics.log_metrics  # as the router functions publish: the decorator flushes the batch's metrics
    def invocation(event: dict[str, Any], context: Any) -> None:
        publish(BatchResult(messages=2, plan_mismatches=1, steps=Counter({("add_name", "ok"): 3})))

    invocation({}, None)
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert any(line.get(metric_names.PLAN_MISMATCH) == [1.0] for line in emf)
    assert any(line.get(metric_names.TRANSITIONS) == [3.0] and line.get("step") == "add_name" for line in emf)


def test_the_router_function_runs_its_pipeline_and_flushes_its_metrics(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.pipeline import build_pipeline

    h = make_harness()
    pipeline = build_pipeline(h.settings, h.clients, router=hello_router)
    h.send(envelope("function-1", [{}]))
    event = {"Records": h.records(h.receive())}
    assert invoke_function(monkeypatch, pipeline, event) == {"batchItemFailures": []}
    [out] = bodies(h.drain(h.state_url))
    assert out["items"][0]["state"] == {"greeting": "hello"}
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert any(line.get("Messages") == [1.0] and line.get("ItemsNext") == [1.0] for line in emf)


def test_fifo_handler_takes_the_canonical_lambda_event(
    redis_client: redis.Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.pipeline import build_pipeline
    from tests.support.events import load_event

    with mock_aws():
        h = Harness.create(mock_client, redis_client, redis_server.url, fifo=True)
        pipeline = build_pipeline(h.settings, h.clients, router=hello_router, fifo=True)

        assert invoke_function(monkeypatch, pipeline, load_event("sqs_fifo"), fifo=True) == {
            "batchItemFailures": []
        }
        [out] = h.drain(h.state_url)
        assert out["Attributes"]["MessageGroupId"] == "sluice"  # the configured group
        body = orjson.loads(out["Body"])
        assert out["Attributes"]["MessageDeduplicationId"] == body["id"] and len(body["id"]) == 26
        assert body["items"][0]["state"] == {"greeting": "hello"}


def test_an_unexpected_error_fails_the_batch_and_gives_the_leases_back(make_harness: Any) -> None:
    from dataclasses import replace

    h = make_harness()

    class BrokenResultStore:
        def write(self, envelope_id: str, body: bytes) -> None:
            raise RuntimeError("a bug, not an I/O failure")

    h.send(envelope("bug-1", [{"greeting": "x", "name": "y"}]))
    messages = h.receive()
    from runtime.pipeline import build_pipeline

    broken = build_pipeline(
        h.settings, replace(h.clients, result_store=BrokenResultStore()), router=hello_router
    )
    with pytest.raises(RuntimeError):
        broken.run(h.records(messages), remaining_ms=30_000)
    assert redis_keys(h) == []  # no lease left behind to bounce Lambda's retry
    again = h.process(messages, hello_router)
    assert again.bounced == 0 and again.followed_plans == 1 and again.failed_message_ids == []
    [item] = h.sunk_items()
    assert item["state"] == {"greeting": "x", "name": "y"}


def redis_keys(h: Harness) -> list[bytes]:
    return [k for k in h.redis.keys("{sluice:router}:e:*") if h.redis.get(k) != b"D"]


def test_a_finished_sink_only_envelope_redelivered_after_redis_loss_sends_nothing(
    make_harness: Any, redis_client: redis.Redis
) -> None:
    h = make_harness()
    body = envelope("sunk-1", [{"n": 0}, {"n": 1}])
    h.send(body)
    first = h.process(h.receive(), lambda s: None)
    assert first.ledger_writes == 1  # the plan only: its sink object is its completion record

    redis_client.flushall()
    h.send(body)
    again = h.process(h.receive(), lambda s: {"changed": True})  # even a router that changed
    assert again.followed_plans == 1 and again.failed_message_ids == [] and again.plan_mismatches == 0
    assert h.drain(h.state_url) == []
    assert [i["state"] for i in h.sunk_items()] == [{"n": 0}, {"n": 1}]
