"""Read-ahead: the next batch's selection, made while this batch runs (docs/ingest.md#1-settle)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from runtime.ingest.model import Ingest
from runtime.ingest.parallel import WorkerPool
from runtime.ingest.processes import Share
from runtime.ingest.selection import InboxListing, Selection, select_settled

# A selection is made ahead only while this many deadline margins remain.
AHEAD_MIN_MARGINS = 2


class Selections:
    """The selections of one process's loop, from one listing of the inbox names in its
    `share`. Settle checks one batch ahead, on EFS: once a batch is claimed, the next selection is
    made on a background thread while this batch is parsed, sent and committed, so the settle
    checks' round trips overlap the commit's. On a local cache (operations that do not wait)
    it would only contend for the GIL with the parser: selections are made in line there.

    A selection made ahead may be stale by the time it is claimed; the claim already copes
    (a file taken meanwhile vanishes, one that changed goes back to the inbox). An empty one
    is made again before the loop is told there is nothing to claim: files settle meanwhile."""

    def __init__(
        self,
        ingest: Ingest,
        pool: WorkerPool | None,
        share: Share,
        remaining_s: Callable[[], float],
    ) -> None:
        self._ingest, self._pool, self._listing = ingest, pool, InboxListing(ingest, share)
        self._remaining_s = remaining_s
        self._thread: ThreadPoolExecutor | None = None
        self._ahead: Future[Selection] | None = None

    def next(self) -> Selection:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            selection = ahead.result()
            if selection:
                return selection
        return select_settled(self._ingest, self._pool, self._listing)

    def prepare_next(self) -> None:
        pool = self._pool
        if self._ahead is not None or pool is None or not pool.waits_on_io:
            return
        if self._remaining_s() < AHEAD_MIN_MARGINS * self._ingest.settings.deadline_margin_s:
            return  # near the deadline a listing made ahead could outlast the invocation
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="ingest-select")
        self._ahead = self._thread.submit(select_settled, self._ingest, pool, self._listing)
        self._ingest.counters.add("selections_ahead")

    def close(self) -> None:
        """Wait for a selection still being made (it only read) and let it go."""
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
