"""Router function (standard state queue, SQS event source mapping with
`ReportBatchItemFailures`): runs the router named by `SLUICE_PIPELINE__ROUTER`."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.observability import logger, metrics
from runtime.pipeline import Pipeline, build_pipeline, handle, pipeline_clients


@functools.cache
def _pipeline() -> Pipeline:
    settings = get_settings()
    return build_pipeline(settings, pipeline_clients(settings))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return handle(_pipeline(), event, context)
