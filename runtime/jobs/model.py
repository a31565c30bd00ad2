"""Job ids, Redis names, the job outcome document and the HTTP answers built from it."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from runtime import codec
from runtime.errors import EnvelopeError
from runtime.jobs.errors import BadJobRequest

JOB_FIELD = "_job"
"""The state field that marks a pipeline item as a job (its value is the job id)."""
INNER_FIELD = "state"

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
KEY_TAG = "{sluice:jobs}"

Status = Literal["pending", "done", "failed"]
PENDING: Status = "pending"
DONE: Status = "done"
FAILED: Status = "failed"
FINISHED = (DONE, FAILED)


def job_state(job_id: str, state: Any) -> dict[str, Any]:
    """The pipeline state of a job: its id beside the job router's own state."""
    return {JOB_FIELD: job_id, INNER_FIELD: state}


def new_job_id() -> str:
    return uuid.uuid4().hex


def keyed_job_id(caller: str, idempotency_key: str) -> str:
    """The job an `Idempotency-Key` names, scoped by its caller: the same 32-hex shape as a
    fresh id, so GET cannot tell them apart."""
    return hashlib.sha256(f"{caller}\n{idempotency_key}".encode()).hexdigest()[:32]


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise BadJobRequest(400, "invalid_job_id", "a job id is 32 lowercase hexadecimal characters")
    return job_id


def status_key(job_id: str) -> str:
    return f"{KEY_TAG}:status:{job_id}"


def channel(job_id: str) -> str:
    return f"{KEY_TAG}:done:{job_id}"


def parse_job_body(body: bytes, *, max_bytes: int) -> Any:
    """The job's initial state from a POST body: a JSON object, at most `max_bytes`."""
    if not body:
        raise BadJobRequest(400, "empty_body", "send the job's input as a JSON object")
    if len(body) > max_bytes:
        raise BadJobRequest(413, "body_too_large", f"{len(body)} bytes; the limit is {max_bytes}")
    try:
        value = codec.parse_json(body)
    except EnvelopeError as exc:
        raise BadJobRequest(400, "invalid_json", str(exc)) from None
    if not isinstance(value, dict):
        raise BadJobRequest(
            400, "not_an_object", f"the body must be a JSON object, not {type(value).__name__}"
        )
    return value


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What a finished job left: the S3 document (the record of truth, result included) and
    its announcement (the Redis status and the completion message), which carries the result
    only when it is small; a larger one is answered with a presigned URL of the document.

    `result_json` is the result's JSON text, None when this copy does not carry it."""

    job_id: str
    status: Status
    result_json: bytes | None = None
    error: dict[str, str] | None = None
    result_bytes: int = 0

    @classmethod
    def done(cls, job_id: str, result: Any) -> JobOutcome:
        result_json = codec.dumps(result)
        return cls(job_id, DONE, result_json=result_json, result_bytes=len(result_json))

    @classmethod
    def failed(cls, job_id: str, reason: str, detail: str) -> JobOutcome:
        return cls(job_id, FAILED, error={"reason": reason, "detail": detail})

    def document(self) -> bytes:
        return self.to_json(with_result=True)

    def announcement(self, inline_max_bytes: int) -> bytes:
        return self.to_json(with_result=self.result_bytes <= inline_max_bytes)

    def to_json(self, *, with_result: bool, extra: dict[str, Any] | None = None) -> bytes:
        parts = [b'{"job_id":', orjson.dumps(self.job_id), b',"status":', orjson.dumps(self.status)]
        if self.error is not None:
            parts += [b',"error":', orjson.dumps(self.error)]
        if self.status == DONE:
            parts.append(b',"result_bytes":%d' % self.result_bytes)
            if with_result and self.result_json is not None:
                parts += [b',"result":', self.result_json]
        for name, value in (extra or {}).items():
            parts += [b",", orjson.dumps(name), b":", orjson.dumps(value)]
        return b"".join(parts) + b"}"

    @classmethod
    def from_json(cls, data: bytes) -> JobOutcome:
        value = orjson.loads(data)
        has_result = "result" in value
        return cls(
            job_id=value["job_id"],
            status=value["status"],
            result_json=codec.dumps(value["result"]) if has_result else None,
            error=value.get("error"),
            result_bytes=int(value.get("result_bytes", 0)),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer (API Gateway v2 proxy response)."""

    status: int
    body: dict[str, Any] | bytes
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = "refused"  # what it told the client: done, failed, pending, refused, unavailable, unknown

    def response(self) -> dict[str, Any]:
        body = self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)
        return {
            "statusCode": self.status,
            "headers": {"content-type": "application/json", **self.headers},
            "body": body.decode(),
        }


def refused(error: BadJobRequest) -> Answer:
    return Answer(error.status, {"error": error.code, "detail": error.detail}, outcome="refused")
