"""The router core for standard queues: one batch of SQS records in, a report out.

For each incoming envelope, in phases that batch their I/O across the whole batch:

1. **claim** — one Redis call leases every envelope id; an id with a done marker is deleted
   at once, one leased elsewhere is bounced for the lease's remaining lifetime;
2. **ledger first** — one consistent read of the ledger for every leased envelope: a stored
   plan is replayed exactly as recorded (`complete` means nothing more to send) and the
   router is not called for it;
3. **route** — for the rest, the router runs over each item (a private copy of its state) in
   order until the time budget is spent; outcomes follow (next, done, retry with a recorded
   delay, poisoned, continued);
4. **plan** — the outcome plan, bodies included, is created in the ledger (create-only); a
   plan written meanwhile by another run governs instead, and when it differs from this
   run's the delivery is also dead-lettered with reason `plan_mismatch` (both hashes);
5. **send** — next/retry/continuation envelopes to the state queue, poison to the DLQ;
6. **sink** — the done items, one create-only object per envelope;
7. **complete** — the ledger mark (only for plans that sent messages), then one Redis call
   turns leases into done markers (or releases those that failed).

A process may die anywhere: every step after the plan is repeatable under the same ids, and a
redelivery replays the plan. Ledger requests per batch: 1 consistent `BatchGetItem`; writes
per envelope: 1, plus 1 `complete` mark when it sends messages; Redis round trips per batch: 2
(none once Redis has failed in the invocation: see `runtime.pipeline.leases`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import BotoCoreError, ClientError

from runtime import codec
from runtime.config import PipelineSettings, Settings
from runtime.errors import EnvelopeError, SluiceError
from runtime.kill import kill_point
from runtime.observability import logger
from runtime.pipeline.gateway import GatewayMessage, IdempotencyRecords, gateway_message, quarantine_conflicts
from runtime.pipeline.leases import ClaimStatus, Leases
from runtime.pipeline.ledger import Ledger
from runtime.pipeline.plan import (
    CONTINUED,
    DONE,
    NEXT,
    OUTCOME_NAMES,
    POISONED,
    RETRY,
    Failure,
    ItemExtras,
    Output,
    OutputKind,
    Plan,
    backoff_delay_s,
    fresh_start,
    notice_output,
    quarantine_outputs,
)
from runtime.pipeline.routing import (
    FAILED,
    NOT_RUN,
    POISON_NOW,
    Deadline,
    Routed,
    RouteLimits,
    route_envelope,
)
from runtime.pipeline.sender import Bounce, Outgoing, change_visibility, send_all
from runtime.pipeline.sinks import S3Sink, Sink
from runtime.pipeline.state import Router, copy_state, routing_item

INVALID_JSON = "invalid_json"
INVALID_ENVELOPE = "invalid_envelope"
PLAN_MISMATCH = "plan_mismatch"
MAX_VISIBILITY_S = 43_200
# A failure of one envelope's I/O (ledger, sink, plan reproduction) fails that envelope alone.
ENVELOPE_ERRORS = (BotoCoreError, ClientError, SluiceError)


@dataclass(frozen=True, slots=True)
class PipelineClients:
    """Everything the core talks to, injected (real clients, pointed at AWS or moto)."""

    sqs: Any
    dynamodb: Any
    redis: Any
    sink: Sink
    s3: Any = None  # holds plans over the ledger's inline limit (in the results bucket)

    def ledger(self, cfg: PipelineSettings) -> Ledger:
        spill = None
        if self.s3 is not None and cfg.results_bucket:
            spill = S3Sink(self.s3, cfg.results_bucket, prefix=cfg.ledger_spill_prefix)
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
class Policy:
    """How routed items become outcomes: standard queues retry items on their own."""

    settings: PipelineSettings
    rng: random.Random

    def decide(self, envelope: codec.Envelope, routed: Routed) -> tuple[str, dict[int, ItemExtras]]:
        outcomes: list[str] = []
        extras: dict[int, ItemExtras] = {}
        for index, result in enumerate(routed.results):
            if result in (NEXT, DONE):
                outcomes.append(result)
            elif result == NOT_RUN:
                outcomes.append(CONTINUED)
            else:
                outcome, extra = self._failed(envelope.items[index], routed.failures[index], result)
                outcomes.append(outcome)
                extras[index] = extra
        return "".join(outcomes), extras

    def _failed(self, item: codec.Item, failure: Failure, result: str) -> tuple[str, ItemExtras]:
        if result == POISON_NOW or item.attempt + 1 >= self.settings.max_attempts:
            return POISONED, ItemExtras(failure=failure)
        assert result == FAILED
        delay = backoff_delay_s(
            item.attempt, base_s=self.settings.backoff_base_s, cap_s=self.settings.backoff_cap_s, rng=self.rng
        )
        return RETRY, ItemExtras(delay_s=delay, failure=failure)


def process_batch(
    records: Iterable[Mapping[str, Any]],
    *,
    router: Router,
    clients: PipelineClients,
    settings: Settings,
    remaining_ms: float,
    targets: Targets | None = None,
    rng: random.Random | None = None,
) -> BatchResult:
    """Process one batch of Lambda SQS records (standard queue). See the module docs."""
    cfg = settings.require_pipeline()
    deliveries = [parse_delivery(i, record, cfg.history_limit) for i, record in enumerate(records)]
    quarantine_conflicts(
        deliveries, IdempotencyRecords(clients.dynamodb, cfg.ledger_table, horizon_s=cfg.dedup_horizon_s)
    )
    targets = targets or Targets.standard(settings)
    batch = _Batch(
        router=router,
        clients=clients,
        settings=settings,
        targets=targets,
        limits=RouteLimits(
            cfg.max_steps, cfg.history_limit, settings.queues.max_message_bytes, source=targets.source
        ),
        deadline=Deadline(remaining_ms, cfg.time_budget_margin_s),
        policy=Policy(cfg, rng or random.Random()),
        ledger=clients.ledger(cfg),
        result=BatchResult(messages=len(deliveries)),
    )
    leases = Leases(clients.redis, lease_ms=cfg.lease_s * 1000, done_ttl_ms=cfg.done_marker_ttl_s * 1000)
    works = claim_envelopes(deliveries, leases, clients.sqs, batch.targets, batch.result)
    try:
        _run_phases(batch, works)
    except BaseException:
        # An unexpected error fails the whole invocation (Lambda retries the batch): give the
        # leases back so the retry is not bounced for a lease nobody holds any more.
        leases.finish(done=[], released=[w.delivery.envelope_id for w in works])
        raise
    _finish(works, deliveries, leases, batch.result, batch.router)
    return batch.result


@dataclass(frozen=True, slots=True)
class _Batch:
    """One invocation's collaborators."""

    router: Router
    clients: PipelineClients
    settings: Settings
    targets: Targets
    limits: RouteLimits
    deadline: Deadline
    policy: Policy
    ledger: Ledger
    result: BatchResult


def _run_phases(batch: _Batch, works: Sequence[Work]) -> None:
    router, limits, ledger, result = batch.router, batch.limits, batch.ledger, batch.result
    io_threads = max(1, min(batch.settings.require_pipeline().io_threads, len(works)))
    recall_plans(works, ledger, result)
    with ThreadPoolExecutor(max_workers=io_threads) as pool:
        # Each plan is written while the next envelope is routed (the ledger is the slow part).
        pending = []
        for work in works:
            if not work.running or work.followed:
                continue
            _draft(work, router, limits, batch.deadline, batch.policy)
            if work.running:
                result.ledger_writes += 1
                pending.append(pool.submit(guarded, lambda w: store_plan(w, ledger, limits), work))
        for future in pending:
            future.result()
        for work in works:
            count_settled(work, result)
        kill_point("router.after_plan")
        _send_outputs(works, batch.clients.sqs, batch.targets, limits.max_message_bytes)
        kill_point("router.after_send")
        _each(pool, works, lambda w: write_sink(w, batch.clients.sink))
        kill_point("router.after_sink")
        _each(pool, works, lambda w: complete(w, ledger, result))


def claim_envelopes(
    deliveries: Sequence[Delivery], leases: Leases, sqs: Any, targets: Targets, result: BatchResult
) -> list[Work]:
    """Lease each envelope once; skip the done, bounce the leased elsewhere."""
    first: dict[str, Delivery] = {}
    for delivery in deliveries:
        first.setdefault(delivery.envelope_id, delivery)
    unique = list(first.values())
    claims = leases.claim([d.envelope_id for d in unique])
    result.redis_round_trips += 1
    works: list[Work] = []
    bounces: list[Bounce] = []
    for delivery, claim in zip(unique, claims, strict=True):
        if claim.status is ClaimStatus.ACQUIRED:
            works.append(Work(delivery))
        elif claim.status is ClaimStatus.DONE:
            result.skipped_done += 1
        else:
            visibility = min(MAX_VISIBILITY_S, max(1, math.ceil(claim.remaining_ms / 1000)))
            bounces.append(Bounce(delivery.receipt_handle, visibility))
            result.failed_message_ids.append(delivery.message_id)
            result.bounced += 1
    if bounces:
        change_visibility(sqs, targets.source_url, bounces)
    return works


def recall_plans(works: Sequence[Work], ledger: Ledger, result: BatchResult) -> None:
    """Ledger first: one consistent read for every leased envelope, before any user code; a
    stored plan is adopted (replayed as recorded, the router not called). A redriven envelope
    that has one re-arms its TTL. A failed read fails these envelopes (redelivered later)."""
    running = [w for w in works if w.running]
    if not running:
        return
    try:
        stored = ledger.read_many([w.delivery.envelope_id for w in running])
    except ENVELOPE_ERRORS as exc:
        for work in running:
            work.fail("the ledger could not be read", exc)
        return
    finally:
        result.ledger_reads += 1
    for work in running:
        plan = stored.get(work.delivery.envelope_id)
        if plan is None:
            continue
        adopt(work, plan)
        if work.delivery.redriven:
            guarded(lambda w: rearm(w, ledger, result), work)


def rearm(work: Work, ledger: Ledger, result: BatchResult) -> None:
    ledger.rearm(work.delivery.envelope_id)
    result.ledger_writes += 1
    work.rearmed = True


def adopt(work: Work, plan: Plan) -> None:
    """Follow a stored plan: its recorded outputs (none left to send once it is complete)."""
    work.followed = True
    work.plan = plan
    work.outputs = [] if plan.complete else list(plan.outputs)


def _draft(work: Work, router: Router, limits: RouteLimits, deadline: Deadline, policy: Policy) -> None:
    """Route the envelope and build the plan this run would write."""
    delivery = work.delivery
    if delivery.quarantine is not None:
        work.outputs = quarantine_of(delivery, delivery.quarantine, limits)
        work.plan = Plan(outcomes=POISONED, outputs=tuple(work.outputs))
        return
    envelope = delivery.envelope
    assert envelope is not None
    work.routed = route_envelope(envelope, router, limits, deadline)
    outcomes, extras = policy.decide(envelope, work.routed)
    try:
        work.outputs = limits.build_outputs(envelope, outcomes, work.routed.next_items, extras)
    except SluiceError as exc:  # e.g. a retry envelope over the size limit
        work.fail("outputs could not be built", exc)
        return
    work.plan = Plan(outcomes=outcomes, outputs=tuple(work.outputs))


def store_plan(work: Work, ledger: Ledger, limits: RouteLimits) -> None:
    """The create-only ledger write (safe in a worker thread: no user code runs here). A plan
    stored meanwhile by another run governs; when it differs from ours, this delivery is also
    dead-lettered with reason `plan_mismatch` and both hashes (and the alarm fires)."""
    ours = work.plan
    assert ours is not None
    stored = ledger.create_or_get(work.delivery.envelope_id, ours)
    if stored.created:
        return
    adopt(work, stored.plan)
    theirs = stored.plan.digest
    if theirs == ours.digest:
        return
    work.mismatch = True
    delivery = work.delivery
    detail = f"this run's plan {ours.digest} lost the create-only race to the recorded plan {theirs}"
    failure = Failure(PLAN_MISMATCH, detail, error="PlanMismatch")
    notice = notice_output(
        delivery.envelope_id,
        delivery.body.encode(),
        failure,
        source=limits.source,
        group=_group(delivery, limits),
    )
    work.outputs.append(notice)


def count_settled(work: Work, result: BatchResult) -> None:
    result.followed_plans += work.followed
    result.plan_mismatches += work.mismatch
    result.redriven += work.delivery.redriven
    if work.mismatch:
        logger.error(
            "PlanMismatch: a router run differs from the plan recorded meanwhile; the recorded "
            "plan is followed and the delivery is dead-lettered (plan_mismatch)",
            extra={"envelope": work.delivery.envelope_id},
        )


def _group(delivery: Delivery, limits: RouteLimits) -> str | None:
    return (delivery.group_id or limits.fifo_group) if limits.fifo_group is not None else None


def quarantine_of(delivery: Delivery, failure: Failure, limits: RouteLimits) -> list[Output]:
    return quarantine_outputs(
        delivery.message_id,
        delivery.body.encode(),
        failure,
        source=limits.source,
        group=_group(delivery, limits),
    )


def _send_outputs(works: Sequence[Work], sqs: Any, targets: Targets, max_bytes: int) -> None:
    outgoing = [
        Outgoing(
            queue_url=targets.dlq_url if output.kind is OutputKind.POISONED else targets.next_url,
            output=output,
            owner=number,
        )
        for number, work in enumerate(works)
        if work.running
        for output in work.outputs
        if output.kind is not OutputKind.SINK
    ]
    if not outgoing:
        return
    for number in send_all(sqs, outgoing, max_request_bytes=max_bytes):
        works[number].fail("output messages could not be sent")


def write_sink(work: Work, sink: Sink) -> None:
    for output in work.outputs:
        if output.kind is OutputKind.SINK:
            sink.write(work.delivery.envelope_id, output.body)


def complete(work: Work, ledger: Ledger, result: BatchResult) -> None:
    assert work.plan is not None
    if work.plan.needs_complete_mark and not work.plan.complete:
        ledger.mark_complete(work.delivery.envelope_id)
        result.ledger_writes += 1
    work.status = Status.SUCCEEDED


def _each(pool: ThreadPoolExecutor, works: Sequence[Work], step: Callable[[Work], None]) -> None:
    """Run `step` for every running work, concurrently; an I/O error fails that work alone."""
    running = [w for w in works if w.running]
    if len(running) == 1:
        guarded(step, running[0])
        return
    for _ in pool.map(lambda w: guarded(step, w), running):
        pass


def guarded(step: Callable[[Work], None], work: Work) -> None:
    try:
        step(work)
    except ENVELOPE_ERRORS as exc:
        work.fail(type(exc).__name__, exc)


def _finish(
    works: Sequence[Work],
    deliveries: Sequence[Delivery],
    leases: Leases,
    result: BatchResult,
    router: Router,
) -> None:
    """Turn leases into done markers (or release them), count, and list the failed messages."""
    succeeded = [w for w in works if w.status is Status.SUCCEEDED]
    failed = [w for w in works if w.status is not Status.SUCCEEDED]
    leases.finish(
        done=[w.delivery.envelope_id for w in succeeded], released=[w.delivery.envelope_id for w in failed]
    )
    result.redis_round_trips += 1
    result.redis_unavailable = int(leases.unavailable)
    # A second delivery of an envelope in the same batch shares the first one's fate.
    reported = set(result.failed_message_ids)
    failed_ids = {w.delivery.envelope_id for w in failed}
    failed_ids.update(d.envelope_id for d in deliveries if d.message_id in reported)
    for work in succeeded:
        count_outcomes(work, result)
    for delivery in deliveries:
        if delivery.envelope_id in failed_ids and delivery.message_id not in reported:
            result.failed_message_ids.append(delivery.message_id)
    report_poison(succeeded, router)


def count_outcomes(work: Work, result: BatchResult) -> None:
    assert work.plan is not None
    if work.routed is not None:
        result.steps.update(work.routed.steps)
    if work.delivery.quarantine is not None:
        result.quarantined += 1
    if not (work.followed and work.plan.complete):
        result.outcomes.update(OUTCOME_NAMES[o] for o in work.plan.outcomes)


def report_poison(works: Sequence[Work], router: Router) -> None:
    """Log each item sent to the DLQ, and tell a router that asks (`on_poisoned(state, reason,
    detail)`, e.g. the jobs worker, which records the job as failed). Called after the DLQ send,
    on every run that sent it, so the hook must be idempotent; its failure never fails the
    batch: the item is already safe in the DLQ. The hook gets a copy of the item's state."""
    on_poisoned = getattr(router, "on_poisoned", None)
    for work in works:
        for output in work.outputs:
            if output.kind is not OutputKind.POISONED:
                continue
            planned = output.planned
            logger.warning(
                "item quarantined to the DLQ",
                extra={
                    "envelope": work.delivery.envelope_id,
                    "output": planned.id,
                    "reason": planned.reason,
                    "detail": planned.detail,
                },
            )
            envelope = work.delivery.envelope
            if on_poisoned is None or envelope is None or planned.item is None:
                continue
            item = envelope.items[planned.item]
            try:
                state = copy_state(item.state)
                with routing_item(item.id):  # the hook, like the router, may ask which item this is
                    on_poisoned(state, planned.reason or "", planned.detail or "")
            except Exception as exc:  # noqa: BLE001 - a hook's failure must not fail a sent batch
                logger.exception("on_poisoned hook failed", extra={"output": planned.id, "error": repr(exc)})
