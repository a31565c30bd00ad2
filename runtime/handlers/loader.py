"""Scheduled loader: claims settled inbox files and sends their records to SQS exactly once."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from runtime.config import get_settings
from runtime.ingest.loader import run_loader
from runtime.ingest.model import Counters, Ingest
from runtime.ingest.wiring import build_ingest, clients_from_settings
from runtime.observability import logger, metrics


def ingest_from_environment() -> Ingest:
    """The loader's `Ingest` from the settings in the environment, with its own clients: this
    process's, and each helper process's (module-level, so it pickles to a helper by name)."""
    settings = get_settings()
    return build_ingest(settings, clients_from_settings(settings))


@functools.cache
def _ingest() -> Ingest:
    return ingest_from_environment()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ingest = dataclasses.replace(_ingest(), counters=Counters())  # one invocation's counts
    result = run_loader(
        ingest, lambda: context.get_remaining_time_in_millis() / 1000, helper_ingest=ingest_from_environment
    )
    logger.info("loader finished", extra=result.as_dict())
    return result.as_dict()
