"""The two HTTP operations of the jobs API, over injected clients: `submit_job` (POST /jobs)
and `job_status` (GET /jobs/{id}).

Every answer within the deadline: each I/O call runs against the time the invocation has left
(`runtime.jobs.deadline`), so a slow S3, SQS or Redis turns into a 202 or a 503 from sluice,
never API Gateway's own timeout.

A 202 is a promise: it is given only once the job's acceptance is durable (a create-only S3
record, which GET trusts when Redis has lost everything) and `SendMessage` returned. No lost
wake-ups: the waiter's subscription is confirmed by Redis before the job is enqueued, so the
completion cannot be published before anyone listens; the status is read once after enqueuing
(and S3 when Redis has lost it) and once more before answering 202, which also covers a
completion whose publish was lost with a Redis connection. Redis only speeds the answer up:
without it a job is still accepted, enqueued and answered 202.

`Idempotency-Key` (optional): the job id is derived from the caller and the key, so a retried
POST names the same job (and the same envelope id: the router runs it once); the same key with
another body is refused `409 idempotency_conflict`. Keys are remembered as long as the S3
acceptance records are kept (the results bucket's lifecycle).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from redis.exceptions import RedisError

from runtime import codec
from runtime.config import Settings
from runtime.errors import MessageTooLarge, TransientError
from runtime.jobs.deadline import DEFAULT_REMAINING_S, AnswerDeadline, countdown
from runtime.jobs.errors import BadJobRequest
from runtime.jobs.model import (
    DONE,
    FINISHED,
    PENDING,
    Answer,
    JobOutcome,
    check_job_id,
    job_state,
    keyed_job_id,
    new_job_id,
    parse_job_body,
    refused,
)
from runtime.jobs.store import JobClients, JobStore, Waiter, make_store
from runtime.observability import logger

# What makes a jobs request answer 503: a store that failed or did not answer in time.
UNAVAILABLE = (BotoCoreError, ClientError, RedisError, TransientError)
# Before a job is enqueued, Redis (the waiter) may use at most this share of the time left:
# it only speeds the answer up, while acceptance and SendMessage decide it.
REDIS_SHARE = 3


def job_message(job_id: str, state: Any) -> bytes:
    """The job as a one-item envelope whose envelope and item ids are the job id (a repeated
    send of the same job is one envelope to the router's ledger)."""
    item = codec.Item(id=job_id, step=0, attempt=0, state=job_state(job_id, state))
    return codec.encode(codec.Envelope(id=job_id, parent=None, items=(item,)))


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    message: bytes
    body_sha256: str


def new_job(body: bytes, settings: Settings, *, idempotency_key: str | None, caller: str) -> NewJob:
    """The job a POST body makes (BadJobRequest when it makes none): a fresh id, or the one its
    caller's `Idempotency-Key` names."""
    jobs = settings.jobs_settings()
    state = parse_job_body(body, max_bytes=jobs.max_body_bytes)
    job_id = keyed_job_id(caller, idempotency_key) if idempotency_key is not None else new_job_id()
    message = job_message(job_id, state)
    try:
        codec.check_message(message, limit=settings.queues.max_message_bytes)
    except MessageTooLarge as exc:
        raise BadJobRequest(413, "body_too_large", str(exc)) from None
    return NewJob(job_id, message, hashlib.sha256(body).hexdigest())


def submit_job(
    body: bytes,
    *,
    clients: JobClients,
    settings: Settings,
    remaining_s: Callable[[], float] | None = None,
    idempotency_key: str | None = None,
    caller: str = "",
) -> Answer:
    """POST /jobs: 200 with the outcome if it arrives within `jobs.wait_s`, else 202 with
    `Location: /jobs/{id}` — only once the job is durably accepted and enqueued; 503 when that
    cannot be done before the deadline (`remaining_s`, less the answer margin); 400/409/413 for
    a request that is not a job."""
    jobs = settings.jobs_settings()
    wait_until = time.monotonic() + jobs.wait_s
    deadline = AnswerDeadline(remaining_s or countdown(DEFAULT_REMAINING_S), jobs.answer_margin_s)
    store = make_store(clients, settings)
    try:
        job = new_job(body, settings, idempotency_key=idempotency_key, caller=caller)
        deadline.call(store.accept, job.id, job.body_sha256)
    except BadJobRequest as exc:
        return refused(exc)
    except UNAVAILABLE as exc:
        return unavailable("the job could not be recorded", exc)
    pubsub = clients.redis.pubsub()
    try:
        waiter = subscribe(store, pubsub, job.id, deadline)
        try:
            deadline.call(enqueue, clients.sqs, settings, job.message)
        except UNAVAILABLE as exc:
            return unavailable("the job could not be enqueued", exc)
        outcome = await_outcome(store, job.id, waiter, deadline, wait_until)
    finally:
        pubsub.close()
    if outcome is None:
        return pending(job.id, 202)
    return finished(store, outcome)


def subscribe(store: JobStore, pubsub: Any, job_id: str, deadline: AnswerDeadline) -> Waiter | None:
    """The waiter, subscribed (and confirmed) before the job is enqueued, and the job marked
    pending; None when Redis cannot do that in a third of the time left (the job is still
    accepted and enqueued: the client polls GET)."""
    try:
        waiter = deadline.call(store.subscribe, pubsub, job_id, cap_s=deadline.left() / REDIS_SHARE)
        deadline.call(store.mark_pending, job_id, cap_s=deadline.left() / REDIS_SHARE)
    except (RedisError, TransientError) as exc:
        logger.warning(
            "job waiter without Redis; the answer will be 202", extra={"job_id": job_id, "error": repr(exc)}
        )
        return None
    return waiter


def await_outcome(
    store: JobStore, job_id: str, waiter: Waiter | None, deadline: AnswerDeadline, wait_until: float
) -> JobOutcome | None:
    """The job's outcome if it finishes by `wait_until` (and the deadline); None otherwise. The
    status is read once after enqueuing and once more before giving up (S3 when Redis has lost
    it), which also covers a completion whose publish was lost with a Redis connection."""
    outcome = bounded_read(deadline, store.current, job_id)
    if is_finished(outcome) or waiter is None:
        return outcome if is_finished(outcome) else bounded_read(deadline, store.settled, job_id)
    try:
        outcome = waiter.wait(max(0.0, min(wait_until - time.monotonic(), deadline.left())))
    except RedisError as exc:
        logger.warning("job waiter lost Redis; asking S3", extra={"job_id": job_id, "error": repr(exc)})
    if is_finished(outcome):
        return outcome
    outcome = bounded_read(deadline, store.settled, job_id)
    return outcome if is_finished(outcome) else None


def is_finished(outcome: JobOutcome | None) -> bool:
    return outcome is not None and outcome.status in FINISHED


def bounded_read(
    deadline: AnswerDeadline, read: Callable[[str], JobOutcome | None], job_id: str
) -> JobOutcome | None:
    """A status read that may not delay the answer: None when it fails or runs out of time."""
    try:
        return deadline.call(read, job_id)
    except UNAVAILABLE as exc:
        logger.warning("job status unreadable in time", extra={"job_id": job_id, "error": repr(exc)})
        return None


def enqueue(sqs: Any, settings: Settings, message: bytes) -> None:
    sqs.send_message(QueueUrl=settings.queues.state_url, MessageBody=message.decode())


def job_status(
    job_id: str,
    *,
    clients: JobClients,
    settings: Settings,
    remaining_s: Callable[[], float] | None = None,
) -> Answer:
    """GET /jobs/{id}: 200 with the outcome (Redis, else S3); 202 pending while Redis says so or,
    when Redis has lost it, while S3 holds the job's acceptance; 404 only for an id never
    accepted; 503 when the stores cannot answer before the deadline."""
    try:
        check_job_id(job_id)
    except BadJobRequest as exc:
        return refused(exc)
    jobs = settings.jobs_settings()
    deadline = AnswerDeadline(remaining_s or countdown(DEFAULT_REMAINING_S), jobs.answer_margin_s)
    store = make_store(clients, settings)
    try:
        status = deadline.call(store.read_status_or_none, job_id)
        outcome = status if is_finished(status) else deadline.call(store.read_outcome, job_id)
        if outcome is not None:
            return finished(store, outcome)
        if status is not None or deadline.call(store.accepted, job_id):
            return pending(job_id, 202)
    except UNAVAILABLE as exc:
        return unavailable("the job's status could not be read", exc)
    return Answer(404, {"error": "unknown_job", "detail": f"no job {job_id} was accepted"}, outcome="unknown")


def unavailable(what: str, exc: BaseException) -> Answer:
    """503: the request may be retried (with the same Idempotency-Key, it names the same job)."""
    logger.warning("jobs request unavailable", extra={"what": what, "error": repr(exc)})
    detail = f"{what} in time ({type(exc).__name__}); retry, with the same Idempotency-Key if any"
    return Answer(
        503, {"error": "unavailable", "detail": detail}, {"retry-after": "1"}, outcome="unavailable"
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
