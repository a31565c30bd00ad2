"""Settling an envelope: the phases both routers run alike, around their own routing policy.

- **ledger first** (`recall_plans`): one consistent read for the leased envelopes; a stored
  plan is adopted (replayed as recorded, the router not called);
- **plan** (`plan_quarantine`, `draft_plan`, then `store_plan`): the outcome plan, bodies
  included, is created in the ledger (create-only); a plan written meanwhile by another run
  governs instead, and when it differs from this run's the delivery is also dead-lettered
  with reason `plan_mismatch` (both hashes);
- **send** (`outgoing`): next/retry envelopes to the state queue, poison to the DLQ;
- **sink** (`write_results`): the done items, one create-only object per envelope in the
  result store;
- **complete**: the ledger mark, only for plans that sent messages;
- **report** (`count_outcomes`, `report_poison`): counters, and the router's `on_poisoned` hook.

Every phase after the plan is repeatable under the same ids: a redelivery replays the plan.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.errors import SluiceError
from runtime.observability import logger
from runtime.pipeline.batch import ENVELOPE_ERRORS, BatchResult, Delivery, Status, Targets, Work, guarded
from runtime.pipeline.ledger import Ledger
from runtime.pipeline.plan import (
    OUTCOME_NAMES,
    POISONED,
    Failure,
    ItemExtras,
    OutputKind,
    Plan,
    notice_output,
    quarantine_outputs,
)
from runtime.pipeline.result_store import ResultStore
from runtime.pipeline.routing import RouteLimits
from runtime.pipeline.sender import Outgoing
from runtime.pipeline.state import Router, copy_state, routing_item

PLAN_MISMATCH = "plan_mismatch"


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


def plan_quarantine(work: Work, limits: RouteLimits) -> bool:
    """A delivery that cannot be read goes to the DLQ whole, without calling the router; True
    when `work` is such a delivery (its plan is drafted)."""
    delivery = work.delivery
    if delivery.quarantine is None:
        return False
    work.outputs = quarantine_outputs(
        delivery.message_id,
        delivery.body.encode(),
        delivery.quarantine,
        source=limits.source,
        group=_group(delivery, limits),
    )
    work.plan = Plan(outcomes=POISONED, outputs=tuple(work.outputs))
    return True


def draft_plan(work: Work, outcomes: str, extras: dict[int, ItemExtras], limits: RouteLimits) -> bool:
    """The plan this run would write for the routed envelope; False (the work failed) when its
    outputs cannot be built (e.g. a retry or poison message over the size limit)."""
    envelope, routed = work.delivery.envelope, work.routed
    assert envelope is not None and routed is not None
    try:
        work.outputs = limits.build_outputs(envelope, outcomes, routed.next_items, extras)
    except SluiceError as exc:
        work.fail("outputs could not be built", exc)
        return False
    work.plan = Plan(outcomes=outcomes, outputs=tuple(work.outputs))
    return True


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


def outgoing(work: Work, targets: Targets, *, owner: int, fifo_group: str | None = None) -> list[Outgoing]:
    """The messages `work` sends: poison to the DLQ, the rest to the next queue. On a FIFO
    queue (`fifo_group` set) each goes in its output's group, else in `fifo_group`."""
    return [
        Outgoing(
            queue_url=targets.dlq_url if output.kind is OutputKind.POISONED else targets.next_url,
            output=output,
            owner=owner,
            group_id=None if fifo_group is None else (output.group or fifo_group),
        )
        for output in work.outputs
        if output.kind is not OutputKind.SINK
    ]


def write_results(work: Work, store: ResultStore) -> None:
    for output in work.outputs:
        if output.kind is OutputKind.SINK:
            store.write(work.delivery.envelope_id, output.body)


def complete(work: Work, ledger: Ledger, result: BatchResult) -> None:
    assert work.plan is not None
    if work.plan.needs_complete_mark and not work.plan.complete:
        ledger.mark_complete(work.delivery.envelope_id)
        result.ledger_writes += 1
    work.status = Status.SUCCEEDED


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
