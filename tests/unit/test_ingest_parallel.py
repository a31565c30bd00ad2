"""The worker pool's ordered map: threads for slow (EFS-like) operations, inline for fast ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from runtime.ingest.parallel import WorkerPool, parallel_map


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(8) as workers:
        yield workers


def test_slow_operations_run_on_threads_in_order(pool: WorkerPool) -> None:
    def slow(i: int) -> tuple[int, str]:
        time.sleep(0.002)  # an EFS round trip
        return i, threading.current_thread().name

    results = list(parallel_map(pool, slow, list(range(100))))
    assert [i for i, _ in results] == list(range(100))
    assert len({name for _, name in results if name.startswith("ingest")}) >= 4
    assert pool.waits_on_io, "the pool remembers that its operations wait (the loader selects ahead)"


def test_fast_operations_stay_inline(pool: WorkerPool) -> None:
    results = list(parallel_map(pool, lambda i: (i, threading.current_thread().name), list(range(100))))
    assert [i for i, _ in results] == list(range(100))
    assert {name for _, name in results} == {threading.current_thread().name}
    assert not pool.waits_on_io


def test_an_error_surfaces_in_order_and_cancels_the_rest(pool: WorkerPool) -> None:
    done: list[int] = []

    def fails_at_seven(i: int) -> int:
        time.sleep(0.002)
        if i == 7:
            raise OSError("EIO")
        done.append(i)
        return i

    seen = []
    with pytest.raises(OSError):
        for value in parallel_map(pool, fails_at_seven, list(range(400))):
            seen.append(value)
    assert seen == list(range(7))
    pool.shutdown(wait=True)
    assert len(done) < 399, "work not yet started was cancelled"
