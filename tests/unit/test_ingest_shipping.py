"""Shipments of parts (publish, send, acknowledge) on the pool: bounded in flight, every one
finished before a failure is raised, in line without a pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.ingest.batch import Shipping
from runtime.ingest.parallel import WorkerPool


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(8) as workers:
        yield workers


class Recorder:
    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.fail_on = fail_on or set()
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.finished: list[int] = []

    def __call__(self, group: Any) -> None:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(0.01)
        with self.lock:
            self.running -= 1
            self.finished.append(group)
        if group in self.fail_on:
            raise RuntimeError(f"shipment {group} failed")


def test_at_most_the_limit_is_in_flight(pool: WorkerPool) -> None:
    ship = Recorder()
    shipping = Shipping(pool, limit=3)
    for group in range(12):
        shipping.submit(ship, group)  # type: ignore[arg-type]
    shipping.wait_all()
    assert sorted(ship.finished) == list(range(12))
    assert 2 <= ship.most_running <= 3


def test_the_first_failure_is_raised_after_every_shipment_ended(pool: WorkerPool) -> None:
    ship = Recorder(fail_on={2, 4})
    shipping = Shipping(pool, limit=8)
    for group in range(6):
        shipping.submit(ship, group)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="shipment 2 failed"):
        shipping.wait_all()
    assert sorted(ship.finished) == list(range(6)), "nothing may still be sending when a run fails"


def test_without_a_pool_shipments_run_in_line_in_order() -> None:
    ship = Recorder(fail_on={1})
    shipping = Shipping(None, limit=8)
    shipping.submit(ship, 0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="shipment 1 failed"):
        shipping.submit(ship, 1)  # type: ignore[arg-type]
    assert ship.finished == [0, 1] and ship.most_running == 1
