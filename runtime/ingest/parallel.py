"""A thread pool for EFS operations and an ordered, chunked map over it.

On EFS every operation is a network round trip (≈1 ms to read, ≈2.7 ms to change), so a
loader keeps many in flight; on a warm local cache a future per file would cost more than the
syscall, so files go to threads in chunks: small enough that every thread gets work, large
enough to keep the per-future overhead low.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_CHUNK = 32
MIN_CHUNK = 4
# An operation faster than this is a local cache hit, not a network round trip (EFS: ≥ 1 ms).
INLINE_BELOW_S = 0.0002


class WorkerPool(ThreadPoolExecutor):
    """A ThreadPoolExecutor that says how many threads it has, and whether the operations it
    last probed waited on the network (EFS) rather than hit a local cache."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="ingest")
        self.workers = workers
        self.waits_on_io = False


def _chunk_size(items: int, workers: int) -> int:
    return max(MIN_CHUNK, min(MAX_CHUNK, -(-items // workers)))


def parallel_map(pool: WorkerPool | None, fn: Callable[[T], R], items: list[T]) -> Iterator[R]:
    """fn over items, results in order; chunks run on `pool` (inline when there is none).

    The work is submitted when this is called, not when the results are first asked for,
    so a caller can start the next window before consuming this one. Work not yet started
    is cancelled if the consumer stops early.
    """
    if pool is None or len(items) <= MIN_CHUNK:
        return map(fn, items)
    # Probe: when the first item runs faster than threads could help (a warm local cache, not
    # EFS), the rest run inline too; handing microsecond syscalls to threads only adds GIL
    # hand-offs.
    started = time.perf_counter()
    head = [fn(items[0])]
    pool.waits_on_io = time.perf_counter() - started >= INLINE_BELOW_S
    if not pool.waits_on_io:
        return itertools.chain(head, map(fn, items[1:]))
    rest = items[1:]
    size = _chunk_size(len(rest), pool.workers)
    chunks = [rest[i : i + size] for i in range(0, len(rest), size)]
    futures = [pool.submit(_run_chunk, fn, c) for c in chunks]
    return _results(head, futures)


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> tuple[list[R], Exception | None]:
    """Results up to the first failure, and the failure: the consumer sees every result
    before it, in order, then the error, exactly as if the map had run inline."""
    results: list[R] = []
    for item in chunk:
        try:
            results.append(fn(item))
        except Exception as failure:  # noqa: BLE001 - carried to the consumer and re-raised there
            return results, failure
    return results, None


def _results(head: list[R], futures: list[Future[tuple[list[R], Exception | None]]]) -> Iterator[R]:
    yield from head
    try:
        for future in futures:
            results, failure = future.result()
            yield from results
            if failure is not None:
                raise failure
    finally:
        for future in futures:
            future.cancel()
