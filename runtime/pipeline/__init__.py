"""The SQS state-machine router framework: routers and pure mutations in, a Lambda handler out.

Public API: `mutation` (pure state updates), `PoisonItem` (fail an item for good),
`build_pipeline()` / `pipeline_clients()` / `handle()` (the one wiring, `runtime.pipeline.wiring`),
the result stores and the client bundle. See `runtime.pipeline.state` for why routers must be
deterministic.
"""

from runtime.pipeline.batch import BatchResult, Pipeline, PipelineClients, Targets
from runtime.pipeline.errors import PlanMismatch, PoisonItem
from runtime.pipeline.result_store import DiscardingResultStore, ResultStore, S3ResultStore
from runtime.pipeline.state import Router, State, copy_state, mutation
from runtime.pipeline.wiring import build_pipeline, handle, pipeline_clients, publish

__all__ = [
    "BatchResult",
    "DiscardingResultStore",
    "Pipeline",
    "PipelineClients",
    "PlanMismatch",
    "PoisonItem",
    "ResultStore",
    "Router",
    "S3ResultStore",
    "State",
    "Targets",
    "build_pipeline",
    "copy_state",
    "handle",
    "mutation",
    "pipeline_clients",
    "publish",
]
