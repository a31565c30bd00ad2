"""The drain function (scheduled): the oldest relay FIFO messages -> the third-party API."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from runtime.clients import aws_client, make_redis
from runtime.config import get_settings
from runtime.observability import logger, metrics
from runtime.relay import metrics as names
from runtime.relay.drain import Drain, DrainReport, check_drain_settings, make_drain
from runtime.relay.keys import ApiKeySource


@functools.cache
def _drain() -> Drain:
    """Built on the first invocation and kept for the execution environment (pooled HTTP
    connections, the cached API key, one Redis connection pool)."""
    settings = get_settings()
    relay = check_drain_settings(settings.require_relay())
    return make_drain(
        relay,
        sqs=aws_client("sqs"),
        dynamodb=aws_client("dynamodb"),
        redis_client=make_redis(settings.redis),
        api_key=ApiKeySource(aws_client("ssm"), relay.api_key_parameter, relay.api_key_cache_s),
    )


def _emit(report: DrainReport) -> None:
    for name, value in (
        (names.API_CALLS, report.api_calls),
        (names.API_ERRORS, report.api_errors),
        (names.API_REJECTED, report.rejected),
        (names.DELIVERED, report.delivered),
        (names.BREAKER_OPEN, int(report.breaker_opened or report.admission == "open")),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = _drain().run(lambda: context.get_remaining_time_in_millis() / 1000)
    _emit(report)
    logger.info("drain finished", extra=report.as_dict())
    return report.as_dict()
