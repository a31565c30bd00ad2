"""The SQS state-machine router framework: routers and pure mutations in, a Lambda handler out.

Public API: `pipeline()` (a handler), `mutation` (pure state updates), `PoisonItem` (fail an item
for good), `process_batch()` (the core, for benchmarks and the local runtime), the sinks and
the client bundle. See `runtime.pipeline.state` for why routers must be deterministic.
"""

from runtime.pipeline.api import pipeline, publish
from runtime.pipeline.core import BatchResult, PipelineClients, Targets, process_batch
from runtime.pipeline.errors import PlanMismatch, PoisonItem
from runtime.pipeline.fifo import process_fifo_batch
from runtime.pipeline.sinks import DiscardSink, S3Sink, Sink
from runtime.pipeline.state import Router, State, copy_state, mutation

__all__ = [
    "BatchResult",
    "DiscardSink",
    "PipelineClients",
    "PlanMismatch",
    "PoisonItem",
    "Router",
    "S3Sink",
    "Sink",
    "State",
    "Targets",
    "copy_state",
    "mutation",
    "pipeline",
    "process_batch",
    "process_fifo_batch",
    "publish",
]
