"""Scheduled checker: hands expired or orphaned batches back and reports the backlog."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.ingest.checker import run_checker
from runtime.ingest.model import Ingest
from runtime.ingest.wiring import ingest_from_settings
from runtime.observability import logger, metrics


@functools.cache
def _ingest() -> Ingest:
    return ingest_from_settings(get_settings(), with_sink=False)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_checker(_ingest()).as_dict()
