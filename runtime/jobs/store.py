"""Where a job lives: S3 (create-only, the record of truth: its acceptance, then its outcome)
and Redis (a status with a TTL, and the channel its waiter listens on)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from redis.exceptions import RedisError

from runtime import metric_names
from runtime.config import Settings
from runtime.declarations.names import (
    ACCEPTED_FOLDER,  # `<prefix>accepted/<job id>.json`, written create-only before a job is enqueued
)
from runtime.errors import TransientError
from runtime.jobs.errors import IdempotencyConflict
from runtime.jobs.model import FINISHED, PENDING, JobOutcome, channel, status_key
from runtime.observability import logger, metrics

_ALREADY_THERE = 412  # If-None-Match: * found the outcome: the first writer's stands
_CONCURRENT_WRITE = 409  # a concurrent conditional write to the key: try again
_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class JobStore:
    s3: Any
    redis: Any
    bucket: str
    prefix: str
    status_ttl_s: int
    inline_max_bytes: int
    presign_ttl_s: int

    def key(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}.json"

    # -- S3: the record of truth ---------------------------------------------------------------

    def acceptance_key(self, job_id: str) -> str:
        return f"{self.prefix}{ACCEPTED_FOLDER}{job_id}.json"

    def _create_only(self, key: str, body: bytes) -> bool:
        """Put `body` at `key` unless something is there: True if this call created it."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json"
                )
                return True
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == _ALREADY_THERE:
                    return False
                if status != _CONCURRENT_WRITE:
                    raise
            time.sleep(0.05 * (2**attempt))
        raise TransientError(f"conditional write of {key} kept conflicting")

    def write_outcome(self, outcome: JobOutcome) -> JobOutcome:
        """Store the outcome create-only and return the one that stands (a re-run after a crash
        finds its first write: that one is announced, whatever this run computed)."""
        if self._create_only(self.key(outcome.job_id), outcome.document()):
            return outcome
        stored = self.read_outcome(outcome.job_id)
        if stored is None:
            raise TransientError(f"{self.key(outcome.job_id)} exists but cannot be read yet")
        return stored

    def accept(self, job_id: str, body_sha256: str) -> None:
        """Record the job as accepted, create-only (the record GET trusts when Redis has lost
        the status). The same id again (an `Idempotency-Key` repeated) must carry the same
        body: IdempotencyConflict otherwise."""
        record = orjson.dumps({"job_id": job_id, "sha256": body_sha256})
        if self._create_only(self.acceptance_key(job_id), record):
            return
        existing = self._read(self.acceptance_key(job_id))
        if existing is not None and orjson.loads(existing).get("sha256") != body_sha256:
            raise IdempotencyConflict(f"this Idempotency-Key names job {job_id}, sent with another body")

    def accepted(self, job_id: str) -> bool:
        return self._read(self.acceptance_key(job_id)) is not None

    def _read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def read_outcome(self, job_id: str) -> JobOutcome | None:
        body = self._read(self.key(job_id))
        return None if body is None else JobOutcome.from_json(body)

    def presign(self, job_id: str) -> str:
        return self.s3.generate_presigned_url(  # type: ignore[no-any-return]
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(job_id)},
            ExpiresIn=self.presign_ttl_s,
        )

    # -- Redis: status and completion ----------------------------------------------------------

    def mark_pending(self, job_id: str) -> None:
        pending = JobOutcome(job_id, PENDING).to_json(with_result=False)
        self.redis.set(status_key(job_id), pending, ex=self.status_ttl_s, nx=True)

    def read_status(self, job_id: str) -> JobOutcome | None:
        raw = self.redis.get(status_key(job_id))
        return None if raw is None else JobOutcome.from_json(raw)

    def announce(self, outcome: JobOutcome) -> bool:
        """Record the status, then wake the waiter. S3 already holds the outcome, so when Redis
        is unreachable the waiter answers 202 and GET finds the result: logged, not raised
        (raising would retry, then poison, a job that is done)."""
        message = outcome.announcement(self.inline_max_bytes)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(status_key(outcome.job_id), message, ex=self.status_ttl_s)
            pipe.publish(channel(outcome.job_id), message)
            pipe.execute()
        except RedisError as exc:
            metrics.add_metric(name=metric_names.JOBS_UNANNOUNCED, unit=MetricUnit.Count, value=1)
            logger.warning(
                "job outcome stored in S3 but not announced in Redis",
                extra={"job_id": outcome.job_id, "error": repr(exc)},
            )
            return False
        return True

    def read_status_or_none(self, job_id: str) -> JobOutcome | None:
        """The Redis status; None when Redis has none or cannot answer (S3 decides then)."""
        try:
            return self.read_status(job_id)
        except RedisError as exc:
            logger.warning(
                "job status unreadable in Redis; asking S3", extra={"job_id": job_id, "error": repr(exc)}
            )
            return None

    def current(self, job_id: str) -> JobOutcome | None:
        """The Redis status (pending or finished); S3's outcome only when Redis has none."""
        status = self.read_status_or_none(job_id)
        return status if status is not None else self.read_outcome(job_id)

    def settled(self, job_id: str) -> JobOutcome | None:
        """The job's outcome if it finished: the Redis status, else S3 (the record of truth)."""
        status = self.read_status_or_none(job_id)
        if status is not None and status.status in FINISHED:
            return status
        return self.read_outcome(job_id)

    @contextmanager
    def subscription(self, job_id: str) -> Iterator[Waiter]:
        """Subscribed to the job's channel, with the server's confirmation already read: a
        completion published after this returns is delivered to the waiter."""
        pubsub = self.redis.pubsub()
        try:
            yield self.subscribe(pubsub, job_id)
        finally:
            pubsub.close()

    def subscribe(self, pubsub: Any, job_id: str) -> Waiter:
        """Subscribe `pubsub` to the job's channel and read the server's confirmation."""
        pubsub.subscribe(channel(job_id))
        confirmation = pubsub.get_message(timeout=self.redis_timeout_s())
        if confirmation is None or confirmation["type"] != "subscribe":
            raise TransientError(f"no subscribe confirmation for job {job_id}")
        return Waiter(pubsub)

    def redis_timeout_s(self) -> float:
        kwargs = self.redis.connection_pool.connection_kwargs
        return float(kwargs.get("socket_timeout") or 5.0)


class Waiter:
    """Waits on one subscribed channel for the job's completion message."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    def wait(self, timeout_s: float) -> JobOutcome | None:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "message":
                return JobOutcome.from_json(message["data"])
        return None


@dataclass(frozen=True, slots=True)
class JobClients:
    """What the jobs system talks to: SQS (the state queue), S3 (the record of truth) and Redis."""

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
