"""The two HTTP operations of the jobs API, over injected clients: `submit_job` (POST /jobs)
and `job_status` (GET /jobs/{id}).

No lost wake-ups: the waiter's subscription is confirmed by Redis before the job is enqueued,
so the completion cannot be published before anyone listens; the status is read once after
enqueuing (and S3 when Redis has lost it) and once more before answering 202, which also
covers a completion whose publish was lost with a Redis connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from runtime import codec
from runtime.config import Settings
from runtime.errors import MessageTooLarge, TransientError
from runtime.jobs.errors import BadJobRequest
from runtime.jobs.model import (
    DONE,
    FINISHED,
    PENDING,
    Answer,
    JobOutcome,
    check_job_id,
    new_job_id,
    parse_job_body,
    refused,
)
from runtime.jobs.store import JobStore
from runtime.jobs.worker import job_state
from runtime.observability import logger


@dataclass(frozen=True, slots=True)
class JobClients:
    sqs: Any
    s3: Any
    redis: Any


def make_store(clients: JobClients, settings: Settings) -> JobStore:
    jobs = settings.jobs_settings()
    bucket = jobs.results_bucket or settings.require_pipeline().results_bucket
    return JobStore(
        s3=clients.s3,
        redis=clients.redis,
        bucket=bucket,
        prefix=jobs.results_prefix,
        status_ttl_s=jobs.status_ttl_s,
        inline_max_bytes=jobs.inline_max_bytes,
        presign_ttl_s=jobs.presign_ttl_s,
    )


def job_message(job_id: str, state: Any) -> bytes:
    """The job as a one-item envelope whose envelope and item ids are the job id (a repeated
    send of the same job is one envelope to the router's ledger)."""
    item = codec.Item(id=job_id, step=0, attempt=0, state=job_state(job_id, state))
    return codec.encode(codec.Envelope(id=job_id, parent=None, items=(item,)))


def submit_job(body: bytes, *, clients: JobClients, settings: Settings) -> Answer:
    """POST /jobs: 200 with the outcome if it arrives within `jobs.wait_s`, else 202 with
    `Location: /jobs/{id}`; 400/413 for a body that is not a job."""
    started = time.monotonic()
    jobs = settings.jobs_settings()
    try:
        state = parse_job_body(body, max_bytes=jobs.max_body_bytes)
        job_id = new_job_id()
        message = job_message(job_id, state)
        codec.check_message(message, limit=settings.queues.max_message_bytes)
    except BadJobRequest as exc:
        return refused(exc)
    except MessageTooLarge as exc:
        return refused(BadJobRequest(413, "body_too_large", str(exc)))
    store = make_store(clients, settings)
    outcome = None
    enqueued = False
    try:
        with store.subscription(job_id) as waiter:
            store.mark_pending(job_id)
            enqueue(clients.sqs, settings, message)
            enqueued = True
            outcome = store.current(job_id)
            if outcome is None or outcome.status not in FINISHED:
                outcome = waiter.wait(jobs.wait_s - (time.monotonic() - started))
    except (RedisError, TransientError) as exc:
        if not enqueued:
            raise  # nothing was enqueued: the caller sees an error and may simply retry
        # The job is on its way and S3 will hold its outcome: the client polls GET instead.
        logger.warning("job waiter lost Redis; answering 202", extra={"job_id": job_id, "error": repr(exc)})
    if outcome is None or outcome.status not in FINISHED:
        outcome = store.settled(job_id)
    if outcome is None or outcome.status not in FINISHED:
        return pending(job_id, 202)
    return finished(store, outcome)


def enqueue(sqs: Any, settings: Settings, message: bytes) -> None:
    sqs.send_message(QueueUrl=settings.queues.state_url, MessageBody=message.decode())


def job_status(job_id: str, *, clients: JobClients, settings: Settings) -> Answer:
    """GET /jobs/{id}: done (with the result) / failed from Redis or, when Redis has lost the
    status, from S3; pending while Redis says so; 404 for an id nobody knows."""
    try:
        check_job_id(job_id)
    except BadJobRequest as exc:
        return refused(exc)
    store = make_store(clients, settings)
    outcome = store.settled(job_id)
    if outcome is not None:
        return finished(store, outcome)
    if store.read_status_or_none(job_id) is not None:
        return pending(job_id, 200)
    return Answer(
        404, {"error": "unknown_job", "detail": f"no job {job_id} is pending or finished"}, outcome="unknown"
    )


def pending(job_id: str, code: int) -> Answer:
    location = f"/jobs/{job_id}"
    headers = {"location": location} if code == 202 else {}
    return Answer(code, {"job_id": job_id, "status": PENDING, "location": location}, headers, outcome=PENDING)


def finished(store: JobStore, outcome: JobOutcome) -> Answer:
    """200 with the outcome: the result inline when it is small and at hand, else a URL."""
    if outcome.status != DONE:
        return Answer(200, outcome.to_json(with_result=False), outcome=outcome.status)
    if outcome.result_json is not None and outcome.result_bytes <= store.inline_max_bytes:
        return Answer(200, outcome.to_json(with_result=True), outcome=DONE)
    url = store.presign(outcome.job_id)
    return Answer(200, outcome.to_json(with_result=False, extra={"result_url": url}), outcome=DONE)
