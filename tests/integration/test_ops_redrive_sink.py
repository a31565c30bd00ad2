"""`sluice dlq redrive` through the real router to the S3 sink (moto server, redis-server):
items poisoned on purpose, redriven — one of them twice, as after a crash between the send and
the delete — reach the sink exactly once each; nothing is lost, nothing duplicated."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import redis

from local.servers import MotoServer, RedisServer
from ops.dlq import redrive, resolve
from ops.target import Target
from tests.support.pipeline import Harness, envelope

BROKEN = {"on": True}


def router(state: dict[str, Any]) -> dict[str, Any] | None:
    if state.get("kind") == "flaky" and BROKEN["on"]:
        raise ConnectionError("the downstream service is away")
    return None


def _harness_with_dlq(aws: Any, redis_client: redis.Redis, redis_server: RedisServer) -> Harness:
    h = Harness.create(aws, redis_client, redis_server.url, lease_s=2)
    dlq_arn = h.sqs.get_queue_attributes(QueueUrl=h.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    h.sqs.set_queue_attributes(
        QueueUrl=h.state_url,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 30})},
    )
    return h


def _target(moto: MotoServer, h: Harness) -> Target:
    return Target(name="test", endpoint_url=moto.url, region="us-east-1", queue_urls=[h.state_url, h.dlq_url])


def test_redrive_reaches_the_sink_exactly_once(
    aws: Any, redis_client: redis.Redis, redis_server: RedisServer, moto: MotoServer
) -> None:
    h = _harness_with_dlq(aws, redis_client, redis_server)
    states = [{"kind": "flaky" if i % 2 else "fine", "n": i} for i in range(8)]
    BROKEN["on"] = True
    try:
        h.send(envelope("e-1", states))
        h.run(router)
    finally:
        BROKEN["on"] = False
    target = _target(moto, h)
    queues = resolve(target, h.dlq_url.rsplit("/", 1)[-1])
    # A crash between a send and its delete leaves the letter in both places: send one copy now.
    dead = h.receive(h.dlq_url, max_messages=1)
    assert dead, "nothing was poisoned"
    h.sqs.send_message(QueueUrl=h.state_url, MessageBody=dead[0]["Body"])
    h.sqs.change_message_visibility(
        QueueUrl=h.dlq_url, ReceiptHandle=dead[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    moved = redrive(target, queues, reason=None, maximum=None, dry_run=False)
    assert moved["redriven"] == 4 and moved["left_in_dlq"] == 0
    h.run(router)
    sunk = Counter(item["id"] for item in h.sunk_items())
    assert sunk == Counter({f"r#{i}": 1 for i in range(8)})
    assert h.drain(h.dlq_url) == []


def test_a_redriven_item_gets_fresh_attempts_from_the_routers_mark(
    aws: Any, redis_client: redis.Redis, redis_server: RedisServer, moto: MotoServer
) -> None:
    """`sluice dlq redrive` keeps bodies byte for byte; the router recognises the items it
    dead-lettered (their `dead_letter` mark) and starts them over, so a redriven item that
    fails again is retried max_attempts times before it could be poisoned again."""
    h = _harness_with_dlq(aws, redis_client, redis_server)
    max_attempts = h.settings.require_pipeline().max_attempts
    failures: Counter[int] = Counter()
    healing = {"after": None}  # None: the downstream is away; N: each flaky item fails N more times

    def recovering(state: dict[str, Any]) -> dict[str, Any] | None:
        if state.get("kind") == "flaky":
            failures[state["n"]] += 1
            if healing["after"] is None or failures[state["n"]] <= healing["after"]:
                raise ConnectionError("the downstream service is away")
        return None

    states = [{"kind": "flaky" if i % 2 else "fine", "n": i} for i in range(6)]
    h.send(envelope("e-2", states))
    h.run(recovering)
    flaky = {i for i in range(6) if i % 2}
    assert failures == Counter({i: max_attempts for i in flaky})  # poisoned after max_attempts
    failures.clear()
    healing["after"] = max_attempts - 1  # one attempt short of a second poisoning
    target = _target(moto, h)
    moved = redrive(
        target, resolve(target, h.dlq_url.rsplit("/", 1)[-1]), reason=None, maximum=None, dry_run=False
    )
    assert moved["redriven"] == len(flaky)
    h.run(recovering)
    assert failures == Counter({i: max_attempts for i in flaky})  # max_attempts - 1 failures, then done
    assert h.drain(h.dlq_url) == []
    sunk = Counter(item["id"] for item in h.sunk_items())
    assert sunk == Counter({f"r#{i}": 1 for i in range(6)})
