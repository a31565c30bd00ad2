"""The router for FIFO queues: all or nothing per run, order kept within each group
(docs/pipeline.md#fifo-queues).

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
- otherwise it is the standard path (`runtime.pipeline.settle`): create-only plan, sends
  (group id from config or an item field, deduplication id = output id), sink, `complete`.
  No continuation envelopes (they would join the back of the group): next envelopes hold at
  most `fifo_items_per_envelope`.

Messages are processed one at a time in batch order (a FIFO batch holds at most 10), so a
failure can still stop the later messages of its group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runtime import codec
from runtime.kill import kill_point
from runtime.observability import logger
from runtime.pipeline import settle
from runtime.pipeline.batch import Batch, Delivery, Status, Work, bounce_visibility_s, guarded
from runtime.pipeline.leases import Claim, ClaimStatus
from runtime.pipeline.plan import DONE, NEXT, POISONED, Failure, ItemExtras, backoff_delay_s
from runtime.pipeline.routing import FAILED, NOT_RUN, POISON_NOW, route_envelope
from runtime.pipeline.sender import Bounce, change_visibility, send_all

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


def _backoff_s(batch: Batch, attempts: int) -> int:
    cfg = batch.pipeline.cfg
    return backoff_delay_s(
        max(0, attempts - 1), base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s, rng=batch.pipeline.rng
    )


def process(batch: Batch) -> None:
    """Process one batch of a FIFO queue. See the module docs."""
    deliveries, leases, result = batch.deliveries, batch.leases, batch.result
    claims = leases.claim([d.envelope_id for d in deliveries])
    result.redis_round_trips += 1
    done: list[str] = []
    released: list[str] = []
    try:
        bounces = _in_order(batch, claims, done, released)
    except BaseException:
        # An unexpected error fails the invocation (Lambda retries the batch): keep what
        # finished, give every other lease back.
        finished = set(done)
        acquired = [
            d.envelope_id
            for d, c in zip(deliveries, claims, strict=True)
            if c.status is ClaimStatus.ACQUIRED and d.envelope_id not in finished
        ]
        leases.finish(done, acquired, forget_attempts=True)
        raise
    if bounces:
        change_visibility(batch.pipeline.clients.sqs, batch.pipeline.targets.source_url, bounces)
    leases.finish(done, released, forget_attempts=True)
    result.redis_round_trips += 1
    result.redis_unavailable = int(leases.unavailable)


def _in_order(batch: Batch, claims: Sequence[Claim], done: list[str], released: list[str]) -> list[Bounce]:
    """Each message in batch order; a failure holds back the rest of its group."""
    result = batch.result
    blocked: set[str] = set()  # groups with a failed message earlier in this batch
    bounces: list[Bounce] = []
    works: dict[str, Work] = {}
    for delivery, claim in zip(batch.deliveries, claims, strict=True):
        if claim.status is ClaimStatus.ACQUIRED:
            works.setdefault(delivery.envelope_id, Work(delivery))
    settle.recall_plans(list(works.values()), batch.pipeline.ledger, result)
    fates: dict[str, int | None] = {}
    for delivery, claim in zip(batch.deliveries, claims, strict=True):
        group = delivery.group_id or ""
        if group in blocked:
            visibility: int | None = GROUP_MATE_VISIBILITY_S
            if claim.status is ClaimStatus.ACQUIRED:
                released.append(delivery.envelope_id)
        elif claim.status is ClaimStatus.DONE:
            result.skipped_done += 1
            continue
        elif claim.status is ClaimStatus.LEASED_ELSEWHERE:
            visibility = bounce_visibility_s(claim)
            result.bounced += 1
        else:
            envelope_id = delivery.envelope_id
            if envelope_id in fates:  # the same envelope twice in one batch: one fate for both
                visibility = fates[envelope_id]
            else:
                visibility = fates[envelope_id] = _run_one(works[envelope_id], batch)
                (released if visibility is not None else done).append(envelope_id)
        if visibility is not None:
            blocked.add(group)
            bounces.append(Bounce(delivery.receipt_handle, visibility))
            result.failed_message_ids.append(delivery.message_id)
    return bounces


def _run_one(work: Work, batch: Batch) -> int | None:
    """Run one envelope to the end; None on success, else the visibility (s) to back off."""
    pipeline, result = batch.pipeline, batch.result
    if work.running and not work.followed:
        if batch.deadline.passed():
            return 0  # never started: no attempt counted, back at once for the next invocation
        retry_after = _draft(work, batch)
        if retry_after is not None:
            return retry_after
        result.ledger_writes += 1
        guarded(lambda w: settle.store_plan(w, pipeline.ledger, pipeline.limits), work)
    settle.count_settled(work, result)
    kill_point("router.after_plan")
    if work.running:
        _send(work, batch)
    kill_point("router.after_send")
    if work.running:
        guarded(lambda w: settle.write_results(w, pipeline.clients.result_store), work)
    if work.running:
        guarded(lambda w: settle.complete(w, pipeline.ledger, result), work)
    if work.status is Status.SUCCEEDED:
        settle.count_outcomes(work, result)
        settle.report_poison([work], pipeline.router)
        return None
    return _backoff_s(batch, 1)


def _draft(work: Work, batch: Batch) -> int | None:
    """Build this run's plan, or count a failed attempt and return its backoff."""
    pipeline = batch.pipeline
    if settle.plan_quarantine(work, pipeline.limits):
        return None
    delivery = work.delivery
    envelope = delivery.envelope
    assert envelope is not None
    started_with_s = batch.deadline.remaining_s()
    routed = work.routed = route_envelope(envelope, pipeline.router, pipeline.limits, batch.deadline)
    out_of_time = NOT_RUN in routed.results
    if out_of_time and started_with_s < FAIR_SHARE * batch.deadline.budget_s:
        logger.info(
            "FIFO envelope ran out of time its batch-mates used: handed back, no attempt counted",
            extra={"envelope": envelope.id, "started_with_s": round(started_with_s, 3)},
        )
        return 0
    attempts = 0
    if out_of_time or FAILED in routed.results:
        attempts = _count_attempt(delivery, batch)
        if attempts < pipeline.cfg.max_attempts:
            reason = TIME_BUDGET if out_of_time else _first_failure(routed.failures).reason
            logger.warning(
                "FIFO run failed; the envelope and its later group-mates back off",
                extra={"envelope": envelope.id, "attempt": attempts, "reason": reason},
            )
            return _backoff_s(batch, attempts)
    outcomes, extras = _decide(envelope, routed.results, routed.failures, out_of_time, attempts)
    if not settle.draft_plan(work, outcomes, extras, pipeline.limits):
        return _backoff_s(batch, 1)
    return None


def _count_attempt(delivery: Delivery, batch: Batch) -> int:
    """One more failed run of the envelope, counted in Redis (without Redis, the delivery's
    ApproximateReceiveCount)."""
    batch.result.redis_round_trips += 1
    return batch.leases.count_attempt(
        delivery.envelope_id, ttl_ms=ATTEMPTS_TTL_S * 1000, fallback=delivery.receive_count
    )


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


def _send(work: Work, batch: Batch) -> None:
    pipeline = batch.pipeline
    messages = settle.outgoing(work, pipeline.targets, owner=0, fifo_group=pipeline.limits.fifo_group or "")
    if messages and send_all(
        pipeline.clients.sqs, messages, max_request_bytes=pipeline.limits.max_message_bytes
    ):
        work.fail("output messages could not be sent")
