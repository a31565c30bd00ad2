"""The fenced Redis protocol of ingest (real redis-server): every write checks the owner
token and the deadline against Redis TIME, and renewal never re-creates a lost lease."""

from __future__ import annotations

import pytest
import redis

from runtime.errors import LeaseLost
from runtime.ingest import coord as keys
from runtime.ingest.coord import Coordinator


@pytest.fixture
def coord(redis_client: redis.Redis) -> Coordinator:
    return Coordinator(redis_client)


def expire(client: redis.Redis, batch: str) -> None:
    client.zadd(keys.PROCESSING, {batch: 0})


def test_owner_writes_and_commits(coord: Coordinator, redis_client: redis.Redis) -> None:
    coord.claim("b1", "t1", 30)
    coord.ack("b1", "t1", 30, [0, 1])
    coord.set_cursor("b1", "t1", 30, 4)
    assert coord.acked("b1") == {0, 1}
    coord.commit("b1", "t1")
    assert redis_client.zscore(keys.PROCESSED, "b1") is not None
    assert redis_client.zcard(keys.PROCESSING) == 0 and not redis_client.exists(keys.ACKS_PREFIX + "b1")
    assert redis_client.hlen(keys.OWNERS) == 0 and redis_client.hlen(keys.CURSORS) == 0


def test_a_batch_is_claimed_once(coord: Coordinator) -> None:
    coord.claim("b1", "t1", 30)
    with pytest.raises(LeaseLost):
        coord.claim("b1", "t2", 30)


@pytest.mark.parametrize("write", ["renew", "ack", "commit", "halt", "release", "drop", "cursor"])
@pytest.mark.parametrize("how", ["wrong_token", "expired", "gone"])
def test_every_write_is_fenced(coord: Coordinator, redis_client: redis.Redis, write: str, how: str) -> None:
    coord.claim("b1", "owner", 30)
    token = "owner"
    if how == "wrong_token":
        token = "stale"
    elif how == "expired":
        expire(redis_client, "b1")
    else:
        redis_client.flushall()
    calls = {
        "renew": lambda: coord.renew("b1", token, 30),
        "ack": lambda: coord.ack("b1", token, 30, [0]),
        "commit": lambda: coord.commit("b1", token),
        "halt": lambda: coord.halt("b1", token),
        "release": lambda: coord.release("b1", token),
        "drop": lambda: coord.drop("b1", token),
        "cursor": lambda: coord.set_cursor("b1", token, 30, 1),
    }
    before = {k: redis_client.type(k) for k in redis_client.keys("*")}
    scores = redis_client.zrange(keys.PROCESSING, 0, -1, withscores=True)
    with pytest.raises(LeaseLost):
        calls[write]()
    assert redis_client.zrange(keys.PROCESSING, 0, -1, withscores=True) == scores
    assert {k: redis_client.type(k) for k in redis_client.keys("*")} == before, "a fenced write wrote"
    if how == "gone":
        assert redis_client.zcard(keys.PROCESSING) == 0, "renewal never re-creates a lost lease"


def test_release_hands_the_batch_back_at_once(coord: Coordinator) -> None:
    coord.claim("b1", "t1", 30)
    coord.release("b1", "t1")
    taken = coord.take_resumable("t2", 30)
    assert taken is not None and taken.batch == "b1" and taken.runs == 1, "a clean release is no death"
    assert coord.take_resumable("t3", 30) is None


def test_expired_leases_are_requeued_and_deaths_counted(
    coord: Coordinator, redis_client: redis.Redis
) -> None:
    coord.claim("b1", "t1", 30)
    coord.claim("b2", "t1", 30)
    expire(redis_client, "b1")
    assert coord.requeue_expired() == ["b1"]
    taken = coord.take_resumable("t2", 30)
    assert taken is not None and taken.batch == "b1" and taken.runs == 2
    coord.set_cursor("b1", "t2", 30, 7)
    expire(redis_client, "b1")
    coord.requeue_expired()
    again = coord.take_resumable("t3", 30)
    assert again is not None and again.runs == 3 and again.cursor == 7
    with pytest.raises(LeaseLost):
        coord.ack("b1", "t2", 30, [0])


def test_a_live_lease_is_never_taken(coord: Coordinator, redis_client: redis.Redis) -> None:
    coord.claim("b1", "t1", 30)
    assert coord.make_resumable("b1")
    assert coord.take_resumable("t2", 30) is None
    assert redis_client.zcard(keys.RESUMABLE) == 0
    coord.renew("b1", "t1", 30)


def test_known_and_counts(coord: Coordinator) -> None:
    coord.claim("b1", "t1", 30)
    coord.make_resumable("b2")
    coord.claim("b3", "t1", 30)
    coord.commit("b3", "t1")
    assert coord.known(["b1", "b2", "b3", "b4"]) == {"b1", "b2", "b3"}
    assert coord.counts() == {"in_flight": 1, "resumable": 1, "halted": 0}


def test_a_failed_run_counts_and_waits_out_its_backoff(coord: Coordinator, redis_client: redis.Redis) -> None:
    coord.claim("b1", "t1", 30)
    coord.fail("b1", "t1", 60)
    assert int(redis_client.hget(keys.RUNS, "b1") or 0) == 1, "the run counts (release would undo it)"
    assert coord.take_resumable("t2", 30) is None, "backing off"
    redis_client.zadd(keys.RESUMABLE, {"b1": 0})
    taken = coord.take_resumable("t2", 30)
    assert taken is not None and taken.runs == 2
    coord.release("b1", "t2")
    assert int(redis_client.hget(keys.RUNS, "b1") or 0) == 1
    with pytest.raises(LeaseLost):
        coord.fail("b1", "t2", 60)  # fenced like every write
