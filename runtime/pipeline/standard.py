"""The router for standard queues: one batch of SQS records in, a report out (the protocol,
its invariants and crash points: docs/pipeline.md#the-protocol-standard-queues).

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

Steps 2 and 4–7 are `runtime.pipeline.settle`'s, shared with the FIFO router. A process may
die anywhere: every step after the plan is repeatable under the same ids, and a redelivery
replays the plan. Ledger requests per batch: 1 consistent `BatchGetItem`; writes per
envelope: 1, plus 1 `complete` mark when it sends messages; Redis round trips per batch: 2
(none once Redis has failed in the invocation: see `runtime.pipeline.leases`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from runtime import codec
from runtime.config import PipelineSettings
from runtime.kill import kill_point
from runtime.pipeline import settle
from runtime.pipeline.batch import (
    Batch,
    Delivery,
    Status,
    Work,
    bounce_visibility_s,
    guarded,
)
from runtime.pipeline.gateway import IdempotencyRecords, quarantine_conflicts
from runtime.pipeline.leases import ClaimStatus
from runtime.pipeline.plan import CONTINUED, DONE, NEXT, POISONED, RETRY, Failure, ItemExtras, backoff_delay_s
from runtime.pipeline.routing import FAILED, NOT_RUN, POISON_NOW, Routed, route_envelope
from runtime.pipeline.sender import Bounce, change_visibility, send_all


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


def process(batch: Batch) -> None:
    """Process one batch of a standard queue. See the module docs."""
    pipeline = batch.pipeline
    cfg = pipeline.cfg
    quarantine_conflicts(
        batch.deliveries,
        IdempotencyRecords(pipeline.clients.dynamodb, cfg.ledger_table, horizon_s=cfg.dedup_horizon_s),
    )
    works = claim_envelopes(batch)
    try:
        _run_phases(batch, works)
    except BaseException:
        # An unexpected error fails the whole invocation (Lambda retries the batch): give the
        # leases back so the retry is not bounced for a lease nobody holds any more.
        batch.leases.finish(done=[], released=[w.delivery.envelope_id for w in works])
        raise
    _finish(batch, works)


def _run_phases(batch: Batch, works: Sequence[Work]) -> None:
    pipeline, result = batch.pipeline, batch.result
    limits, ledger = pipeline.limits, pipeline.ledger
    io_threads = max(1, min(pipeline.cfg.io_threads, len(works)))
    settle.recall_plans(works, ledger, result)
    policy = Policy(pipeline.cfg, pipeline.rng)
    with ThreadPoolExecutor(max_workers=io_threads) as pool:
        # Each plan is written while the next envelope is routed (the ledger is the slow part).
        pending = []
        for work in works:
            if not work.running or work.followed:
                continue
            _draft(work, batch, policy)
            if work.running:
                result.ledger_writes += 1
                pending.append(pool.submit(guarded, lambda w: settle.store_plan(w, ledger, limits), work))
        for future in pending:
            future.result()
        for work in works:
            settle.count_settled(work, result)
        kill_point("router.after_plan")
        _send_outputs(batch, works)
        kill_point("router.after_send")
        _each(pool, works, lambda w: settle.write_results(w, pipeline.clients.result_store))
        kill_point("router.after_sink")
        _each(pool, works, lambda w: settle.complete(w, ledger, result))


def claim_envelopes(batch: Batch) -> list[Work]:
    """Lease each envelope once; skip the done, bounce the leased elsewhere."""
    result = batch.result
    first: dict[str, Delivery] = {}
    for delivery in batch.deliveries:
        first.setdefault(delivery.envelope_id, delivery)
    unique = list(first.values())
    claims = batch.leases.claim([d.envelope_id for d in unique])
    result.redis_round_trips += 1
    works: list[Work] = []
    bounces: list[Bounce] = []
    for delivery, claim in zip(unique, claims, strict=True):
        if claim.status is ClaimStatus.ACQUIRED:
            works.append(Work(delivery))
        elif claim.status is ClaimStatus.DONE:
            result.skipped_done += 1
        else:
            bounces.append(Bounce(delivery.receipt_handle, bounce_visibility_s(claim)))
            result.failed_message_ids.append(delivery.message_id)
            result.bounced += 1
    if bounces:
        change_visibility(batch.pipeline.clients.sqs, batch.pipeline.targets.source_url, bounces)
    return works


def _draft(work: Work, batch: Batch, policy: Policy) -> None:
    """Route the envelope and build the plan this run would write."""
    limits = batch.pipeline.limits
    if settle.plan_quarantine(work, limits):
        return
    envelope = work.delivery.envelope
    assert envelope is not None
    work.routed = route_envelope(envelope, batch.pipeline.router, limits, batch.deadline)
    outcomes, extras = policy.decide(envelope, work.routed)
    settle.draft_plan(work, outcomes, extras, limits)


def _send_outputs(batch: Batch, works: Sequence[Work]) -> None:
    pipeline = batch.pipeline
    messages = [
        message
        for number, work in enumerate(works)
        if work.running
        for message in settle.outgoing(work, pipeline.targets, owner=number)
    ]
    if not messages:
        return
    for number in send_all(
        pipeline.clients.sqs, messages, max_request_bytes=pipeline.limits.max_message_bytes
    ):
        works[number].fail("output messages could not be sent")


def _each(pool: ThreadPoolExecutor, works: Sequence[Work], step: Callable[[Work], None]) -> None:
    """Run `step` for every running work, concurrently; an I/O error fails that work alone."""
    running = [w for w in works if w.running]
    if len(running) == 1:
        guarded(step, running[0])
        return
    for _ in pool.map(lambda w: guarded(step, w), running):
        pass


def _finish(batch: Batch, works: Sequence[Work]) -> None:
    """Turn leases into done markers (or release them), count, and list the failed messages."""
    result, leases = batch.result, batch.leases
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
    failed_ids.update(d.envelope_id for d in batch.deliveries if d.message_id in reported)
    for work in succeeded:
        settle.count_outcomes(work, result)
    for delivery in batch.deliveries:
        if delivery.envelope_id in failed_ids and delivery.message_id not in reported:
            result.failed_message_ids.append(delivery.message_id)
    settle.report_poison(succeeded, batch.pipeline.router)
