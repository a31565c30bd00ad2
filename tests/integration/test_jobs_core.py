"""Jobs: request validation, the outcome document, the worker step, the waiter's wake-ups and
GET's answers (in-process moto, real Redis)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from moto import mock_aws
from redis.backoff import NoBackoff
from redis.retry import Retry

from local.servers import RedisServer
from runtime import codec, metric_names
from runtime.codec import ATTR_REASON
from runtime.examples.jobs_worker import text_stats
from runtime.jobs import BadJobRequest, JobClients, JobOutcome, job_status, submit_job
from runtime.jobs.model import JOB_FIELD, channel, parse_job_body, status_key
from runtime.observability import metrics
from runtime.pipeline import PoisonItem
from tests.support.aws import mock_client
from tests.support.events import http_api_event, load_event
from tests.support.jobs import Jobs
from tests.support.pipeline import BUCKET, Harness

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(redis_client: redis.Redis, redis_server: RedisServer) -> Iterator[Harness]:
    with mock_aws():
        yield Harness.create(mock_client, redis_client, redis_server.url)


def budget(seconds: float) -> Any:
    """A Lambda-like remaining-time function: `seconds` from now."""
    deadline = time.monotonic() + seconds
    return lambda: deadline - time.monotonic()


def body_of(answer: Any) -> dict[str, Any]:
    return orjson.loads(answer.response()["body"])  # type: ignore[no-any-return]


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_body"),
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b"[1, 2]", 400, "not_an_object"),
        (b'"text"', 400, "not_an_object"),
        (b'{"text": "' + b"x" * 200 + b'"}', 413, "body_too_large"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, status: int, code: str) -> None:
    with pytest.raises(BadJobRequest) as refused:
        parse_job_body(body, max_bytes=100)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_refused_post_enqueues_nothing(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.2)
    answer = submit_job(b"[]", clients=jobs.clients, settings=jobs.settings)
    assert answer.status == 400 and body_of(answer)["error"] == "not_an_object"
    assert harness.in_flight() == 0 and harness.redis.keys("*") == []


# -- the outcome document -------------------------------------------------------------------------


def test_a_large_result_is_announced_without_it_but_stored_whole() -> None:
    outcome = JobOutcome.done("a" * 32, {"blob": "x" * 100})
    stored = orjson.loads(outcome.document())
    announced = orjson.loads(outcome.announcement(inline_max_bytes=50))
    assert stored["result"] == {"blob": "x" * 100} and stored["result_bytes"] == outcome.result_bytes
    assert "result" not in announced and announced["result_bytes"] == outcome.result_bytes
    assert JobOutcome.from_json(outcome.document()) == outcome
    assert orjson.loads(outcome.announcement(inline_max_bytes=10_000))["result"] == {"blob": "x" * 100}


# -- the worker step ------------------------------------------------------------------------------


def test_the_worker_stores_then_announces_and_a_rerun_keeps_the_first_outcome(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    router = jobs.router(text_stats)
    job_id = "0" * 32
    listener = harness.redis.pubsub()
    listener.subscribe(channel(job_id))
    assert listener.get_message(timeout=1)["type"] == "subscribe"

    state: Any = {JOB_FIELD: job_id, "state": {"text": "one two\nthree"}}
    while state is not None:
        state = router(state)
    message = listener.get_message(timeout=1)
    assert orjson.loads(message["data"])["result"] == {"text": "one two\nthree", "words": 3, "lines": 2}
    key = f"jobs/{job_id}.json"
    assert orjson.loads(harness.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["status"] == "done"

    # A redelivery after a crash computes something else (a changed router): S3 keeps the first.
    again = router.finish(JobOutcome.done(job_id, {"other": True}))
    assert orjson.loads(again.result_json or b"") == {"text": "one two\nthree", "words": 3, "lines": 2}
    assert orjson.loads(harness.redis.get(status_key(job_id)))["result"]["words"] == 3
    assert 0 < harness.redis.ttl(status_key(job_id)) <= 86_400
    listener.close()


def _job_envelope(job_id: str, inner: Any) -> bytes:
    item = codec.Item(id=job_id, step=0, attempt=0, state={JOB_FIELD: job_id, "state": inner})
    return codec.encode(codec.Envelope(id=job_id, parent=None, items=(item,)))


def _dead_letter_reasons(harness: Harness) -> list[str]:
    return [m["MessageAttributes"][ATTR_REASON]["StringValue"] for m in harness.drain(harness.dlq_url)]


def test_a_poisoned_job_is_recorded_failed_once_its_item_is_in_the_dlq(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    router = jobs.router(text_stats)
    with pytest.raises(PoisonItem) as poisoned:  # the step itself only raises ...
        router({JOB_FIELD: "1" * 32, "state": {"text": 7}})
    assert poisoned.value.reason == "no_text" and jobs.store.read_outcome("1" * 32) is None
    harness.send(_job_envelope("1" * 32, {"text": 7}))
    harness.run(router)  # ... the framework quarantines the item, then records the job failed
    assert _dead_letter_reasons(harness) == ["no_text"]
    failed = jobs.store.read_outcome("1" * 32)
    assert failed is not None and failed.status == "failed"
    assert failed.error == {
        "reason": "no_text",
        "detail": "a text-statistics job needs a string field 'text'",
    }


def test_a_job_whose_router_keeps_failing_ends_failed_not_pending(harness: Harness) -> None:
    jobs = Jobs.create(harness)

    def always_broken(state: Any) -> Any:
        raise ConnectionError("the job's dependency is down")

    router = jobs.router(always_broken)
    harness.send(_job_envelope("2" * 32, {"text": "x"}))
    harness.run(router)  # max_attempts (3) runs: two retries, then the DLQ
    assert _dead_letter_reasons(harness) == ["ConnectionError"]
    failed = jobs.store.read_outcome("2" * 32)
    assert failed is not None and failed.status == "failed" and failed.error["reason"] == "ConnectionError"
    answer = job_status("2" * 32, clients=jobs.clients, settings=jobs.settings)
    assert answer.status == 200 and body_of(answer)["status"] == "failed"


def test_items_that_are_not_jobs_go_to_the_fallback_or_are_poison(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    assert jobs.router(text_stats, fallback=lambda s: {**s, "seen": True})({"n": 1}) == {"n": 1, "seen": True}
    with pytest.raises(PoisonItem):
        jobs.router(text_stats)({"n": 1})


# -- the waiter: no lost wake-ups -----------------------------------------------------------------


class CompletingQueue:
    """The real SQS client, plus a worker that finishes each job the moment it is enqueued,
    before the waiter starts waiting (the race a subscribe-after-enqueue design loses)."""

    def __init__(self, jobs: Jobs, *, announce: bool = True) -> None:
        self.jobs, self.announce = jobs, announce

    def send_message(self, **kwargs: Any) -> Any:
        sent = self.jobs.h.sqs.send_message(**kwargs)
        [item] = codec.decode(kwargs["MessageBody"]).items
        outcome = JobOutcome.done(item.state[JOB_FIELD], {"echo": item.state["state"]})
        store = self.jobs.store
        store.write_outcome(outcome)
        if self.announce:
            store.announce(outcome)
        return sent


def test_a_completion_before_the_wait_begins_is_seen(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=5)
    clients = JobClients(sqs=CompletingQueue(jobs), s3=harness.s3, redis=harness.redis)
    answer = submit_job(b'{"a": 1}', clients=clients, settings=jobs.settings)
    assert answer.status == 200 and body_of(answer)["result"] == {"echo": {"a": 1}}


def test_a_completion_lost_with_redis_is_found_in_s3_before_answering_202(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.3)
    clients = jobs.clients.__class__(
        sqs=CompletingQueue(jobs, announce=False), s3=harness.s3, redis=harness.redis
    )
    answer = submit_job(b'{"a": 2}', clients=clients, settings=jobs.settings)
    assert answer.status == 200 and body_of(answer)["status"] == "done"


def test_a_wait_that_times_out_answers_202_with_the_status_url(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.2)
    answer = submit_job(b'{"text": "x"}', clients=jobs.clients, settings=jobs.settings)
    body = body_of(answer)
    assert answer.status == 202 and answer.headers["location"] == f"/jobs/{body['job_id']}"
    [message] = harness.receive()
    [item] = codec.decode(message["Body"]).items
    assert item.id == body["job_id"] and item.state == {JOB_FIELD: body["job_id"], "state": {"text": "x"}}


def test_many_waiters_each_get_their_own_completion(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=5)
    clients = JobClients(sqs=CompletingQueue(jobs), s3=harness.s3, redis=harness.redis)
    answers: dict[int, Any] = {}

    def post(n: int) -> None:
        answers[n] = body_of(submit_job(orjson.dumps({"n": n}), clients=clients, settings=jobs.settings))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: a["result"]["echo"]["n"] for n, a in answers.items()} == {n: n for n in range(20)}


# -- GET /jobs/{id} -------------------------------------------------------------------------------


def test_get_answers_pending_done_and_done_again_when_redis_lost_the_status(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.1)
    job_id = body_of(submit_job(b'{"text": "a b"}', clients=jobs.clients, settings=jobs.settings))["job_id"]
    pending = job_status(job_id, clients=jobs.clients, settings=jobs.settings)
    assert (pending.status, body_of(pending)["status"]) == (202, "pending")

    jobs.router(text_stats).finish(JobOutcome.done(job_id, {"words": 2}))
    done = body_of(job_status(job_id, clients=jobs.clients, settings=jobs.settings))
    assert done["status"] == "done" and done["result"] == {"words": 2}

    harness.redis.flushall()
    again = job_status(job_id, clients=jobs.clients, settings=jobs.settings)
    assert again.status == 200 and body_of(again) == done


def test_get_answers_a_presigned_url_for_a_large_result(harness: Harness) -> None:
    jobs = Jobs.create(harness, inline_max_bytes=16)
    job_id = "2" * 32
    jobs.router(text_stats).finish(JobOutcome.done(job_id, {"blob": "y" * 64}))
    for _ in range(2):  # from the Redis status, then from S3 alone
        body = body_of(job_status(job_id, clients=jobs.clients, settings=jobs.settings))
        assert "result" not in body and body["result_bytes"] > 16
        assert f"jobs/{job_id}.json" in body["result_url"] and "Signature" in body["result_url"]
        harness.redis.flushall()


def test_get_refuses_a_malformed_id_and_does_not_know_an_unknown_one(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    assert job_status("../etc", clients=jobs.clients, settings=jobs.settings).status == 400
    assert job_status("3" * 32, clients=jobs.clients, settings=jobs.settings).status == 404


# -- the handler ----------------------------------------------------------------------------------


def test_the_handler_dispatches_on_the_route_key_and_counts_its_answers(harness: Harness) -> None:
    metrics.clear_metrics()
    jobs = Jobs.create(harness, wait_s=0.1)
    api = jobs.api
    posted = api(http_api_event("http_api_v2_iam", body=b'{"text": "hi"}'))
    assert posted["statusCode"] == 202 and posted["headers"]["location"].startswith("/jobs/")
    job_id = orjson.loads(posted["body"])["job_id"]
    got = api(http_api_event("http_api_v2_jwt", path=f"/jobs/{job_id}", path_parameters={"id": job_id}))
    assert (got["statusCode"], orjson.loads(got["body"])["status"]) == (202, "pending")
    binary = api(load_event("http_api_v2_binary"))  # base64 of bytes that are not UTF-8
    assert (binary["statusCode"], orjson.loads(binary["body"])["error"]) == (400, "invalid_json")
    assert (
        api(http_api_event("http_api_v2_iam", method="DELETE", route_key="DELETE /jobs"))["statusCode"] == 404
    )
    counted = {name: sum(m["Value"]) for name, m in metrics.metric_set.items()}
    assert counted[metric_names.JOBS_PENDING] >= 2 and counted[metric_names.JOBS_REFUSED] >= 2


# -- Redis unreachable ----------------------------------------------------------------------------


def unreachable_redis() -> redis.Redis:
    """A client for a port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return redis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), retries=0)
    )


def test_without_redis_a_post_is_still_accepted_enqueued_and_answered_202(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=1)
    clients = JobClients(sqs=harness.sqs, s3=harness.s3, redis=unreachable_redis())
    answer = submit_job(b'{"text": "x"}', clients=clients, settings=jobs.settings)
    assert answer.status == 202 and harness.in_flight() == 1  # S3 holds its acceptance
    job_id = body_of(answer)["job_id"]
    assert job_status(job_id, clients=clients, settings=jobs.settings).status == 202


def test_a_post_whose_message_cannot_be_sent_answers_503_with_a_reason(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=1)
    harness.sqs.delete_queue(QueueUrl=harness.state_url)
    answer = submit_job(b'{"text": "x"}', clients=jobs.clients, settings=jobs.settings)
    assert (answer.status, body_of(answer)["error"]) == (503, "unavailable")
    assert answer.headers["retry-after"] == "1"


def test_without_redis_the_worker_still_stores_the_outcome_and_get_finds_it(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    offline = Jobs(harness, jobs.settings, redis=unreachable_redis())
    job_id = "4" * 32
    stored = offline.router(text_stats).finish(JobOutcome.done(job_id, {"words": 1}))  # logged, not raised
    assert stored.status == "done"
    body = body_of(job_status(job_id, clients=offline.clients, settings=jobs.settings))
    assert body["status"] == "done" and body["result"] == {"words": 1}


# -- every answer within the deadline -------------------------------------------------------------


def slow(client: Any, operation: str, seconds: float) -> None:
    """Delay every `operation` call of a real (moto) client by `seconds`, before it is sent."""
    client.meta.events.register(
        f"before-send.{client.meta.service_model.endpoint_prefix}.{operation}",
        lambda **_: time.sleep(seconds),
    )


def timed_submit(jobs: Jobs, *, remaining_s: float | None = None) -> tuple[Any, float]:
    """POST /jobs with `remaining_s` left in the function: the answer and how long it took."""
    started = time.monotonic()
    answer = submit_job(
        b'{"text": "x"}',
        clients=jobs.clients,
        settings=jobs.settings,
        remaining_s=None if remaining_s is None else budget(remaining_s),
    )
    return answer, time.monotonic() - started


def test_a_slow_acceptance_write_answers_503_within_the_budget_and_enqueues_nothing(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=5)
    slow(harness.s3, "PutObject", 4)
    answer, took_s = timed_submit(jobs, remaining_s=2.5)
    assert took_s < 2.5  # the function's own deadline
    assert answer.status == 503 and set(body_of(answer)) == {"error", "detail"}
    assert harness.in_flight() == 0


def test_a_slow_s3_read_after_the_wait_still_answers_202_within_the_budget(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.3)
    slow(harness.s3, "GetObject", 4)
    answer, took_s = timed_submit(jobs, remaining_s=2.5)
    assert took_s < 2.5
    assert answer.status == 202 and answer.headers["location"] == f"/jobs/{body_of(answer)['job_id']}"
    assert harness.in_flight() == 1  # accepted and enqueued: the 202 is true


def test_a_paused_redis_still_answers_202_within_the_budget(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=5)
    harness.redis.client_pause(2500)  # every Redis command waits 2.5 s
    answer, took_s = timed_submit(jobs, remaining_s=2.0)
    assert took_s < 2.0
    assert answer.status == 202 and harness.in_flight() == 1
    time.sleep(2.5 - took_s)  # let the pause end before the fixture flushes


def test_the_wait_is_what_is_left_of_wait_s_after_the_set_up(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=2)
    slow(harness.s3, "PutObject", 1.5)  # the acceptance record takes most of wait_s
    answer, took_s = timed_submit(jobs)
    assert answer.status == 202
    assert took_s < 2 + 1  # wait_s, and a second for answering; not 1.5 + 2


def test_the_subscription_is_confirmed_by_redis_before_it_is_used(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    harness.redis.client_pause(600)  # the SUBSCRIBE is answered only once the pause ends
    started = time.monotonic()
    with jobs.store.subscription("5" * 32):
        entered = time.monotonic() - started
    assert entered >= 0.4  # a lower bound: it waited for the server's confirmation


def test_after_redis_loses_everything_get_answers_202_for_an_accepted_job_and_404_for_others(
    harness: Harness,
) -> None:
    jobs = Jobs.create(harness, wait_s=0.1)
    job_id = body_of(submit_job(b'{"text": "a b"}', clients=jobs.clients, settings=jobs.settings))["job_id"]
    harness.redis.flushall()
    pending = job_status(job_id, clients=jobs.clients, settings=jobs.settings)
    assert (pending.status, body_of(pending)["status"]) == (202, "pending")
    jobs.router(text_stats).finish(JobOutcome.done(job_id, {"words": 2}))
    harness.redis.flushall()
    done = job_status(job_id, clients=jobs.clients, settings=jobs.settings)
    assert (done.status, body_of(done)["result"]) == (200, {"words": 2})
    unknown = job_status("6" * 32, clients=jobs.clients, settings=jobs.settings)
    assert unknown.status == 404 and set(body_of(unknown)) == {"error", "detail"}


# -- Idempotency-Key ------------------------------------------------------------------------------


def test_an_idempotency_key_names_one_job_per_caller_and_refuses_another_body(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.1)

    def post(body: bytes, key: str, caller: str = "arn:alice") -> Any:
        return submit_job(
            body, clients=jobs.clients, settings=jobs.settings, idempotency_key=key, caller=caller
        )

    first, again = post(b'{"text": "a"}', "k1"), post(b'{"text": "a"}', "k1")
    assert first.status == again.status == 202
    assert body_of(first)["job_id"] == body_of(again)["job_id"]
    # Sent twice under one envelope id: the router's ledger makes it one job at the sink.
    ids = {codec.decode(m["Body"]).id for m in harness.receive(max_messages=10)}
    assert ids == {body_of(first)["job_id"]}
    conflict = post(b'{"text": "b"}', "k1")
    assert (conflict.status, body_of(conflict)["error"]) == (409, "idempotency_conflict")
    other_caller = post(b'{"text": "b"}', "k1", caller="arn:bob")
    assert other_caller.status == 202 and body_of(other_caller)["job_id"] != body_of(first)["job_id"]


def test_the_handler_takes_the_idempotency_key_scoped_by_the_caller(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.1)
    api = jobs.api

    def post(key: str, user: str) -> dict[str, Any]:
        event = http_api_event("http_api_v2_iam", body=b'{"text": "k"}', headers={"Idempotency-Key": key})
        event["requestContext"]["authorizer"]["iam"]["userArn"] = user
        return api(event)

    first, again = post("retry-1", "arn:alice"), post("retry-1", "arn:alice")
    other = post("retry-1", "arn:bob")
    ids = [orjson.loads(answer["body"])["job_id"] for answer in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    refused = post(" starts with a space", "arn:alice")
    assert (refused["statusCode"], orjson.loads(refused["body"])["error"]) == (400, "invalid_idempotency_key")
