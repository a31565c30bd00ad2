"""One loader invocation on several processes, each loading a disjoint share of the inbox.

A Python process runs Python on one core at a time (the GIL), and a loader under EFS latency
spends that core handing the GIL between the threads that wait on EFS: a Lambda function with
two vCPUs (3,538 MB and up) loads about twice the files per second with two processes.

Each process takes only the inbox names whose CRC-32 falls in its share, so processes never
race for a file, and each runs the unchanged batch protocol: a process that dies is a loader
that died (its lease expires and the checker hands its batch back), never a lost record.

The invoking process loads share 0 itself; helpers are started with `spawn` (a fresh
interpreter: no socket, lock or thread is inherited from the parent) and build their own
clients with a picklable factory. Lambda supports `Process` and `Pipe` (not `Pool` or `Queue`,
which need /dev/shm), so results come back over a pipe.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from runtime.errors import SluiceError

T = TypeVar("T")

# After its deadline a helper gets this long to hand back its result before it is killed.
KILL_GRACE_S = 2.0
# Longer than any Lambda invocation (15 minutes); a caller with no deadline waits this long.
LONGEST_WAIT_S = 3600.0


@dataclass(frozen=True)
class Share:
    """The inbox names one process loads: those whose CRC-32 is `index` modulo `count`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"share {self.index} of {self.count} does not exist")

    def holds(self, name: str) -> bool:
        return self.count == 1 or zlib.crc32(name.encode()) % self.count == self.index


EVERYTHING = Share()


class HelperFailed(SluiceError):
    """A helper process raised, died, or outlived its deadline. Its batch (if any) is handed
    back like any dead loader's; the invocation fails so the error is seen."""


@dataclass
class _Helper(Generic[T]):
    share: Share
    process: Any  # multiprocessing's SpawnProcess (its type is private)
    results: Connection

    def collect(self, deadline: float) -> T | HelperFailed:
        """The helper's result, or why there is none. The process is gone when this returns."""
        what = f"loader helper for share {self.share.index}/{self.share.count}"
        try:
            reported = self.results.poll(min(max(0.0, deadline - time.monotonic()), LONGEST_WAIT_S))
            outcome: tuple[str, Any] | None = self.results.recv() if reported else None
        except EOFError:  # it died before sending anything
            outcome = None
        finally:
            self.results.close()
        self.process.join(KILL_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            return HelperFailed(f"{what} had not finished by its deadline; killed")
        if outcome is None:
            return HelperFailed(f"{what} exited with code {self.process.exitcode} before reporting")
        kind, payload = outcome
        if kind == "error":
            return HelperFailed(f"{what} failed:\n{payload}")
        result: T = payload
        return result


def _helper_main(work: Callable[[Share], Any], share: Share, results: Connection) -> None:
    """A helper process's body: run the share, send ("ok", result) or ("error", traceback)."""
    try:
        outcome: tuple[str, Any] = ("ok", work(share))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it there
        outcome = ("error", traceback.format_exc())
    results.send(outcome)
    results.close()


def run_shares(
    count: int,
    own: Callable[[Share], T],
    helper: Callable[[Share], T],
    deadline: float,
) -> list[T]:
    """`own(Share(0, count))` in this process while helper processes run `helper(Share(i,
    count))` for every other share; `helper` must pickle. Every helper is collected (killed
    past `deadline`, a `time.monotonic()` value) before this returns or raises; a helper
    that failed raises `HelperFailed` once all are done."""
    context = multiprocessing.get_context("spawn")
    helpers: list[_Helper[T]] = []
    try:
        for index in range(1, count):
            receive, send = context.Pipe(duplex=False)
            share = Share(index, count)
            process = context.Process(
                target=_helper_main, args=(helper, share, send), name=f"sluice-loader-{index}", daemon=True
            )
            process.start()
            send.close()  # the helper holds the only sending end: its death reads as EOF here
            helpers.append(_Helper(share, process, receive))
        results = [own(Share(0, count))]
    finally:
        collected = [h.collect(deadline) for h in helpers]
    failures = [c for c in collected if isinstance(c, HelperFailed)]
    if failures:
        raise HelperFailed("\n".join(str(f) for f in failures))
    return results + [c for c in collected if not isinstance(c, HelperFailed)]
