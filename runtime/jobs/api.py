"""The jobs API (HTTP API routes `POST /jobs` and `GET /jobs/{id}`, payload format 2.0):
parses the event, calls one core operation with the invocation's remaining time, shapes the
proxy response and counts the answer."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from runtime import metric_names
from runtime.config import Settings
from runtime.jobs.errors import BadJobRequest
from runtime.jobs.model import Answer, refused
from runtime.jobs.service import job_status, submit_job
from runtime.jobs.store import JobClients
from runtime.observability import logger, metrics

SUBMIT_ROUTE = "POST /jobs"
STATUS_ROUTE = "GET /jobs/{id}"
IDEMPOTENCY_HEADER = "idempotency-key"  # payload 2.0 lower-cases header names
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")


class JobsApi:
    """The two routes over the clients it was built with (`build_jobs`)."""

    def __init__(self, settings: Settings, clients: JobClients) -> None:
        self._settings = settings
        self._clients = clients

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """One Lambda invocation: the event's answer within the context's remaining time."""
        return self(event, lambda: context.get_remaining_time_in_millis() / 1000)

    def __call__(
        self, event: dict[str, Any], remaining_s: Callable[[], float] | None = None
    ) -> dict[str, Any]:
        request = APIGatewayProxyEventV2(event)
        if request.route_key == SUBMIT_ROUTE:
            answer = self._submit(request, remaining_s)
        elif request.route_key == STATUS_ROUTE:
            job_id = (request.path_parameters or {}).get("id", "")
            answer = job_status(
                job_id, clients=self._clients, settings=self._settings, remaining_s=remaining_s
            )
        else:
            answer = Answer(
                404, {"error": "no_route", "detail": f"no route {request.route_key}"}, outcome="refused"
            )
        count(request.route_key, answer)
        return answer.response()

    def _submit(self, request: APIGatewayProxyEventV2, remaining_s: Callable[[], float] | None) -> Answer:
        try:
            key = idempotency_key(request)
        except BadJobRequest as exc:
            return refused(exc)
        return submit_job(
            raw_body(request),
            clients=self._clients,
            settings=self._settings,
            remaining_s=remaining_s,
            idempotency_key=key,
            caller=caller_of(request),
        )


def idempotency_key(request: APIGatewayProxyEventV2) -> str | None:
    """The request's `Idempotency-Key` header (optional; 1 to 255 printable ASCII characters)."""
    value = (request.headers or {}).get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise BadJobRequest(
            400, "invalid_idempotency_key", "an Idempotency-Key is 1 to 255 printable ASCII characters"
        )
    return value


def caller_of(request: APIGatewayProxyEventV2) -> str:
    """Who is calling, as the authorizer saw it (IAM user ARN or JWT subject): the scope of
    an Idempotency-Key. Empty when the route is not authorized (the local runtime)."""
    authorizer = request.raw_event.get("requestContext", {}).get("authorizer") or {}
    iam = authorizer.get("iam") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    if iam.get("userArn"):
        return f"iam:{iam['userArn']}"
    if claims.get("sub"):
        return f"jwt:{claims.get('iss', '')}:{claims['sub']}"
    return ""


def count(route_key: str, answer: Answer) -> None:
    """One metric per answer (JobsDone, JobsFailed, JobsPending, JobsRefused, JobsUnknown)
    and a log line for every refused request, with its reason."""
    if answer.status >= 400:
        logger.info(
            "jobs request refused", extra={"route": route_key, "status": answer.status, "answer": answer.body}
        )
    metrics.add_metric(name=metric_names.JOBS_BY_OUTCOME[answer.outcome], unit=MetricUnit.Count, value=1)


def raw_body(request: APIGatewayProxyEventV2) -> bytes:
    """The body's bytes (a binary body arrives base64-encoded; its bytes are validated later,
    so bad UTF-8 is a clear 400, not a crash here)."""
    body = request.body or ""
    return base64.b64decode(body) if request.is_base64_encoded else body.encode()
