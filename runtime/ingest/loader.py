"""The loader's core: loop over batches until the deadline margin or until nothing is
claimable — resumable batches first, then new claims — and report what it did.

`run_loader` is the one entry point (the Lambda handler and the benchmarks call it); every
client it uses is injected through `Ingest`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from aws_lambda_powertools.metrics import MetricUnit

from runtime.errors import LeaseLost, TransientError
from runtime.ingest.batch import BatchRun, OutOfTime
from runtime.ingest.claim import (
    InboxListing,
    claim_selected,
    ensure_layout,
    load_header,
    publish_header,
    select_settled,
)
from runtime.ingest.coord import Taken, new_owner_token
from runtime.ingest.errors import BatchMustHalt
from runtime.ingest.fs import is_temporary_name
from runtime.ingest.layout import batch_time, new_batch_id
from runtime.ingest.model import Ingest, PartRecord
from runtime.ingest.moves import move_directory
from runtime.ingest.parallel import WorkerPool
from runtime.ingest.sender import SendRejected
from runtime.observability import logger, metrics

RemainingSeconds = Callable[[], float]


@dataclass(frozen=True)
class LoaderResult:
    counters: dict[str, int]
    efs_read_ops: int
    efs_write_ops: int
    sqs_calls: int
    billing_units: int
    elapsed_s: float

    @property
    def efs_ops(self) -> int:
        return self.efs_read_ops + self.efs_write_ops

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counters,
            "efs_read_ops": self.efs_read_ops,
            "efs_write_ops": self.efs_write_ops,
            "efs_ops": self.efs_ops,
            "sqs_calls": self.sqs_calls,
            "billing_units": self.billing_units,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def run_loader(ingest: Ingest, remaining_s: RemainingSeconds) -> LoaderResult:
    """Load until `remaining_s()` falls to the deadline margin or nothing is claimable.
    Every thread it starts is joined before it returns."""
    started = time.monotonic()
    ops_before = (ingest.fs.ops.reads, ingest.fs.ops.writes)
    calls_before, units_before = ingest.sink.calls, ingest.sink.billing_units
    ensure_layout(ingest)
    threads = ingest.settings.read_threads
    pool = WorkerPool(threads) if threads > 1 else None
    listing = InboxListing(ingest)
    try:
        while remaining_s() > ingest.settings.deadline_margin_s and _one_batch(
            ingest, pool, listing, remaining_s
        ):
            pass
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    result = LoaderResult(
        counters=ingest.counters.as_dict(),
        efs_read_ops=ingest.fs.ops.reads - ops_before[0],
        efs_write_ops=ingest.fs.ops.writes - ops_before[1],
        sqs_calls=ingest.sink.calls - calls_before,
        billing_units=ingest.sink.billing_units - units_before,
        elapsed_s=time.monotonic() - started,
    )
    _emit_metrics(result)
    return result


def _emit_metrics(result: LoaderResult) -> None:
    c = result.counters
    for name, value in (
        ("RecordsSent", c["records"]),
        ("FilesLoaded", c["files"]),
        ("RejectedFiles", c["rejected_files"]),
        ("HaltedBatches", c["batches_halted"]),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _one_batch(
    ingest: Ingest, pool: WorkerPool | None, listing: InboxListing, remaining_s: RemainingSeconds
) -> bool:
    """Work on one batch. False when the loop should stop (nothing claimable, out of time,
    a transient failure)."""
    token = new_owner_token()
    taken = ingest.coord.take_resumable(token, ingest.settings.lease_s)
    if taken is not None:
        return _guarded(ingest, taken.batch, token, lambda: resume(ingest, taken, token, pool, remaining_s))
    selection = select_settled(ingest, pool, listing)
    if not selection:
        return False
    batch = new_batch_id()

    def claim_and_run() -> None:
        header = claim_selected(ingest, batch, token, pool, selection)
        BatchRun(ingest, header, token, pool, remaining_s, preread=selection.preread_for(header)).run()

    return _guarded(ingest, batch, token, claim_and_run)


def _guarded(ingest: Ingest, batch: str, token: str, work: Callable[[], None]) -> bool:
    """Map each way a run can end to its fate, in one place."""
    counters = ingest.counters
    try:
        work()
    except OutOfTime:
        _release(ingest, batch, token)
        return False
    except LeaseLost as lost:
        # Someone else owns the batch now (or Redis lost it): stop touching it, go on.
        counters.add("leases_lost")
        logger.warning("lease lost", extra={"batch": batch, "detail": str(lost)})
    except BatchMustHalt as halt:
        halt_batch(ingest, batch, token, halt.reason, halt.detail)
    except (TransientError, SendRejected, OSError, redis.RedisError) as failure:
        # Nothing past the failure was sent or skipped; the batch resumes where it stopped.
        counters.add("transient_failures")
        logger.warning("batch released after a failure", extra={"batch": batch, "detail": str(failure)})
        _release(ingest, batch, token)
        return False
    except Exception:
        # A bug, not a death: hand the batch back (clearing any crash-isolation cursor, so no
        # innocent file is blamed) and fail the invocation loudly. Only a run that really
        # dies (kill, out of memory, a hang until the timeout) counts towards crash isolation.
        _release(ingest, batch, token)
        raise
    return True


def _release(ingest: Ingest, batch: str, token: str) -> None:
    try:
        ingest.coord.release(batch, token)
    except (LeaseLost, redis.RedisError):
        ingest.counters.add("leases_lost")  # the lease expires instead; the checker hands it back
        return
    ingest.counters.add("batches_released")


def halt_batch(ingest: Ingest, batch: str, token: str, reason: str, detail: str) -> None:
    """claimed/<batch> -> halted/<batch>, only right after a successful fenced check."""
    try:
        ingest.coord.renew(batch, token, ingest.settings.lease_s)
    except LeaseLost:
        ingest.counters.add("leases_lost")
        return
    fs, layout = ingest.fs, ingest.layout
    if fs.exists(layout.claimed(batch)):
        note = orjson.dumps({"reason": reason, "detail": detail, "batch": batch, "at": time.time()})
        fs.write_once(f"{layout.claimed(batch)}/.halted.json", note)
        move_directory(fs, layout.claimed(batch), layout.halted_root, batch)
    ingest.coord.halt(batch, token)
    ingest.counters.add("batches_halted")
    logger.error("batch halted", extra={"batch": batch, "reason": reason, "detail": detail})


def load_recorded(ingest: Ingest, batch: str) -> dict[int, PartRecord]:
    directory = ingest.layout.parts(batch)
    try:
        names = ingest.fs.listdir(directory)
    except FileNotFoundError:
        return {}
    recorded = {}
    for name in names:
        if is_temporary_name(name) or not name.endswith(".json"):
            continue
        record = PartRecord.from_json(ingest.fs.read_all(f"{directory}/{name}"))
        recorded[record.k] = record
    return recorded


def resume(
    ingest: Ingest, taken: Taken, token: str, pool: WorkerPool | None, remaining_s: RemainingSeconds
) -> None:
    """Take over a batch: tidy it if committed, halt it past the resend horizon, else
    recompute its parts against their records and send what is not acknowledged."""
    batch, fs, layout, coord = taken.batch, ingest.fs, ingest.layout, ingest.coord
    ingest.counters.add("batches_resumed")
    if fs.exists(layout.processed(batch)):
        coord.commit(batch, token)  # committed on EFS: only Redis needed tidying
        ingest.counters.add("batches_committed")
        return
    if not fs.exists(layout.claimed(batch)):
        coord.drop(batch, token)
        return
    claimed_at = batch_time(batch)
    if claimed_at is not None and time.time() - claimed_at.timestamp() > ingest.settings.resend_horizon_s:
        raise BatchMustHalt("past_resend_horizon", "downstream may no longer recognise a re-send")
    header = load_header(ingest, batch) or publish_header(ingest, batch, pool, None)
    run = BatchRun(
        ingest,
        header,
        token,
        pool,
        remaining_s,
        recorded=load_recorded(ingest, batch),
        acked=coord.acked(batch),
        crash_isolation=taken.runs - 1 >= ingest.settings.max_crash_runs,
    )
    if taken.cursor is not None:
        run.quarantine_crash_file(taken.cursor)
    run.run()
