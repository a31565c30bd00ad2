"""The relay function: DynamoDB stream records (INSERTs, filtered at the event source mapping)
-> the relay FIFO queue. Reports the record to retry from as a batch item failure."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from runtime.clients import aws_client
from runtime.config import get_settings
from runtime.observability import logger, metrics
from runtime.relay import metrics as names
from runtime.relay.stream import relay_records


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    relay = settings.require_relay()
    result = relay_records(
        event.get("Records", []),
        sqs=aws_client("sqs"),
        queue_url=relay.fifo_url,
        group_key_field=relay.group_key_field,
        max_message_bytes=settings.queues.max_message_bytes,
    )
    metrics.add_metric(name=names.RELAY_SENT, unit=MetricUnit.Count, value=result.sent)
    if result.failure is not None:
        metrics.add_metric(name=names.RELAY_FAILED_RECORDS, unit=MetricUnit.Count, value=1)
        logger.error(
            "relay stopped at a record; Lambda retries from it",
            extra={"sequence_number": result.failed_sequence_number, "failure": result.failure},
        )
    return {"batchItemFailures": result.batch_item_failures()}
