"""Jobs function (HTTP API routes `POST /jobs` and `GET /jobs/{id}`, payload format 2.0): the
jobs API (`runtime.jobs.api`) built once per execution environment, on the first request."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.jobs.api import JobsApi
from runtime.jobs.wiring import build_jobs, clients_from_environment
from runtime.observability import logger, metrics


@functools.cache
def _jobs() -> JobsApi:
    settings = get_settings()
    return build_jobs(settings, clients_from_environment(settings))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _jobs().handle(event, context)
