"""`pipeline(router)`: turn a router into a Lambda handler for an SQS event source mapping.

    from runtime.pipeline import mutation, pipeline

    @mutation
    def add_greeting(state):
        state["greeting"] = "hello"
        return state

    def router(state):
        return add_greeting(state) if "greeting" not in state else None

    handler = pipeline(router)

The handler validates its settings and builds its clients on the first invocation (never at
import), runs one batch through the core, publishes metrics and returns `batchItemFailures`
(the event source mapping must enable `ReportBatchItemFailures`). A router's side effects
must be idempotent, keyed by the item id: see `runtime.pipeline.state`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from runtime import metric_names
from runtime.config import Settings, get_settings
from runtime.observability import METRICS_NAMESPACE, logger, metrics
from runtime.pipeline.core import BatchResult, PipelineClients, process_batch
from runtime.pipeline.fifo import process_fifo_batch
from runtime.pipeline.sinks import S3Sink, Sink
from runtime.pipeline.state import Router, load_router

Handler = Callable[[Mapping[str, Any], Any], PartialItemFailureResponse]
BatchProcessor = Callable[..., BatchResult]


def default_clients(settings: Settings, sink: Sink | None = None) -> PipelineClients:
    """Real clients from the process's settings (boto3 honours AWS_ENDPOINT_URL for moto)."""
    from runtime.clients import aws_client, make_redis

    cfg = settings.require_pipeline()
    return PipelineClients(
        sqs=aws_client("sqs"),
        dynamodb=aws_client("dynamodb"),
        redis=make_redis(settings.redis, timeout_s=cfg.redis_timeout_s, retries=cfg.redis_retries),
        sink=sink or S3Sink(aws_client("s3"), cfg.results_bucket, prefix=cfg.results_prefix),
        s3=aws_client("s3"),
    )


class PipelineHandler:
    """The Lambda handler `pipeline()` returns; its dependencies resolve on first use."""

    def __init__(
        self,
        router: Router | None,
        *,
        process: BatchProcessor,
        sink: Sink | None,
        settings: Settings | None,
        clients: PipelineClients | None,
    ) -> None:
        self._router = router
        self._process = process
        self._sink = sink
        self._settings = settings
        self._clients = clients
        self._lock = threading.Lock()

    def _resolve(self) -> tuple[Router, Settings, PipelineClients]:
        with self._lock:
            if self._settings is None:
                self._settings = get_settings()
            if self._router is None:
                self._router = load_router(self._settings.require_pipeline().router)
            if self._clients is None:
                self._clients = default_clients(self._settings, self._sink)
            return self._router, self._settings, self._clients

    def __call__(self, event: Mapping[str, Any], context: Any) -> PartialItemFailureResponse:
        router, settings, clients = self._resolve()
        result = self._process(
            event.get("Records") or [],
            router=router,
            clients=clients,
            settings=settings,
            remaining_ms=context.get_remaining_time_in_millis(),
        )
        publish(result)
        return result.response()


def pipeline(
    router: Router | None = None,
    *,
    sink: Sink | None = None,
    settings: Settings | None = None,
    clients: PipelineClients | None = None,
    fifo: bool = False,
) -> Handler:
    """A Lambda handler that routes a queue's envelopes with `router`.

    `router=None` runs the router the settings name (`SLUICE_PIPELINE__ROUTER`); `sink`
    replaces the S3 results sink; `settings` / `clients` are for tests and local runs;
    `fifo=True` processes a FIFO queue (all or nothing per run, see `runtime.pipeline.fifo`).
    """
    process = process_fifo_batch if fifo else process_batch
    return PipelineHandler(router, process=process, sink=sink, settings=settings, clients=clients)


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
    metrics.flush_metrics()
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
