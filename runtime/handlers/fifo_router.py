"""FIFO router function (FIFO state queue, SQS event source mapping with
`ReportBatchItemFailures`, no batching window): all or nothing per run, order kept per group."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.observability import logger
from runtime.pipeline import pipeline

# Settings, the router and the clients are resolved on the first invocation, not at import.
_handler = pipeline(fifo=True)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return _handler(event, context)
