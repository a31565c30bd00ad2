"""The drain function (scheduled): the oldest relay FIFO messages -> the third-party API."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime import metric_names as names
from runtime.config import get_settings
from runtime.observability import logger, metrics
from runtime.relay.drain import Drain, DrainReport
from runtime.relay.wiring import build_drain, drain_clients_from_environment


@functools.cache
def _drain() -> Drain:
    """Built on the first invocation and kept for the execution environment (pooled HTTP
    connections, the cached API key, one Redis connection pool)."""
    settings = get_settings()
    return build_drain(settings, drain_clients_from_environment(settings))


def _emit(report: DrainReport) -> None:
    for name, value in (
        (names.RELAY_API_CALLS, report.api_calls),
        (names.RELAY_API_ERRORS, report.api_errors),
        (names.RELAY_API_REJECTED, report.rejected),
        (names.RELAY_DELIVERED, report.delivered),
        (names.RELAY_BREAKER_OPEN, int(report.breaker_opened or report.admission == "open")),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = _drain().run(lambda: context.get_remaining_time_in_millis() / 1000)
    _emit(report)
    logger.info("drain finished", extra=report.as_dict())
    return report.as_dict()
