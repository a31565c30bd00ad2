"""Scheduled checker: hands expired or orphaned batches back and reports the backlog."""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.ingest.checker import run_checker
from runtime.ingest.model import Ingest
from runtime.ingest.wiring import build_ingest, clients_from_settings
from runtime.observability import logger, metrics


@functools.cache
def _ingest() -> Ingest:
    settings = get_settings()
    return build_ingest(settings, clients_from_settings(settings, sends=False))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_checker(_ingest()).as_dict()
