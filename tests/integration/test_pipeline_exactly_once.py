"""Exactly once at the sink, on the moto server and a real redis-server: duplicate and
concurrent deliveries, a real crash (the handler in a child process that `_exit`s at a kill
point), Redis flushed, and a re-run whose previously failing item now succeeds."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis

from local.servers import MotoServer, RedisServer
from runtime.clients import make_redis
from runtime.config import RedisSettings
from runtime.pipeline.plan import OutputKind
from tests.support.pipeline import Harness, envelope, run_handler_in_child

pytestmark = pytest.mark.slow

FLAKY_ENV = "SLUICE_TEST_FLAKY"


def flaky_router(state: dict[str, Any]) -> dict[str, Any] | None:
    """Moves `next` items on once, finishes `done` items, and fails `flaky` items while the
    process has SLUICE_TEST_FLAKY=1 (the crashed run) but not afterwards."""
    if state["kind"] == "flaky" and os.environ.get(FLAKY_ENV) == "1":
        raise ConnectionError("the downstream service is away")
    if state["kind"] == "next" and not state.get("moved"):
        return {**state, "moved": True}
    return None


def slow_hello(state: dict[str, Any]) -> dict[str, Any] | None:
    time.sleep(0.2)
    return {**state, "greeting": "hello"} if "greeting" not in state else None


@pytest.fixture
def harness(aws: Any, redis_client: redis.Redis, redis_server: RedisServer) -> Harness:
    return Harness.create(aws, redis_client, redis_server.url, lease_s=2)


def parents(messages: list[dict[str, Any]]) -> Counter[str]:
    return Counter(orjson.loads(m["Body"])["parent"] for m in messages)


def test_a_message_delivered_three_times_yields_its_successors_once(harness: Harness) -> None:
    h = harness
    body = envelope("dup-1", [{"n": 0}, {"n": 1}])
    for _ in range(3):
        h.send(body)
    messages: list[dict[str, Any]] = []
    while len(messages) < 3:
        messages.extend(h.receive())

    # Concurrently: three workers, one message each, started together.
    barrier = threading.Barrier(3)
    results = []

    def work(message: dict[str, Any]) -> None:
        barrier.wait()
        results.append(h.process([message], slow_hello))

    threads = [threading.Thread(target=work, args=(m,)) for m in messages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.bounced + r.skipped_done for r in results) == [0, 1, 1]

    # The bounced copies come back after the lease's remaining lifetime and are skipped; then
    # the same body delivered again, one at a time, is skipped too.
    time.sleep(2.2)
    for _ in range(2):
        h.send(body)
    outputs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and h.in_flight():
        batch = h.receive(wait_s=1)
        ours = [m for m in batch if orjson.loads(m["Body"])["id"] == "dup-1"]
        outputs.extend(m for m in batch if m not in ours)
        for m in batch:
            if m not in ours:
                h.sqs.delete_message(QueueUrl=h.state_url, ReceiptHandle=m["ReceiptHandle"])
        if ours:
            result = h.process(ours, slow_hello)
            assert result.skipped_done == 1 and result.ledger_writes == 0  # same id: one claim
            assert result.failed_message_ids == []
    assert parents(outputs) == {"dup-1": 1}
    [successor] = outputs
    assert [i["state"]["greeting"] for i in orjson.loads(successor["Body"])["items"]] == ["hello", "hello"]


def test_concurrent_duplicates_without_redis_reach_the_sink_once(
    harness: Harness, redis_server: RedisServer
) -> None:
    """Each worker sees a different (empty) Redis, as if Redis had been lost: only the ledger
    and the create-only sink stand between the duplicates and the sink."""
    h = harness
    body = envelope("dup-2", [{"n": i} for i in range(5)])
    for _ in range(3):
        h.send(body)
    messages: list[dict[str, Any]] = []
    while len(messages) < 3:
        messages.extend(h.receive())
    barrier = threading.Barrier(3)

    def work(db: int, message: dict[str, Any]) -> None:
        own = Harness(**{**h.__dict__, "redis": redis.Redis.from_url(redis_server.url, db=db), "results": []})
        barrier.wait()
        own.process([message], slow_hello)

    threads = [threading.Thread(target=work, args=(db, m)) for db, m in zip((1, 2, 3), messages, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for db in (1, 2, 3):
        redis.Redis.from_url(redis_server.url, db=db).flushdb()

    plan = h.ledger.read("dup-2")
    assert plan is not None and plan.complete
    h.run(slow_hello, timeout_s=30)
    sunk = h.sunk_items()
    assert sorted(i["state"]["n"] for i in sunk) == list(range(5))
    assert all(i["state"]["greeting"] == "hello" for i in sunk)
    assert len(h.sink_objects()) == 1


KILL_POINTS = ["router.after_plan", "router.after_first_send", "router.after_send", "router.after_sink"]


@pytest.mark.parametrize("redis_fate", ["flushed", "killed"])
@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_a_crash_at_any_step_then_redis_lost_then_a_rerun_replays_the_first_plan(
    aws: Any,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    moto: MotoServer,
    kill_point: str,
    redis_fate: str,
) -> None:
    h = Harness.create(aws, redis_client, redis_server.url, max_message_bytes=1024, lease_s=30)
    states = (
        [{"kind": "done", "n": i} for i in range(10)]
        + [{"kind": "next", "n": i, "pad": "x" * 300} for i in range(10, 16)]
        + [{"kind": "flaky", "n": 16}]
    )
    h.send(envelope("crash-1", states))
    messages = h.receive()

    code = run_handler_in_child(
        h,
        moto.url,
        messages,
        router=f"{__name__}:flaky_router",
        SLUICE_KILL_AT=kill_point,
        **{FLAKY_ENV: "1"},
    )
    assert code == 137
    plan = h.ledger.read("crash-1")
    assert plan is not None and not plan.complete
    assert plan.outcomes == "D" * 10 + "N" * 6 + "R"
    queued = [o for o in plan.outputs if o.kind in (OutputKind.NEXT, OutputKind.RETRY)]
    assert len(queued) >= 3

    # Redis loses everything (flushed), or is down for the re-run (killed: nothing listens
    # where it was); the original message comes back; the flaky item would now succeed (this
    # process has no SLUICE_TEST_FLAKY), yet the re-run replays the first plan.
    rerunner = h
    if redis_fate == "killed":
        with socket.create_server(("127.0.0.1", 0)) as closed:
            dead_port = closed.getsockname()[1]
        dead = make_redis(RedisSettings(url=f"redis://127.0.0.1:{dead_port}"), timeout_s=0.2, retries=1)
        rerunner = Harness(**{**h.__dict__, "redis": dead, "results": []})
    rerun, outputs = rerunner.rerun_after_redis_loss(redis_client, "crash-1", flaky_router)
    assert rerun.followed_plans == 1 and rerun.failed_message_ids == []
    assert rerun.redis_unavailable == (redis_fate == "killed")

    sent = {(orjson.loads(m["Body"])["id"], hashlib.sha256(m["Body"].encode()).hexdigest()) for m in outputs}
    assert sent == {(o.id, o.sha256) for o in queued}  # the first plan's outputs, nothing else
    retries = [o for o in outputs if orjson.loads(o["Body"])["items"][0]["state"]["kind"] == "flaky"]
    assert retries and {orjson.loads(r["Body"])["items"][0]["attempt"] for r in retries} == {1}
    assert list(h.sink_objects()) == ["results/crash-1.json"]
    plan = h.ledger.read("crash-1")
    assert plan is not None and plan.complete

    # Downstream, the duplicates are recognised by id: every item reaches the sink once.
    for message in outputs:
        h.send(message["Body"])
    h.run(flaky_router, timeout_s=30, wait_s=0)
    ids = Counter(i["id"] for i in h.sunk_items())
    assert sorted(ids) == sorted(f"r#{n}" for n in range(17)) and set(ids.values()) == {1}
