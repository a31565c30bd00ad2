"""The relay function: DynamoDB stream records (INSERTs, filtered at the event source mapping)
-> the relay FIFO queue. Reports the record to retry from as a batch item failure."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime import metric_names as names
from runtime.config import get_settings
from runtime.observability import logger, metrics
from runtime.relay.stream import StreamRelay
from runtime.relay.wiring import build_relay, relay_clients_from_environment


@functools.cache
def _relay() -> StreamRelay:
    return build_relay(get_settings(), relay_clients_from_environment())


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = _relay()(event.get("Records", []))
    metrics.add_metric(name=names.RELAY_SENT, unit=MetricUnit.Count, value=result.sent)
    if result.failure is not None:
        metrics.add_metric(name=names.RELAY_FAILED_RECORDS, unit=MetricUnit.Count, value=1)
        logger.error(
            "relay stopped at a record; Lambda retries from it",
            extra={"sequence_number": result.failed_sequence_number, "failure": result.failure},
        )
    return {"batchItemFailures": result.batch_item_failures()}
