"""The checker's core: hand back batches nobody is working on, halt those past the resend
horizon, and report the backlog (docs/ingest.md#5-resume).

A batch comes back when its lease expired or was released (Redis), or when it sits in
claimed/ unknown to Redis (Redis lost it) and has been quiet for longer than a lease.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from runtime import metric_names
from runtime.ingest.coord import new_owner_token
from runtime.ingest.fs import is_temporary_name
from runtime.ingest.layout import REASON_SUFFIX, batch_time
from runtime.ingest.loader import halt_batch
from runtime.ingest.model import Ingest
from runtime.observability import logger, metrics


@dataclass
class CheckerResult:
    requeued_expired: list[str] = field(default_factory=list)
    requeued_unknown: list[str] = field(default_factory=list)
    halted: list[str] = field(default_factory=list)
    inbox_depth: int = 0
    oldest_file_age_s: float = 0.0
    batches_in_flight: int = 0
    resumable: int = 0
    halted_batches: int = 0
    rejected_files: int = 0
    # Of the oldest inbox files: those whose mtime is ahead of the clock and those that cannot
    # be stat'ed — files that would never settle or load (the loader gives them a fate).
    future_mtime_files: int = 0
    unreadable_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checker(ingest: Ingest) -> CheckerResult:
    ingest.ensure_layout()
    result = CheckerResult(requeued_expired=ingest.coord.requeue_expired())
    _scan_claimed(ingest, result)
    _measure_backlog(ingest, result)
    _emit_metrics(result)
    if result.requeued_expired or result.requeued_unknown or result.halted:
        logger.info("checker handed batches back", extra=result.as_dict())
    return result


def _scan_claimed(ingest: Ingest, result: CheckerResult) -> None:
    fs, layout, settings = ingest.fs, ingest.layout, ingest.settings
    batches = sorted(n for n in fs.listdir(layout.claimed_root) if not n.startswith("."))
    known = ingest.coord.known(batches)
    now = time.time()
    for batch in batches:
        claimed_at = batch_time(batch)
        if claimed_at is not None and now - claimed_at.timestamp() > settings.resend_horizon_s:
            _halt_past_horizon(ingest, batch, result)
        elif (
            batch not in known
            and now - _last_activity(ingest, batch) > settings.lease_s
            and ingest.coord.make_resumable(batch)
        ):
            result.requeued_unknown.append(batch)


def _last_activity(ingest: Ingest, batch: str) -> float:
    """Newest change in the batch: a rename into it or a part published (directory mtimes)."""
    newest = 0
    for path in (ingest.layout.claimed(batch), ingest.layout.parts(batch)):
        try:
            newest = max(newest, ingest.fs.stat(path).mtime_ns)
        except FileNotFoundError:
            continue
    return newest / 1e9


def _halt_past_horizon(ingest: Ingest, batch: str, result: CheckerResult) -> None:
    """Take the batch's lease like a loader would (never from a live owner), then halt it."""
    token = new_owner_token()
    ingest.coord.make_resumable(batch)
    if ingest.coord.take_resumable(token, ingest.settings.lease_s, batch) is None:
        return
    halt_batch(ingest, batch, token, "past_resend_horizon", "claimed longer ago than resend_horizon_s")
    result.halted.append(batch)


def _measure_backlog(ingest: Ingest, result: CheckerResult) -> None:
    fs, layout = ingest.fs, ingest.layout
    depth = 0

    def loadable() -> Iterator[str]:
        nonlocal depth
        for entry in fs.iter_dir(layout.inbox):  # streamed: the backlog may be a million files
            if not entry.is_dir and not is_temporary_name(entry.name):
                depth += 1
                yield entry.name

    oldest = heapq.nsmallest(OLDEST_FILES_MEASURED, loadable())  # names are timestamps: oldest first
    result.inbox_depth = depth
    for name in oldest:
        _measure_file(ingest, name, result)
    counts = ingest.coord.counts()
    result.batches_in_flight = counts["in_flight"]
    result.resumable = counts["resumable"]
    result.halted_batches = len([n for n in fs.listdir(layout.halted_root) if not n.startswith(".")])
    for batch in fs.listdir(layout.rejected_root):
        entries = fs.listdir(f"{layout.rejected_root}/{batch}")
        result.rejected_files += sum(
            1 for n in entries if not n.endswith(REASON_SUFFIX) and not is_temporary_name(n)
        )


# How many of the oldest inbox names the checker stats (a deep backlog is not stat'ed whole).
OLDEST_FILES_MEASURED = 32


def _measure_file(ingest: Ingest, name: str, result: CheckerResult) -> None:
    """A file's honest age: since the older of its mtime and its inode change (a writer can
    set a future mtime, not a ctime), so a file that never settles ages like any other."""
    now_ns = time.time_ns()
    try:
        st = ingest.fs.stat(ingest.layout.inbox_file(name))
    except FileNotFoundError:
        return
    except OSError:
        result.unreadable_files += 1
        return
    if st.mtime_ns - now_ns > ingest.settings.max_clock_skew_s * 1e9:
        result.future_mtime_files += 1
    age = (now_ns - min(st.mtime_ns, st.ctime_ns or st.mtime_ns)) / 1e9
    result.oldest_file_age_s = max(result.oldest_file_age_s, age)


def _emit_metrics(result: CheckerResult) -> None:
    for name, unit, value in (
        (metric_names.INBOX_DEPTH, MetricUnit.Count, result.inbox_depth),
        (metric_names.HALTED_BATCHES, MetricUnit.Count, len(result.halted)),
        (metric_names.OLDEST_FILE_AGE_SECONDS, MetricUnit.Seconds, result.oldest_file_age_s),
        (metric_names.BATCHES_IN_FLIGHT, MetricUnit.Count, result.batches_in_flight),
        (metric_names.RESUMABLE_BATCHES, MetricUnit.Count, result.resumable),
        (metric_names.HALTED_BATCHES_TOTAL, MetricUnit.Count, result.halted_batches),
        (metric_names.REJECTED_FILES_TOTAL, MetricUnit.Count, result.rejected_files),
        (
            metric_names.STUCK_INBOX_FILES,
            MetricUnit.Count,
            result.future_mtime_files + result.unreadable_files,
        ),
    ):
        metrics.add_metric(name=name, unit=unit, value=value)
