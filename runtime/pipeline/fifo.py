"""The router core for FIFO queues: all or nothing per run, order kept within each group.

FIFO queues have no per-message delay, an in-flight message blocks its whole group, and order
is the point, so an envelope never leaves in pieces the way it does on a standard queue:

- ledger first: one consistent read for the batch's leased envelopes; a stored plan is
  replayed as recorded, without calling the router;
- a run routes every item; if one fails (or the time budget runs out mid-envelope) it writes
  and sends nothing, counts the attempt in Redis (per envelope; losing the count only allows
  more retries; without Redis, the delivery's ApproximateReceiveCount), and reports the
  message *and every later message of its group in the batch* failed (one
  `ChangeMessageVisibilityBatch`: the failed message gets the backoff, its group-mates wait
  behind it — see GROUP_MATE_VISIBILITY_S); other groups go on;
- at the maximum attempts the plan marks the failing item `poisoned` (to the FIFO DLQ alone,
  with its reason) and the rest go on in order; an envelope that keeps running out of time is
  poisoned whole with reason `time budget` (each item to the DLQ, in order);
- **budget fairness**: an envelope is charged an attempt for running out of time only when it
  had its share of the invocation's budget (`FAIR_SHARE` of it) to itself; one that started
  with less — its batch-mates used the time — is handed back with visibility 0 and no
  attempt counted;
- otherwise it is the standard path: create-only plan, sends (group id from config or an item
  field, deduplication id = output id), sink, `complete`. No continuation envelopes (they
  would join the back of the group): next envelopes hold at most `fifo_items_per_envelope`.

Messages are processed one at a time in batch order (a FIFO batch holds at most 10), so a
failure can still stop the later messages of its group.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime import codec
from runtime.config import PipelineSettings, Settings
from runtime.errors import SluiceError
from runtime.kill import kill_point
from runtime.observability import logger
from runtime.pipeline.core import (
    MAX_VISIBILITY_S,
    BatchResult,
    Delivery,
    PipelineClients,
    Status,
    Targets,
    Work,
    complete,
    count_outcomes,
    count_settled,
    guarded,
    parse_delivery,
    quarantine_of,
    recall_plans,
    report_poison,
    store_plan,
    write_sink,
)
from runtime.pipeline.leases import Claim, ClaimStatus, Leases
from runtime.pipeline.ledger import Ledger
from runtime.pipeline.plan import DONE, NEXT, POISONED, Failure, ItemExtras, OutputKind, Plan, backoff_delay_s
from runtime.pipeline.routing import FAILED, NOT_RUN, POISON_NOW, Deadline, RouteLimits, route_envelope
from runtime.pipeline.sender import Bounce, Outgoing, change_visibility, send_all
from runtime.pipeline.state import Router

TIME_BUDGET = "time budget"
# The later messages of a failed message's group are made visible at once: SQS delivers no
# message of a group while an earlier one is in flight, so they still wait out the failed
# message's backoff and come back behind it, in order. (Giving them the same backoff would be
# equivalent on SQS, but moto then hands the group back out of order.)
GROUP_MATE_VISIBILITY_S = 0
ATTEMPTS_TTL_S = 86_400
FAIR_SHARE = 0.5
"""An envelope that runs out of time is charged an attempt only if it started with at least
this share of the invocation's time budget: time its batch-mates used is not its failure."""


def fifo_targets(settings: Settings) -> Targets:
    queues = settings.queues
    return Targets(source_url=queues.fifo_url, next_url=queues.fifo_url, dlq_url=queues.fifo_dlq_url)


def fifo_limits(settings: Settings, targets: Targets | None = None) -> RouteLimits:
    cfg = settings.require_pipeline()
    return RouteLimits(
        source=(targets or fifo_targets(settings)).source,
        max_steps=cfg.max_steps,
        history_limit=cfg.history_limit,
        max_message_bytes=settings.queues.max_message_bytes,
        max_items=cfg.fifo_items_per_envelope,
        fifo_group=settings.queues.fifo_message_group_id,
        group_field=cfg.fifo_group_field,
    )


@dataclass
class _FifoRun:
    """One invocation's collaborators."""

    router: Router
    clients: PipelineClients
    cfg: PipelineSettings
    targets: Targets
    limits: RouteLimits
    leases: Leases
    ledger: Ledger
    deadline: Deadline
    rng: random.Random
    result: BatchResult

    def backoff_s(self, attempts: int) -> int:
        return backoff_delay_s(
            max(0, attempts - 1), base_s=self.cfg.backoff_base_s, cap_s=self.cfg.backoff_cap_s, rng=self.rng
        )


def process_fifo_batch(
    records: Iterable[Mapping[str, Any]],
    *,
    router: Router,
    clients: PipelineClients,
    settings: Settings,
    remaining_ms: float,
    targets: Targets | None = None,
    rng: random.Random | None = None,
) -> BatchResult:
    """Process one batch of Lambda SQS records from a FIFO queue. See the module docs."""
    cfg = settings.require_pipeline()
    deliveries = [parse_delivery(i, record, cfg.history_limit) for i, record in enumerate(records)]
    result = BatchResult(messages=len(deliveries))
    targets = targets or fifo_targets(settings)
    run = _FifoRun(
        router=router,
        clients=clients,
        cfg=cfg,
        targets=targets,
        limits=fifo_limits(settings, targets),
        leases=Leases(clients.redis, lease_ms=cfg.lease_s * 1000, done_ttl_ms=cfg.done_marker_ttl_s * 1000),
        ledger=clients.ledger(cfg),
        deadline=Deadline(remaining_ms, cfg.time_budget_margin_s),
        rng=rng or random.Random(),
        result=result,
    )
    claims = run.leases.claim([d.envelope_id for d in deliveries])
    result.redis_round_trips += 1
    done: list[str] = []
    released: list[str] = []
    try:
        bounces = _in_order(deliveries, claims, run, done, released)
    except BaseException:
        # An unexpected error fails the invocation (Lambda retries the batch): keep what
        # finished, give every other lease back.
        finished = set(done)
        acquired = [
            d.envelope_id
            for d, c in zip(deliveries, claims, strict=True)
            if c.status is ClaimStatus.ACQUIRED and d.envelope_id not in finished
        ]
        run.leases.finish(done, acquired, forget_attempts=True)
        raise
    if bounces:
        change_visibility(clients.sqs, run.targets.source_url, bounces)
    run.leases.finish(done, released, forget_attempts=True)
    result.redis_round_trips += 1
    result.redis_unavailable = int(run.leases.unavailable)
    return result


def _in_order(
    deliveries: Sequence[Delivery],
    claims: Sequence[Claim],
    run: _FifoRun,
    done: list[str],
    released: list[str],
) -> list[Bounce]:
    """Each message in batch order; a failure holds back the rest of its group."""
    result = run.result
    blocked: set[str] = set()  # groups with a failed message earlier in this batch
    bounces: list[Bounce] = []
    works: dict[str, Work] = {}
    for delivery, claim in zip(deliveries, claims, strict=True):
        if claim.status is ClaimStatus.ACQUIRED:
            works.setdefault(delivery.envelope_id, Work(delivery))
    recall_plans(list(works.values()), run.ledger, result)
    fates: dict[str, int | None] = {}
    for delivery, claim in zip(deliveries, claims, strict=True):
        group = delivery.group_id or ""
        if group in blocked:
            visibility: int | None = GROUP_MATE_VISIBILITY_S
            if claim.status is ClaimStatus.ACQUIRED:
                released.append(delivery.envelope_id)
        elif claim.status is ClaimStatus.DONE:
            result.skipped_done += 1
            continue
        elif claim.status is ClaimStatus.LEASED_ELSEWHERE:
            visibility = min(MAX_VISIBILITY_S, max(1, math.ceil(claim.remaining_ms / 1000)))
            result.bounced += 1
        else:
            envelope_id = delivery.envelope_id
            if envelope_id in fates:  # the same envelope twice in one batch: one fate for both
                visibility = fates[envelope_id]
            else:
                visibility = fates[envelope_id] = _run_one(works[envelope_id], run)
                (released if visibility is not None else done).append(envelope_id)
        if visibility is not None:
            blocked.add(group)
            bounces.append(Bounce(delivery.receipt_handle, visibility))
            result.failed_message_ids.append(delivery.message_id)
    return bounces


def _run_one(work: Work, run: _FifoRun) -> int | None:
    """Run one envelope to the end; None on success, else the visibility (s) to back off."""
    if work.running and not work.followed:
        if run.deadline.passed():
            return 0  # never started: no attempt counted, back at once for the next invocation
        retry_after = _draft(work, run)
        if retry_after is not None:
            return retry_after
        run.result.ledger_writes += 1
        guarded(lambda w: store_plan(w, run.ledger, run.limits), work)
    count_settled(work, run.result)
    kill_point("router.after_plan")
    if work.running:
        _send(work, run)
    kill_point("router.after_send")
    if work.running:
        guarded(lambda w: write_sink(w, run.clients.sink), work)
    if work.running:
        guarded(lambda w: complete(w, run.ledger, run.result), work)
    if work.status is Status.SUCCEEDED:
        count_outcomes(work, run.result)
        report_poison([work], run.router)
        return None
    return run.backoff_s(1)


def _draft(work: Work, run: _FifoRun) -> int | None:
    """Build this run's plan, or count a failed attempt and return its backoff."""
    delivery = work.delivery
    if delivery.quarantine is not None:
        work.outputs = quarantine_of(delivery, delivery.quarantine, run.limits)
        work.plan = Plan(outcomes=POISONED, outputs=tuple(work.outputs))
        return None
    envelope = delivery.envelope
    assert envelope is not None
    started_with_s = run.deadline.remaining_s()
    routed = work.routed = route_envelope(envelope, run.router, run.limits, run.deadline)
    out_of_time = NOT_RUN in routed.results
    if out_of_time and started_with_s < FAIR_SHARE * run.deadline.budget_s:
        logger.info(
            "FIFO envelope ran out of time its batch-mates used: handed back, no attempt counted",
            extra={"envelope": envelope.id, "started_with_s": round(started_with_s, 3)},
        )
        return 0
    attempts = 0
    if out_of_time or FAILED in routed.results:
        ttl_ms = ATTEMPTS_TTL_S * 1000
        attempts = run.leases.count_attempt(envelope.id, ttl_ms=ttl_ms, fallback=delivery.receive_count)
        run.result.redis_round_trips += 1
        if attempts < run.cfg.max_attempts:
            reason = TIME_BUDGET if out_of_time else _first_failure(routed.failures).reason
            logger.warning(
                "FIFO run failed; the envelope and its later group-mates back off",
                extra={"envelope": envelope.id, "attempt": attempts, "reason": reason},
            )
            return run.backoff_s(attempts)
    outcomes, extras = _decide(envelope, routed.results, routed.failures, out_of_time, attempts)
    try:
        work.outputs = run.limits.build_outputs(envelope, outcomes, routed.next_items, extras)
    except SluiceError as exc:  # e.g. a poison message over the size limit
        work.fail("outputs could not be built", exc)
        return run.backoff_s(1)
    work.plan = Plan(outcomes=outcomes, outputs=tuple(work.outputs))
    return None


def _first_failure(failures: Mapping[int, Failure]) -> Failure:
    return failures[min(failures)]


def _decide(
    envelope: codec.Envelope,
    results: list[str],
    failures: Mapping[int, Failure],
    out_of_time: bool,
    attempts: int,
) -> tuple[str, dict[int, ItemExtras]]:
    """Outcomes of a run that goes ahead: every failure (or, out of time, every item) poisoned."""
    counted = attempts or None
    if out_of_time:
        failure = Failure(TIME_BUDGET, f"{len(envelope.items)} items did not finish in the time budget")
        extras = ItemExtras(failure=failure, attempts=counted)
        return POISONED * len(envelope.items), dict.fromkeys(range(len(envelope.items)), extras)
    outcomes: list[str] = []
    poison: dict[int, ItemExtras] = {}
    for index, result in enumerate(results):
        if result in (NEXT, DONE):
            outcomes.append(result)
            continue
        assert result in (FAILED, POISON_NOW)
        failure = failures[index]
        outcomes.append(POISONED)
        poison[index] = ItemExtras(failure=failure, attempts=counted)
    return "".join(outcomes), poison


def _send(work: Work, run: _FifoRun) -> None:
    default_group = run.limits.fifo_group or ""
    outgoing = [
        Outgoing(
            queue_url=run.targets.dlq_url if output.kind is OutputKind.POISONED else run.targets.next_url,
            output=output,
            owner=0,
            group_id=output.group or default_group,
        )
        for output in work.outputs
        if output.kind is not OutputKind.SINK
    ]
    if outgoing and send_all(run.clients.sqs, outgoing, max_request_bytes=run.limits.max_message_bytes):
        work.fail("output messages could not be sent")
