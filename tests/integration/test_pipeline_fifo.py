"""The router on FIFO queues (moto server, real redis-server): order within a group across
failures and retries, other groups unaffected, poison isolated, a crash re-run, Redis flushed."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis

from local.servers import MotoServer, RedisServer
from runtime.codec import ATTR_REASON
from runtime.pipeline.plan import OutputKind
from tests.support.pipeline import Harness, envelope, run_handler_in_child

pytestmark = pytest.mark.slow

FAIL_ONCE: dict[str, int] = {}


def make_router(
    completed: list[str], *, always_bad: frozenset[str] = frozenset(), fail_once: frozenset[str] = frozenset()
) -> Any:
    def router(state: dict[str, Any]) -> None:
        name = state["name"]
        if name in always_bad:
            raise KeyError(f"{name} is broken")
        if name in fail_once and FAIL_ONCE.get(name, 0) == 0:
            FAIL_ONCE[name] = 1
            raise TimeoutError(f"{name} timed out once")
        completed.append(name)
        return None

    return router


@pytest.fixture(autouse=True)
def _reset_fail_once() -> None:
    FAIL_ONCE.clear()


@pytest.fixture
def harness(aws: Any, redis_client: redis.Redis, redis_server: RedisServer) -> Harness:
    return Harness.create(
        aws, redis_client, redis_server.url, fifo=True, max_attempts=3, backoff_base_s=1, backoff_cap_s=1
    )


def send_named(h: Harness, group: str, *names: str) -> None:
    for name in names:
        h.send(envelope(f"env-{name}", [{"name": name}], prefix=name), group_id=group)


def receive_all(h: Harness, count: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while len(messages) < count and time.monotonic() < deadline:
        messages.extend(h.receive())
    return messages


def test_one_group_fails_and_backs_off_in_order_while_the_other_proceeds(harness: Harness) -> None:
    h = harness
    completed: list[str] = []
    router = make_router(completed, fail_once=frozenset({"a2"}))
    send_named(h, "A", "a1", "a2", "a3")
    send_named(h, "B", "b1", "b2")
    first = h.process(receive_all(h, 5), router)

    assert sorted(completed) == ["a1", "b1", "b2"]  # a3 waits behind a2; group B is unaffected
    assert len(first.failed_message_ids) == 2

    h.run(router, timeout_s=20)
    assert [n for n in completed if n.startswith("a")] == ["a1", "a2", "a3"]
    assert Counter(i["state"]["name"] for i in h.sunk_items()) == Counter(["a1", "a2", "a3", "b1", "b2"])
    assert h.drain(h.dlq_url) == []


def test_poison_item_is_isolated_after_max_attempts_and_its_group_proceeds_in_order(harness: Harness) -> None:
    h = harness
    completed: list[str] = []
    router = make_router(completed, always_bad=frozenset({"bad"}))
    items = [{"name": "ok1"}, {"name": "bad"}, {"name": "ok2"}]
    h.send(envelope("env-mixed", items, prefix="m"), group_id="A")
    send_named(h, "A", "after1", "after2")
    h.run(router, timeout_s=30)

    [dead] = h.drain(h.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "KeyError"
    assert [i["state"]["name"] for i in orjson.loads(dead["Body"])["items"]] == ["bad"]
    # three failed runs (nothing written), then the plan: ok1/ok2 done, bad poisoned
    assert completed[-4:] == ["ok1", "ok2", "after1", "after2"]
    assert completed.count("after1") == 1
    assert sorted(i["state"]["name"] for i in h.sunk_items()) == ["after1", "after2", "ok1", "ok2"]


def test_redis_flushed_between_attempts_loses_and_doubles_nothing(
    harness: Harness, redis_client: redis.Redis
) -> None:
    h = harness
    completed: list[str] = []
    router = make_router(completed, fail_once=frozenset({"x2"}))
    h.send(envelope("env-x", [{"name": "x1"}, {"name": "x2"}, {"name": "x3"}], prefix="x"), group_id="X")
    send_named(h, "X", "x4")
    first = h.process(receive_all(h, 2), router)
    assert len(first.failed_message_ids) == 2 and h.ledger.read("env-x") is None  # all or nothing
    redis_client.flushall()

    h.run(router, timeout_s=20)
    names = Counter(i["state"]["name"] for i in h.sunk_items())
    assert names == Counter(["x1", "x2", "x3", "x4"])
    assert h.drain(h.dlq_url) == []


def test_crash_mid_run_then_rerun_sends_exactly_the_first_plan(
    aws: Any, redis_client: redis.Redis, redis_server: RedisServer, moto: MotoServer
) -> None:
    h = Harness.create(
        aws, redis_client, redis_server.url, fifo=True, fifo_items_per_envelope=2, fifo_group_field="customer"
    )
    states = [{"customer": c, "n": n} for n, c in enumerate(["c1", "c1", "c2", "c1", "c1", "c1"])]
    h.send(envelope("fifo-crash", states), group_id="in")
    messages = h.receive()
    code = run_handler_in_child(
        h,
        moto.url,
        messages,
        router="runtime.examples.hello:router",
        handler="runtime.handlers.fifo_router",
        SLUICE_KILL_AT="router.after_first_send",
    )
    assert code == 137
    plan = h.ledger.read("fifo-crash")
    assert plan is not None and not plan.complete and plan.outcomes == "N" * 6
    queued = [o for o in plan.outputs if o.kind is OutputKind.NEXT]
    assert len(queued) == 4  # c1 c1 | c2 | c1 c1 | c1: groups never mixed, 2 items at most

    from runtime.examples.hello import router as hello

    rerun, outputs = h.rerun_after_redis_loss(redis_client, "fifo-crash", hello)
    assert rerun.followed_plans == 1 and rerun.failed_message_ids == []
    sent = {(orjson.loads(m["Body"])["id"], hashlib.sha256(m["Body"].encode()).hexdigest()) for m in outputs}
    assert sent == {(o.id, o.sha256) for o in queued}
    groups = [m["Attributes"]["MessageGroupId"] for m in outputs]
    assert set(groups) == {"c1", "c2"}
    for message in outputs:
        assert message["Attributes"]["MessageDeduplicationId"] == orjson.loads(message["Body"])["id"]


def test_an_envelope_that_never_fits_the_time_budget_is_poisoned_whole(harness: Harness) -> None:
    h = harness
    runs: list[int] = []

    def slow(state: dict[str, Any]) -> None:
        runs.append(state["n"])
        time.sleep(0.05)
        return None

    h.send(envelope("env-big", [{"n": n} for n in range(6)]), group_id="T")
    send_named(h, "T", "behind")
    results = []
    while len(results) < 3:
        messages = h.receive(wait_s=1)
        if messages:
            results.append(h.process(messages, slow, remaining_ms=120))
    assert [len(r.failed_message_ids) for r in results[:2]] == [2, 2]  # the big one and its mate
    assert h.ledger.read("env-big") is not None
    dead = h.drain(h.dlq_url)
    assert [orjson.loads(m["Body"])["items"][0]["state"]["n"] for m in dead] == list(range(6))
    assert {m["MessageAttributes"][ATTR_REASON]["StringValue"] for m in dead} == {"time budget"}
    h.run(make_router([]), timeout_s=10)
    assert [i["state"]["name"] for i in h.sunk_items()] == ["behind"]


def test_bad_json_on_a_fifo_queue_is_quarantined_in_its_group_and_the_group_goes_on(harness: Harness) -> None:
    h = harness
    completed: list[str] = []
    h.send("{not json", group_id="Q")
    send_named(h, "Q", "q1")
    h.run(make_router(completed), timeout_s=10)
    [dead] = h.drain(h.dlq_url)
    assert dead["Body"] == "{not json"
    assert dead["Attributes"]["MessageGroupId"] == "Q"
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "invalid_json"
    assert completed == ["q1"]
