"""The loader's core: loop over batches until the deadline margin or until nothing is
claimable — resumable batches first, then new claims — and report what it did.

`run_loader` is the one entry point (the Lambda handler and the benchmarks call it); every
client it uses is injected through `Ingest`. With `ingest.processes` above 1 it loads one share
of the inbox itself and the others in helper processes (`processes.py`), each building its own
clients with the picklable factory the caller passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from aws_lambda_powertools.metrics import MetricUnit

from runtime import metric_names
from runtime.errors import ConfigError, EnvironmentFailure, LeaseLost, TransientError
from runtime.ingest.batch import BatchRun, OutOfTime
from runtime.ingest.claim import claim_selected
from runtime.ingest.coord import Taken, new_owner_token
from runtime.ingest.errors import BatchFailed, BatchMustHalt
from runtime.ingest.failures import SendRejected, os_failure
from runtime.ingest.fs import is_temporary_name
from runtime.ingest.header import load_header, publish_header
from runtime.ingest.layout import batch_time, new_batch_id
from runtime.ingest.model import Ingest, PartRecord
from runtime.ingest.moves import move_directory
from runtime.ingest.parallel import WorkerPool
from runtime.ingest.processes import EVERYTHING, Outcomes, Share, run_shares
from runtime.ingest.readahead import Selections
from runtime.ingest.sender import check_part_sender
from runtime.observability import logger, metrics

RemainingSeconds = Callable[[], float]
# Builds a helper process's `Ingest` (its own clients); pickled to the helper, so a module-level
# function or a picklable object.
IngestFactory = Callable[[], Ingest]


@dataclass(frozen=True)
class LoaderResult:
    counters: dict[str, int]
    efs_read_ops: int
    efs_write_ops: int
    sqs_calls: int
    billing_units: int
    elapsed_s: float
    files_per_process: tuple[int, ...] = ()  # filled in when an invocation's results combine
    environment_error: str = ""  # why the run stopped, when the environment refused it

    @classmethod
    def combined(cls, results: list[LoaderResult], elapsed_s: float) -> LoaderResult:
        """One invocation's result from its processes' results."""
        counters: dict[str, int] = {}
        for result in results:
            for name, value in result.counters.items():
                counters[name] = counters.get(name, 0) + value
        return cls(
            counters=counters,
            efs_read_ops=sum(r.efs_read_ops for r in results),
            efs_write_ops=sum(r.efs_write_ops for r in results),
            sqs_calls=sum(r.sqs_calls for r in results),
            billing_units=sum(r.billing_units for r in results),
            elapsed_s=elapsed_s,
            files_per_process=tuple(r.counters.get("files", 0) for r in results),
            environment_error=next((r.environment_error for r in results if r.environment_error), ""),
        )

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
            "files_per_process": list(self.files_per_process),
        }


def run_loader(
    ingest: Ingest, remaining_s: RemainingSeconds, *, helper_ingest: IngestFactory | None = None
) -> LoaderResult:
    """Load until `remaining_s()` falls to the deadline margin or nothing is claimable.
    With `ingest.settings.processes` above 1, `helper_ingest` (picklable) builds each helper
    process's `Ingest`. Every thread and process it starts is gone before it returns."""
    processes = ingest.settings.processes
    started = time.monotonic()
    try:
        check_part_sender(ingest.sender, ingest.max_message_bytes)  # once per run, before any claim
    except EnvironmentFailure as refused:
        _emit_environment_error(str(refused))
        raise
    if processes == 1:
        outcomes: Outcomes[LoaderResult] = Outcomes([load_share(ingest, remaining_s, EVERYTHING)], [])
    elif helper_ingest is None:
        raise ConfigError(f"ingest.processes is {processes}: say how helper processes build their clients")
    else:
        deadline = started + remaining_s()
        outcomes = run_shares(
            processes,
            lambda share: _own_share(ingest, remaining_s, share),
            HelperLoader(helper_ingest, deadline),
            # Helpers stop at the deadline margin like this process; past half of it they
            # are killed, so the invocation still ends in time (their leases expire).
            deadline - ingest.settings.deadline_margin_s / 2,
        )
    result = LoaderResult.combined(outcomes.results, time.monotonic() - started)
    _emit_metrics(result)  # what did get done (a halted batch alarms) before any helper failure
    if result.environment_error:
        _emit_environment_error(result.environment_error)
    outcomes.raise_failures()
    if result.environment_error:
        raise EnvironmentFailure(result.environment_error)
    return result


def _emit_environment_error(detail: str) -> None:
    """One clear error and the metric its alarm watches; the run stops, no batch is charged."""
    metrics.add_metric(name=metric_names.ENVIRONMENT_ERRORS, unit=MetricUnit.Count, value=1)
    logger.error("the environment refuses the loader; run stopped", extra={"detail": detail})


def _own_share(ingest: Ingest, remaining_s: RemainingSeconds, share: Share) -> LoaderResult:
    try:
        return load_share(ingest, remaining_s, share)
    except Exception:
        # Said now: the helpers are collected (up to the deadline) before this is raised.
        logger.exception("loader failed; waiting for its helper processes")
        raise


@dataclass(frozen=True)
class HelperLoader:
    """A helper process's loader (pickled to it): its own clients, the invocation's deadline
    (CLOCK_MONOTONIC is one clock for every process on the machine)."""

    build: IngestFactory
    deadline: float

    def __call__(self, share: Share) -> LoaderResult:
        logger.append_keys(loader_share=f"{share.index}/{share.count}")
        return load_share(self.build(), lambda: self.deadline - time.monotonic(), share)


def load_share(ingest: Ingest, remaining_s: RemainingSeconds, share: Share) -> LoaderResult:
    """One process's loop over the inbox names in `share`."""
    started = time.monotonic()
    ops_before = (ingest.fs.ops.reads, ingest.fs.ops.writes)
    calls_before, units_before = ingest.sender.calls, ingest.sender.billing_units
    ingest.ensure_layout()
    threads = ingest.settings.read_threads
    pool = WorkerPool(threads) if threads > 1 else None
    selections = Selections(ingest, pool, share, remaining_s)
    try:
        while remaining_s() > ingest.settings.deadline_margin_s and _one_batch(
            ingest, pool, selections, remaining_s
        ):
            pass
    finally:
        selections.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return LoaderResult(
        counters=ingest.counters.as_dict(),
        efs_read_ops=ingest.fs.ops.reads - ops_before[0],
        efs_write_ops=ingest.fs.ops.writes - ops_before[1],
        sqs_calls=ingest.sender.calls - calls_before,
        billing_units=ingest.sender.billing_units - units_before,
        elapsed_s=time.monotonic() - started,
        environment_error=ingest.environment_error,
    )


def _emit_metrics(result: LoaderResult) -> None:
    c = result.counters
    for name, value in (
        (metric_names.RECORDS_SENT, c["records"]),
        (metric_names.FILES_LOADED, c["files"]),
        (metric_names.REJECTED_FILES, c["rejected_files"]),
        (metric_names.HALTED_BATCHES, c["batches_halted"]),
        (metric_names.FAILED_BATCH_RUNS, c["batch_failures"]),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _one_batch(
    ingest: Ingest, pool: WorkerPool | None, selections: Selections, remaining_s: RemainingSeconds
) -> bool:
    """Work on one batch. False when the loop should stop (nothing claimable, out of time,
    a transient failure)."""
    token = new_owner_token()
    taken = ingest.coord.take_resumable(token, ingest.settings.lease_s)
    if taken is not None:
        work = lambda: resume(ingest, taken, token, pool, remaining_s)  # noqa: E731
        return _guarded(ingest, taken.batch, token, taken.runs, work)
    selection = selections.next()
    if not selection:
        return False
    batch = new_batch_id()

    def claim_and_run() -> None:
        claimed = claim_selected(ingest, batch, token, pool, selection)
        header = publish_header(ingest, batch, pool, selection.settled, claimed)
        selections.prepare_next()
        BatchRun(ingest, header, token, pool, remaining_s, preread=selection.preread_for(header)).run()

    return _guarded(ingest, batch, token, 1, claim_and_run)


def _guarded(ingest: Ingest, batch: str, token: str, runs: int, work: Callable[[], None]) -> bool:
    """Map each way a run can end to its fate, in one place
    (docs/bad-input.md#three-classes-of-failure: transient, environment-wide,
    batch-specific). False when the loop should stop."""
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
    except Exception as failure:  # noqa: BLE001 - every failure is classified below, none dropped
        return _failed(ingest, batch, token, runs, _classified(failure))
    return True


def _classified(failure: Exception) -> Exception:
    """Transient / environment-wide as typed errors; anything else is this batch's."""
    if isinstance(failure, OSError) and not isinstance(failure, FileNotFoundError):
        return os_failure(failure) or failure
    return failure


def _failed(ingest: Ingest, batch: str, token: str, runs: int, failure: Exception) -> bool:
    counters = ingest.counters
    if isinstance(failure, TransientError | redis.RedisError):
        # Nothing past the failure was sent or skipped; the batch resumes where it stopped.
        counters.add("transient_failures")
        logger.warning(
            "batch released after a transient failure", extra={"batch": batch, "detail": str(failure)}
        )
        _release(ingest, batch, token)
        return False
    if isinstance(failure, EnvironmentFailure):
        counters.add("environment_errors")
        ingest.environment_error = str(failure)
        _release(ingest, batch, token)  # never charged: the batch is not at fault
        return False
    # This batch's: counted as a run, handed back with a backoff; the loader claims on.
    counters.add("batch_failures")
    code = failure.code if isinstance(failure, BatchFailed) else _failure_code(failure)
    detail = f"{type(failure).__name__}: {failure}"
    if runs - 1 >= ingest.settings.max_crash_runs:  # a crash-isolation run: nothing to isolate
        halt_batch(ingest, batch, token, code, detail)
        return True
    logger.exception("batch run failed; handed back with a backoff", extra={"batch": batch, "runs": runs})
    backoff = min(ingest.settings.failure_backoff_s * 2 ** (runs - 1), MAX_FAILURE_BACKOFF_S)
    try:
        ingest.coord.fail(batch, token, backoff)
    except (LeaseLost, redis.RedisError):
        counters.add("leases_lost")  # the lease expires instead; the run still counts
    return True


# A failing batch is retried at least this often, however many runs it has failed.
MAX_FAILURE_BACKOFF_S = 3600.0
SEND_REJECTED = "send_rejected"
BATCH_FAILED = "batch_failed"


def _failure_code(failure: Exception) -> str:
    return SEND_REJECTED if isinstance(failure, SendRejected) else BATCH_FAILED


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
