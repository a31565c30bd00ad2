"""Jobs function (HTTP API routes `POST /jobs` and `GET /jobs/{id}`, payload format 2.0):
parses the event, calls one core operation, shapes the proxy response."""

from __future__ import annotations

import base64
import threading
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import Settings
from runtime.jobs import JobClients, job_status, submit_job
from runtime.jobs.model import Answer
from runtime.observability import logger, metrics

SUBMIT_ROUTE = "POST /jobs"
STATUS_ROUTE = "GET /jobs/{id}"


class JobsApi:
    """The two routes over lazily built clients (on the first request, never at import)."""

    def __init__(self, *, settings: Settings | None = None, clients: JobClients | None = None) -> None:
        self._settings = settings
        self._clients = clients
        self._lock = threading.Lock()

    def _resolve(self) -> tuple[Settings, JobClients]:
        with self._lock:
            if self._settings is None:
                from runtime.config import get_settings

                self._settings = get_settings()
            if self._clients is None:
                from runtime.clients import aws_client, make_redis

                self._clients = JobClients(
                    sqs=aws_client("sqs"), s3=aws_client("s3"), redis=make_redis(self._settings.redis)
                )
            return self._settings, self._clients

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        request = APIGatewayProxyEventV2(event)
        settings, clients = self._resolve()
        if request.route_key == SUBMIT_ROUTE:
            answer = submit_job(raw_body(request), clients=clients, settings=settings)
        elif request.route_key == STATUS_ROUTE:
            job_id = (request.path_parameters or {}).get("id", "")
            answer = job_status(job_id, clients=clients, settings=settings)
        else:
            answer = Answer(
                404, {"error": "no_route", "detail": f"no route {request.route_key}"}, outcome="refused"
            )
        count(request.route_key, answer)
        return answer.response()


def count(route_key: str, answer: Answer) -> None:
    """One metric per answer (JobsDone, JobsFailed, JobsPending, JobsRefused, JobsUnknown)
    and a log line for every refused request, with its reason."""
    if answer.status >= 400:
        logger.info(
            "jobs request refused", extra={"route": route_key, "status": answer.status, "answer": answer.body}
        )
    metrics.add_metric(name=f"Jobs{answer.outcome.capitalize()}", unit=MetricUnit.Count, value=1)


def raw_body(request: APIGatewayProxyEventV2) -> bytes:
    """The body's bytes (a binary body arrives base64-encoded; its bytes are validated later,
    so bad UTF-8 is a clear 400, not a crash here)."""
    body = request.body or ""
    return base64.b64decode(body) if request.is_base64_encoded else body.encode()


_api = JobsApi()


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _api(event)
