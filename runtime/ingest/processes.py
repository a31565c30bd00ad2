"""One loader invocation on several processes, each loading a disjoint share of the inbox.

A Python process runs Python on one core at a time (the GIL), and a loader under EFS latency
spends that core handing the GIL between the threads that wait on EFS: a Lambda function with
two vCPUs (3,538 MB and up) loads about twice the files per second with two processes.

Each process takes only the inbox names whose CRC-32 falls in its share, so processes never
race for a file, and each runs the unchanged batch protocol: a process that dies is a loader
that died (its lease expires and the checker hands its batch back), never a lost record.

The invoking process loads share 0 itself. Each helper is a fresh interpreter running
`python -m runtime.ingest.helper` (no socket, lock or thread inherited; nothing re-imports the
Lambda runtime's own main module, and no multiprocessing resource tracker is left behind):
its work arrives pickled on stdin and its outcome leaves pickled on a pipe of its own, so the
helper's stdout stays its log.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.errors import SluiceError

T = TypeVar("T")

# After its deadline a helper gets this long to hand back its result before it is killed.
KILL_GRACE_S = 2.0
HELPER_MODULE = "runtime.ingest.helper"


@dataclass(frozen=True)
class Share:
    """The inbox names one process loads: those whose CRC-32 is `index` modulo `count`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"share {self.index} of {self.count} does not exist")

    def holds(self, name: str) -> bool:
        # fsencode: a name that is not UTF-8 comes back from scandir with surrogates.
        return self.count == 1 or zlib.crc32(os.fsencode(name)) % self.count == self.index


EVERYTHING = Share()


class HelperFailed(SluiceError):
    """A helper process raised, died, or outlived its deadline. Its batch (if any) is handed
    back like any dead loader's; the invocation fails so the error is seen."""


@dataclass
class Outcomes(Generic[T]):
    """What every process of an invocation returned, and how the helpers that did not failed."""

    results: list[T]
    failures: list[HelperFailed]

    def raise_failures(self) -> None:
        if self.failures:
            raise HelperFailed("\n".join(str(f) for f in self.failures))


class _Helper:
    """One helper process: started with its work, collected (result or failure) exactly once."""

    def __init__(self, work: Callable[[Share], Any], share: Share) -> None:
        self.share = share
        outcome_read, outcome_write = os.pipe()
        try:
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self.process = subprocess.Popen(
                [sys.executable, "-m", HELPER_MODULE, str(outcome_write)],
                stdin=subprocess.PIPE,
                pass_fds=(outcome_write,),
                env=environment,
            )
        except BaseException:
            os.close(outcome_read)
            raise
        finally:
            os.close(outcome_write)  # the helper holds the only writing end: its death reads as EOF
        self._outcome = outcome_read
        assert self.process.stdin is not None
        # A helper that died before reading its work is reported by collect() (its exit code).
        with contextlib.suppress(BrokenPipeError), self.process.stdin as job:
            job.write(pickle.dumps((work, share)))

    @property
    def what(self) -> str:
        return f"loader helper for share {self.share.index}/{self.share.count}"

    def collect(self, deadline: float) -> Any:
        """The helper's result, or a HelperFailed saying why there is none. The process is
        gone when this returns, whatever happened."""
        try:
            outcome = self._read_outcome(deadline)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            outcome = ("error", f"its report could not be read: {exc!r}")
        finally:
            os.close(self._outcome)
        killed = False
        try:
            self.process.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            killed = True
        if outcome is None:
            if killed:
                return HelperFailed(f"{self.what} had not finished by its deadline; killed")
            return HelperFailed(f"{self.what} exited with code {self.process.returncode} before reporting")
        kind, payload = outcome
        return HelperFailed(f"{self.what} failed:\n{payload}") if kind == "error" else payload

    def _read_outcome(self, deadline: float) -> tuple[str, Any] | None:
        """Everything the helper wrote on its pipe, unpickled; None if it wrote nothing."""
        chunks = []
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self._outcome], [], [], wait)[0]:
                return None  # past the deadline: collect() kills it
            chunk = os.read(self._outcome, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return None
        outcome: tuple[str, Any] = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child wrote it
        return outcome


def run_shares(
    count: int,
    own: Callable[[Share], T],
    helper: Callable[[Share], T],
    deadline: float,
) -> Outcomes[T]:
    """`own(Share(0, count))` in this process while helper processes run `helper(Share(i,
    count))` for every other share; `helper` must pickle (a module-level function or an
    instance of a module-level class). Every helper is collected (killed past `deadline`, a
    `time.monotonic()` value) before this returns or raises. An exception from `own` is
    raised once the helpers are collected; helper failures are returned, not raised, so the
    caller can report what did get done first."""
    helpers: list[_Helper] = []
    outcomes: Outcomes[T] = Outcomes([], [])
    try:
        for index in range(1, count):
            helpers.append(_Helper(helper, Share(index, count)))
        outcomes.results.append(own(Share(0, count)))
    finally:
        for running in helpers:
            collected = running.collect(deadline)
            if isinstance(collected, HelperFailed):
                outcomes.failures.append(collected)
            else:
                outcomes.results.append(collected)
    return outcomes
