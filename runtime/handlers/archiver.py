"""Scheduled archiver: moves committed batches under archive/, quarantines late writes,
returns strays, applies retention and trims the processed set."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.ingest.archiver import Archiver
from runtime.ingest.wiring import build_ingest, clients_from_settings
from runtime.observability import logger, metrics


@functools.cache
def _archiver() -> Archiver:
    settings = get_settings()
    return Archiver.for_ingest(build_ingest(settings, clients_from_settings(settings, sends=False)))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = _archiver().run(lambda: context.get_remaining_time_in_millis() / 1000)
    logger.info("archiver finished", extra=result.as_dict())
    return result.as_dict()
