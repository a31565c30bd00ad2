"""The batch model both routers share (standard queues: `runtime.pipeline.standard`, FIFO
queues: `runtime.pipeline.fifo`).

- `Pipeline`: a router wired to its queue, its clients, ledger and limits — built once per
  execution environment by `runtime.pipeline.wiring.build_pipeline`, run once per invocation;
- `Batch`: one invocation — its deliveries, its leases (one owner token), its time budget and
  the `BatchResult` it reports;
- `Delivery`: one SQS record, parsed; `Work`: one leased envelope on its way through the
  phases (`runtime.pipeline.settle` holds the phases both routers run alike).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import BotoCoreError, ClientError

from runtime import codec
from runtime.config import PipelineSettings, Settings
from runtime.errors import EnvelopeError, SluiceError
from runtime.observability import logger
from runtime.pipeline.gateway import GatewayMessage, gateway_message
from runtime.pipeline.leases import Claim, Leases
from runtime.pipeline.ledger import Ledger
from runtime.pipeline.plan import Failure, Output, Plan, fresh_start
from runtime.pipeline.result_store import ResultStore, S3ResultStore
from runtime.pipeline.routing import Deadline, Routed, RouteLimits
from runtime.pipeline.state import Router

INVALID_JSON = "invalid_json"
INVALID_ENVELOPE = "invalid_envelope"
MAX_VISIBILITY_S = 43_200
# A failure of one envelope's I/O (ledger, result store, plan reproduction) fails that envelope alone.
ENVELOPE_ERRORS = (BotoCoreError, ClientError, SluiceError)


@dataclass(frozen=True, slots=True)
class PipelineClients:
    """Everything the routers talk to, injected (real clients, pointed at AWS or moto)."""

    sqs: Any
    dynamodb: Any
    redis: Any
    result_store: ResultStore
    s3: Any = None  # holds plans over the ledger's inline limit (in the results bucket)

    def ledger(self, cfg: PipelineSettings) -> Ledger:
        spill = None
        if self.s3 is not None and cfg.results_bucket:
            spill = S3ResultStore(self.s3, cfg.results_bucket, prefix=cfg.ledger_spill_prefix)
        return Ledger(self.dynamodb, cfg.ledger_table, horizon_s=cfg.dedup_horizon_s, spill=spill)


@dataclass(frozen=True, slots=True)
class Targets:
    """Queue URLs: where deliveries come from (bounces), where outputs and poison go."""

    source_url: str
    next_url: str
    dlq_url: str

    @classmethod
    def standard(cls, settings: Settings) -> Targets:
        queues = settings.queues
        return cls(source_url=queues.state_url, next_url=queues.state_url, dlq_url=queues.state_dlq_url)

    @classmethod
    def fifo(cls, settings: Settings) -> Targets:
        queues = settings.queues
        return cls(source_url=queues.fifo_url, next_url=queues.fifo_url, dlq_url=queues.fifo_dlq_url)

    @property
    def source(self) -> str:
        """What dead letters name as their `sluice-source`: the system and the source queue."""
        return f"router:{self.source_url.rstrip('/').rpartition('/')[2] or 'queue'}"


@dataclass(slots=True)
class Delivery:
    """One SQS record, parsed. A body that is JSON but not an envelope becomes one item whose
    id is the SQS message id; a body that cannot be read carries its `quarantine` reason."""

    index: int
    message_id: str
    receipt_handle: str
    body: str
    group_id: str | None
    receive_count: int = 1
    envelope: codec.Envelope | None = None
    quarantine: Failure | None = None
    gateway: GatewayMessage | None = None
    redriven: bool = False

    @property
    def envelope_id(self) -> str:
        return self.envelope.id if self.envelope is not None else self.message_id


def parse_delivery(index: int, record: Mapping[str, Any], history_limit: int = 0) -> Delivery:
    """One record, parsed; items the framework dead-lettered that came back (a redrive) get
    a fresh start (`plan.fresh_start`)."""
    delivery = _parse_body(index, record)
    if delivery.envelope is not None:
        delivery.envelope, delivery.redriven = fresh_start(delivery.envelope, history_limit)
    return delivery


def _parse_body(index: int, record: Mapping[str, Any]) -> Delivery:
    sqs_record = SQSRecord(dict(record))
    delivery = Delivery(
        index=index,
        message_id=sqs_record.message_id,
        receipt_handle=sqs_record.receipt_handle,
        body=sqs_record.body,
        group_id=sqs_record.attributes.message_group_id,
        receive_count=int(sqs_record.attributes.approximate_receive_count or 1),
    )
    try:
        value = codec.parse_json(delivery.body)
    except EnvelopeError as exc:
        delivery.quarantine = Failure(INVALID_JSON, str(exc)[:512], poison_now=True)
        return delivery
    delivery.gateway = gateway_message(record)
    if delivery.gateway is not None:  # POST /messages: always raw state (runtime.pipeline.gateway)
        delivery.envelope = delivery.gateway.envelope(value)
        return delivery
    if not codec.looks_like_envelope(value):
        item = codec.Item(id=delivery.message_id, step=0, attempt=0, state=value)
        delivery.envelope = codec.Envelope(id=delivery.message_id, parent=None, items=(item,))
        return delivery
    try:
        delivery.envelope = codec.envelope_from_value(value)
    except EnvelopeError as exc:
        delivery.quarantine = Failure(INVALID_ENVELOPE, str(exc)[:512], poison_now=True)
    return delivery


def bounce_visibility_s(claim: Claim) -> int:
    """How long a delivery leased elsewhere stays invisible: the rest of that lease."""
    return min(MAX_VISIBILITY_S, max(1, math.ceil(claim.remaining_ms / 1000)))


class Status(Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(slots=True)
class Work:
    """One leased envelope on its way through the phases."""

    delivery: Delivery
    routed: Routed | None = None
    outputs: list[Output] = field(default_factory=list)
    plan: Plan | None = None
    status: Status = Status.RUNNING
    followed: bool = False
    mismatch: bool = False
    rearmed: bool = False

    @property
    def running(self) -> bool:
        return self.status is Status.RUNNING

    def fail(self, reason: str, exc: BaseException | None = None) -> None:
        self.status = Status.FAILED
        logger.warning(
            "envelope failed; it will be redelivered",
            extra={"envelope": self.delivery.envelope_id, "reason": reason, "error": repr(exc)},
        )


def guarded(step: Callable[[Work], None], work: Work) -> None:
    """Run one envelope's I/O step; an I/O error fails that envelope alone."""
    try:
        step(work)
    except ENVELOPE_ERRORS as exc:
        work.fail(type(exc).__name__, exc)


@dataclass
class BatchResult:
    """What one batch did: the failed message ids (for `batchItemFailures`) and counters."""

    failed_message_ids: list[str] = field(default_factory=list)
    messages: int = 0
    skipped_done: int = 0
    bounced: int = 0
    followed_plans: int = 0
    plan_mismatches: int = 0
    quarantined: int = 0
    ledger_writes: int = 0
    ledger_reads: int = 0
    redis_round_trips: int = 0
    redis_unavailable: int = 0
    redriven: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    steps: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def transitions(self) -> int:
        return sum(self.steps.values())

    def response(self) -> PartialItemFailureResponse:
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A router wired to its queue (`runtime.pipeline.wiring.build_pipeline`): what stays the
    same from one invocation to the next, and the queue type's algorithm, `process`."""

    router: Router
    clients: PipelineClients
    settings: Settings
    targets: Targets
    limits: RouteLimits
    ledger: Ledger
    rng: random.Random
    process: Callable[[Batch], None]

    @property
    def cfg(self) -> PipelineSettings:
        return self.settings.require_pipeline()

    def run(self, records: Iterable[Mapping[str, Any]], remaining_ms: float) -> BatchResult:
        """One invocation over the Lambda SQS records, with `remaining_ms` left to run."""
        cfg = self.cfg
        deliveries = [parse_delivery(i, record, cfg.history_limit) for i, record in enumerate(records)]
        batch = Batch(
            pipeline=self,
            deliveries=deliveries,
            leases=Leases(
                self.clients.redis, lease_ms=cfg.lease_s * 1000, done_ttl_ms=cfg.done_marker_ttl_s * 1000
            ),
            deadline=Deadline(remaining_ms, cfg.time_budget_margin_s),
            result=BatchResult(messages=len(deliveries)),
        )
        self.process(batch)
        return batch.result


@dataclass(frozen=True, slots=True)
class Batch:
    """One invocation: its deliveries, leases (one owner token), time budget and report."""

    pipeline: Pipeline
    deliveries: list[Delivery]
    leases: Leases
    deadline: Deadline
    result: BatchResult
