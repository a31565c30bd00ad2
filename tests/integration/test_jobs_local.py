"""gateway and jobs end to end on loopback: the local HTTP API (real jobs handler), the moto
server, a real redis-server, and a worker thread running the real router core against the
state queue (or the real router handler in a child process that dies at a kill point)."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
import redis

from local.http import REQUEST_ID_HEADER, LocalHttpApi
from local.servers import MotoServer, RedisServer
from runtime import codec
from runtime.codec import ATTR_REASON
from runtime.examples import enrich
from runtime.examples.jobs_worker import text_stats
from runtime.jobs.model import status_key
from runtime.pipeline.gateway import ITEM_PREFIX
from runtime.pipeline.leases import KEY_PREFIX as LEASE_PREFIX
from tests.support.jobs import Jobs, Worker, serve
from tests.support.pipeline import BUCKET, Harness, run_handler_in_child

pytestmark = pytest.mark.slow

Reply = tuple[int, dict[str, str], Any]


def call(api: LocalHttpApi, method: str, path: str, body: bytes | None = None) -> Reply:
    address = urllib.parse.urlsplit(api.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, orjson.loads(data)
    finally:
        connection.close()


@pytest.fixture
def harness(aws: Any, redis_client: redis.Redis, redis_server: RedisServer) -> Harness:
    return Harness.create(aws, redis_client, redis_server.url)


@pytest.fixture
def running(harness: Harness) -> Iterator[tuple[Jobs, LocalHttpApi, Worker]]:
    """The API (waiting up to 10 s) and one worker, both running."""
    jobs = Jobs.create(harness, wait_s=10)
    worker = Worker(harness, jobs.router(text_stats, fallback=enrich.router))
    worker.start()
    with serve(jobs) as api:
        yield jobs, api, worker
    worker.stop()


def test_post_jobs_answers_200_with_the_result(running: tuple[Jobs, LocalHttpApi, Worker]) -> None:
    _jobs, api, _worker = running
    status, _headers, body = call(api, "POST", "/jobs", b'{"text": "to be or\\nnot to be"}')
    assert status == 200 and body["status"] == "done"
    assert body["result"] == {"text": "to be or\nnot to be", "words": 6, "lines": 2}
    assert call(api, "GET", f"/jobs/{body['job_id']}")[2] == body


def test_a_post_that_times_out_answers_202_then_get_finds_the_result(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=0.3)
    with serve(jobs) as api:
        status, headers, body = call(api, "POST", "/jobs", b'{"text": "late"}')
        assert status == 202 and headers["location"] == f"/jobs/{body['job_id']}" == body["location"]
        assert call(api, "GET", headers["location"])[2]["status"] == "pending"
        harness.run(jobs.router(text_stats))  # the worker catches up after the waiter gave up
        status, _headers, done = call(api, "GET", headers["location"])
        assert status == 200 and done["result"] == {"text": "late", "words": 1, "lines": 1}
        harness.redis.delete(status_key(body["job_id"]))  # Redis lost the status: S3 answers
        assert call(api, "GET", headers["location"])[2] == done


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_body"),
        (b"{oops", 400, "invalid_json"),
        (b"[1]", 400, "not_an_object"),
        (b'{"text": "' + b"x" * 300_000 + b'"}', 413, "body_too_large"),
    ],
)
def test_bad_input_is_refused_and_never_enqueued(
    harness: Harness, body: bytes, status: int, code: str
) -> None:
    with serve(Jobs.create(harness, wait_s=0.2)) as api:
        reply = call(api, "POST", "/jobs", body)
        assert (reply[0], reply[2]["error"]) == (status, code)
        assert call(api, "GET", "/jobs/not-a-job-id")[0] == 400
        assert call(api, "GET", "/jobs/" + "f" * 32)[0] == 404
    assert harness.in_flight() == 0


def test_a_failed_job_is_answered_failed_and_its_item_quarantined(
    running: tuple[Jobs, LocalHttpApi, Worker],
) -> None:
    jobs, api, _worker = running
    status, _headers, body = call(api, "POST", "/jobs", b'{"text": 42}')
    assert status == 200 and body["status"] == "failed" and body["error"]["reason"] == "no_text"
    assert call(api, "GET", f"/jobs/{body['job_id']}")[2] == body
    # The waiter was woken while the item was routed; the quarantine follows in the same run.
    [dead] = jobs.h.receive(jobs.h.dlq_url, wait_s=5)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "no_text"


def test_a_worker_killed_after_storing_the_outcome_still_wakes_the_waiter(
    harness: Harness, moto: MotoServer
) -> None:
    jobs = Jobs.create(harness, wait_s=25)
    replies: list[Reply] = []
    with serve(jobs) as api:
        poster = threading.Thread(
            target=lambda: replies.append(call(api, "POST", "/jobs", b'{"text": "a b c"}'))
        )
        poster.start()
        # The real router handler in a child process, until it dies storing the job's outcome.
        code = 0
        while code != 137:
            messages = harness.receive(wait_s=2)
            assert messages, "the job never reached its last step"
            code = run_handler_in_child(
                harness,
                moto.url,
                messages,
                router="runtime.examples.jobs_worker:router",
                SLUICE_KILL_AT="jobs.after_outcome",
            )
        assert not replies  # stored in S3, never announced: the waiter still waits
        # The dead worker's leases lapse (deleted rather than waited for).
        harness.redis.delete(*(LEASE_PREFIX + codec.decode(m["Body"]).id for m in messages))
        worker = Worker(harness, jobs.router(text_stats))
        worker.start()  # the redelivery (after the 1 s visibility timeout) announces it
        poster.join(timeout=10)  # woken by the completion, long before its 25 s wait ends
        worker.stop()
    [(status, _headers, body)] = replies
    assert status == 200 and body["result"] == {"text": "a b c", "words": 3, "lines": 1}
    outcomes = harness.s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/")["Contents"]
    assert {o["Key"] for o in outcomes} == {
        f"jobs/accepted/{body['job_id']}.json",
        f"jobs/{body['job_id']}.json",
    }
    assert harness.drain(harness.dlq_url) == []


def test_a_large_result_is_a_presigned_url_that_serves_the_outcome(harness: Harness) -> None:
    jobs = Jobs.create(harness, wait_s=10, inline_max_bytes=32)
    worker = Worker(harness, jobs.router(text_stats))
    worker.start()
    with serve(jobs) as api:
        status, _headers, body = call(api, "POST", "/jobs", orjson.dumps({"text": "word " * 50}))
    worker.stop()
    assert status == 200 and "result" not in body
    with urllib.request.urlopen(body["result_url"], timeout=10) as response:
        document = orjson.loads(response.read())
    assert document["status"] == "done" and document["result"]["words"] == 50


def wait_until_idle(harness: Harness, *, timeout_s: float = 500) -> None:
    deadline = time.monotonic() + timeout_s
    while harness.in_flight() and time.monotonic() < deadline:
        time.sleep(1)


# 200 jobs of 3 steps each through one moto server: ~30 s on an idle 2-core machine, minutes on
# a loaded one (the answers are right either way: a 202 is followed to the result).
@pytest.mark.timeout(600)
def test_200_concurrent_posts_are_each_answered_with_their_own_result(
    harness: Harness, redis_server: RedisServer
) -> None:
    # One process serves all 200 (on AWS: 200 functions): each waiter holds a connection. On a
    # loaded machine some wait past wait_s: their 202 is correct, and its Location is followed
    # once the workers are done.
    jobs = Jobs.create(harness, wait_s=25)
    jobs.redis = redis.Redis.from_url(redis_server.url, max_connections=1024)
    workers = [Worker(harness, jobs.router(text_stats)) for _ in range(2)]
    for worker in workers:
        worker.start()
    with serve(jobs) as api, ThreadPoolExecutor(max_workers=200) as pool:
        texts = {n: " ".join(["w"] * (n % 17 + 1)) + f"\n{n}" for n in range(200)}
        posts = pool.map(lambda n: call(api, "POST", "/jobs", orjson.dumps({"text": texts[n]})), texts)
        replies = dict(zip(texts, posts, strict=True))
        assert {reply[0] for reply in replies.values()} <= {200, 202}
        wait_until_idle(harness)
        for n, reply in replies.items():
            if reply[0] == 202:
                replies[n] = call(api, "GET", reply[1]["location"])
    for worker in workers:
        worker.stop()
    assert {reply[0] for reply in replies.values()} == {200}
    for n, (_status, _headers, body) in replies.items():
        assert body["result"] == {"text": texts[n], "words": n % 17 + 2, "lines": 2}
    assert len({body["job_id"] for _s, _h, body in replies.values()}) == 200


# -- gateway: POST /messages ----------------------------------------------------------------------


def test_post_messages_enqueues_the_raw_body_keyed_by_its_request_id(harness: Harness) -> None:
    jobs = Jobs.create(harness)
    with serve(jobs) as api:
        status, headers, _body = call(api, "POST", "/messages", b'{"order": 7}')
        bad_status, bad_headers, _bad = call(api, "POST", "/messages", b"{this is not json")
    assert status == 200 and bad_status == 200
    request_id = headers[REQUEST_ID_HEADER]
    harness.run(jobs.router(text_stats, fallback=enrich.router))
    [item] = harness.sunk_items()
    assert item["id"] == f"{ITEM_PREFIX}{request_id}" and item["state"]["order"] == 7
    assert enrich.ENRICHED in item["state"]
    [dead] = harness.drain(harness.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "invalid_json"
    assert dead["Body"] == "{this is not json" and bad_headers[REQUEST_ID_HEADER] != request_id


def test_the_jobs_benchmark_runs_and_reports_its_figures(moto: MotoServer, redis_server: RedisServer) -> None:
    from bench.jobs import jobs_overhead

    figures = jobs_overhead(moto.url, redis_server.url, jobs=5)
    assert figures["jobs.count"] == 5
    # e2e contains the worker's own time, and the enqueue is one part of the overhead.
    assert figures["jobs.e2e_ms_p50"] > figures["jobs.worker_ms_p50"] > 0
    assert figures["jobs.overhead_ms_p99"] > 0 and figures["jobs.enqueue_ms_p50"] > 0
