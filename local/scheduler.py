"""EventBridge schedules, locally: each scheduled function is invoked on its rate with a
`Scheduled Event`, each invocation on its own thread (Lambda runs overlapping invocations
concurrently), up to a concurrency limit past which a tick is throttled, as a function with
reserved concurrency would be.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from local.functions import LOCAL_ACCOUNT, LOCAL_REGION, LocalFunction

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86_400, "ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_interval(expression: str) -> float:
    """Seconds between ticks of an EventBridge `rate(...)` expression or a local duration
    (`500ms`, `2s`, `1m`). Cron expressions have no fixed interval: override them locally."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        return int(rate.group(1)) * _UNIT_S[rate.group(2).rstrip("s")]
    duration = _DURATION.match(text)
    if duration:
        seconds = float(duration.group(1)) * _UNIT_S[duration.group(2)]
        if seconds > 0:
            return seconds
    raise ValueError(f"{expression!r} is neither rate(N minute|hour|day[s]) nor a duration like 2s or 500ms")


def scheduled_event(rule_name: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": LOCAL_REGION,
        "resources": [f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT}:rule/{rule_name}"],
        "detail": {},
    }


@dataclass
class Schedule:
    function: LocalFunction
    every_s: float
    max_concurrency: int = 1
    running: int = 0
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)


class Scheduler:
    """Ticks every schedule from its own thread; the first tick fires at start."""

    def __init__(self, schedules: Iterable[Schedule]) -> None:
        self.schedules = list(schedules)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._tickers: list[threading.Thread] = []

    def start(self) -> None:
        for schedule in self.schedules:
            ticker = threading.Thread(
                target=self._tick_forever,
                args=(schedule,),
                name=f"schedule-{schedule.function.name}",
                daemon=True,
            )
            ticker.start()
            self._tickers.append(ticker)

    def _tick_forever(self, schedule: Schedule) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.fire(schedule)
            next_tick += schedule.every_s
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def fire(self, schedule: Schedule) -> bool:
        """One tick: start an invocation unless the function is at its concurrency limit."""
        with self._lock:
            schedule._threads = [t for t in schedule._threads if t.is_alive()]
            if schedule.running >= schedule.max_concurrency:
                schedule.function.stats.throttled()
                return False
            schedule.running += 1
            worker = threading.Thread(
                target=self._invoke, args=(schedule,), name=f"invoke-{schedule.function.name}", daemon=True
            )
            schedule._threads.append(worker)
        worker.start()
        return True

    def _invoke(self, schedule: Schedule) -> None:
        try:
            schedule.function.invoke(scheduled_event(f"{schedule.function.name}-schedule"))
        finally:
            with self._lock:
                schedule.running -= 1

    def busy(self) -> bool:
        with self._lock:
            return any(schedule.running for schedule in self.schedules)

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop ticking and wait for invocations in flight; False if some outlived `timeout_s`."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for ticker in self._tickers:
            ticker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            workers = [t for schedule in self.schedules for t in schedule._threads]
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in workers)
