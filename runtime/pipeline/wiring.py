"""The one wiring of the router: `build_pipeline(settings, clients)` builds it (pure
construction, clients injected), `handle(pipeline, event, context)` runs one Lambda event
through it. The Lambda handlers (`runtime.handlers.router`, `runtime.handlers.fifo_router`),
the local runtime (which calls those handlers), the benchmarks and the tests all build it here.

    settings = get_settings()
    pipeline = build_pipeline(settings, pipeline_clients(settings))  # once per environment
    response = handle(pipeline, event, context)  # per invocation: `batchItemFailures`

The router is the one the settings name (`SLUICE_PIPELINE__ROUTER`) unless one is given; its
side effects must be idempotent, keyed by the item id: see `runtime.pipeline.state`. The event
source mapping must enable `ReportBatchItemFailures`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from runtime import metric_names
from runtime.clients import aws_client, make_redis  # at import (init phase), not in the first invocation
from runtime.config import Settings
from runtime.observability import METRICS_NAMESPACE, logger, metrics
from runtime.pipeline.batch import BatchResult, Pipeline, PipelineClients, Targets
from runtime.pipeline.fifo import process as process_fifo
from runtime.pipeline.result_store import S3ResultStore
from runtime.pipeline.routing import RouteLimits
from runtime.pipeline.standard import process as process_standard
from runtime.pipeline.state import Router, load_router


def pipeline_clients(
    settings: Settings, *, aws: Callable[[str], Any] | None = None, redis_client: Any = None
) -> PipelineClients:
    """The clients the router talks to: by default the process's real ones (boto3 honours
    AWS_ENDPOINT_URL for moto); tests pass `aws(service)` and `redis_client` of their own."""
    cfg = settings.require_pipeline()
    aws = aws or aws_client
    if redis_client is None:
        redis_client = make_redis(settings.redis, timeout_s=cfg.redis_timeout_s, retries=cfg.redis_retries)
    return PipelineClients(
        sqs=aws("sqs"),
        dynamodb=aws("dynamodb"),
        redis=redis_client,
        result_store=S3ResultStore(aws("s3"), cfg.results_bucket, prefix=cfg.results_prefix),
        s3=aws("s3"),
    )


def build_pipeline(
    settings: Settings,
    clients: PipelineClients,
    *,
    router: Router | None = None,
    fifo: bool = False,
    rng: random.Random | None = None,
) -> Pipeline:
    """The router wired to its queue: the standard state queue, or with `fifo` the FIFO
    one (all or nothing per run, see `runtime.pipeline.fifo`). `router=None` loads the router
    the settings name; `rng` draws the retry backoffs' jitter."""
    cfg = settings.require_pipeline()
    targets = Targets.fifo(settings) if fifo else Targets.standard(settings)
    limits = RouteLimits(
        max_steps=cfg.max_steps,
        history_limit=cfg.history_limit,
        max_message_bytes=settings.queues.max_message_bytes,
        source=targets.source,
    )
    if fifo:
        limits = replace(
            limits,
            max_items=cfg.fifo_items_per_envelope,
            fifo_group=settings.queues.fifo_message_group_id,
            group_field=cfg.fifo_group_field,
        )
    return Pipeline(
        router=router if router is not None else load_router(cfg.router),
        clients=clients,
        settings=settings,
        targets=targets,
        limits=limits,
        ledger=clients.ledger(cfg),
        rng=rng or random.Random(),
        process=process_fifo if fifo else process_standard,
    )


def handle(pipeline: Pipeline, event: Mapping[str, Any], context: Any) -> PartialItemFailureResponse:
    """One Lambda SQS event through `pipeline`: the batch's metrics (flushed by the handler's
    `metrics.log_metrics`) and its `batchItemFailures`."""
    result = pipeline.run(event.get("Records") or [], context.get_remaining_time_in_millis())
    publish(result)
    return result.response()


def publish(result: BatchResult) -> None:
    """Metrics (per outcome, per step name) and one structured log line per batch."""
    counters = {
        metric_names.MESSAGES: result.messages,
        metric_names.SKIPPED_DONE: result.skipped_done,
        metric_names.BOUNCED: result.bounced,
        metric_names.FOLLOWED_PLANS: result.followed_plans,
        metric_names.PLAN_MISMATCH: result.plan_mismatches,
        metric_names.REDIS_UNAVAILABLE: result.redis_unavailable,
        metric_names.REDRIVEN: result.redriven,
        metric_names.LEDGER_READS: result.ledger_reads,
        metric_names.QUARANTINED: result.quarantined,
        metric_names.LEDGER_WRITES: result.ledger_writes,
        **{metric_names.ITEMS_BY_OUTCOME[name]: count for name, count in result.outcomes.items()},
    }
    for name, value in counters.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for (step, status), count in result.steps.items():
        with single_metric(
            name=metric_names.TRANSITIONS if status == "ok" else metric_names.TRANSITION_FAILURES,
            unit=MetricUnit.Count,
            value=count,
            namespace=METRICS_NAMESPACE,
        ) as metric:
            metric.add_dimension(name="step", value=step)
    logger.info(
        "router batch",
        extra={
            "counters": counters,
            "steps": {f"{step}:{status}": n for (step, status), n in result.steps.items()},
            "failed": len(result.failed_message_ids),
        },
    )
