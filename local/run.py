"""One local run: start the systems, feed the inbox (the writer simulator, or the user's own
files), wait until every file has met its fate (or the timeout), let the pipeline fall quiet,
stop everything, and reconcile what reached the sink against what was expected.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.environment import LocalEnvironment
from local.fates import (
    Expected,
    Reconciliation,
    S3SinkObserver,
    SinkObserver,
    SinkObservers,
    StateQueueObserver,
    read_rejections,
    reconcile,
)
from local.function_options import FunctionOptions
from local.gateway_system import GatewayClient, GatewaySystem
from local.inbox import expectations_for, import_inbox
from local.observe import RateMeter, ShareCounts, count_share, queue_depth
from local.relay_system import RelaySystem, RelayWriter
from local.systems import SYSTEMS, System
from local.writer import FileShape, Manifest, WriterSimulator

POLL_S = 1.0
# After Ctrl-C, how long invocations in flight may take to finish before the summary.
INTERRUPTED_STOP_S = 5.0


@dataclass(frozen=True)
class RunOptions:
    duration_s: float = 60.0
    rate: float = 6000.0
    timeout_s: float = 120.0
    systems: tuple[str, ...] = ("ingest", "pipeline")
    shape: FileShape = field(default_factory=FileShape)
    bad_share: float = 0.0
    seed: int | None = None
    inbox: Path | None = None
    functions: FunctionOptions = field(default_factory=FunctionOptions)
    relay_rate: float = 0.5  # items inserted into the relay source table per second
    gateway_rate: float = 5.0  # requests posted to the HTTP API's /messages per second
    # The pipeline must stay quiet (queues empty, nothing running) this long before the final
    # count, so a late duplicate would still be seen.
    quiet_s: float = 2.0


@dataclass
class Snapshot:
    """The run right now, for the live display."""

    phase: str
    elapsed_s: float
    files_written: int
    records_written: int
    share: ShareCounts
    queues: dict[str, dict[str, int]]
    counters: dict[str, int]
    records_delivered: int
    records_per_s: float


@dataclass
class RunResult:
    reconciliation: Reconciliation
    records_written: int
    files_written: int
    started_at: float  # wall clock (epoch seconds), like the delivery times
    writing_s: float
    first_delivery_at: float | None
    last_delivery_at: float | None
    finished_at: float
    interrupted: bool
    timed_out: bool
    counters: dict[str, int]
    invocations: dict[str, dict[str, Any]]
    dead_letters: int
    halted_batches: int
    stop_clean: bool

    @property
    def records_per_s(self) -> float:
        """Sustained throughput at the sink: records delivered over the time from the first
        delivery to the last (the pipeline's rate once records flow)."""
        if self.first_delivery_at is None or self.last_delivery_at is None:
            return 0.0
        elapsed = self.last_delivery_at - self.first_delivery_at
        return self.reconciliation.records_delivered / elapsed if elapsed > 0 else 0.0

    @property
    def records_per_s_from_first_write(self) -> float:
        """End to end including the pipeline's latency: from the first write to the last
        delivery (below the writer's rate by the time the last file takes to arrive)."""
        if self.last_delivery_at is None:
            return 0.0
        elapsed = self.last_delivery_at - self.started_at
        return self.reconciliation.records_delivered / elapsed if elapsed > 0 else 0.0

    @property
    def writer_records_per_s(self) -> float:
        return self.records_written / self.writing_s if self.writing_s > 0 else 0.0

    @property
    def first_delivery_s(self) -> float | None:
        """Seconds from the first write to the first record at the sink."""
        return None if self.first_delivery_at is None else self.first_delivery_at - self.started_at

    @property
    def drain_s(self) -> float | None:
        """Seconds from the end of writing to the last record at the sink."""
        if self.last_delivery_at is None:
            return None
        return self.last_delivery_at - (self.started_at + self.writing_s)

    @property
    def ok(self) -> bool:
        return (
            self.reconciliation.ok
            and not self.reconciliation.pending
            and not self.interrupted
            # Timed out while the pipeline was still busy: a late duplicate cannot be ruled out.
            and not self.timed_out
            and not self.dead_letters
            and not self.halted_batches
        )


class LocalRun:
    def __init__(
        self,
        environment: LocalEnvironment,
        options: RunOptions,
        on_snapshot: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.environment = environment
        self.options = options
        self.on_snapshot = on_snapshot
        names = environment.provisioned.names
        self.queue_urls = {
            "state": environment.provisioned.url(names.state_queue),
            "state dlq": environment.provisioned.url(names.state_dlq),
        }
        if "fifo" in options.systems:
            self.queue_urls["fifo"] = environment.provisioned.url(names.fifo_queue)
            self.queue_urls["fifo dlq"] = environment.provisioned.url(names.fifo_dlq)
        if "relay" in options.systems:
            self.queue_urls["relay"] = environment.provisioned.url(names.relay_queue)
            self.queue_urls["relay dlq"] = environment.provisioned.url(names.relay_dlq)
        self.manifest = Manifest()
        self.systems: list[System] = [
            SYSTEMS[name](environment, options.functions) for name in options.systems
        ]
        self.observers = SinkObservers(self._observers())
        self.relay_writer: RelayWriter | None = None
        if "relay" in options.systems:
            self.relay_writer = RelayWriter(
                environment.client("dynamodb"), names.relay_source_table, rate=options.relay_rate
            )
        self.gateway_client: GatewayClient | None = None
        self.phase = "starting"
        self._rate = RateMeter()
        self._stop_source = threading.Event()
        self._interrupt = threading.Event()  # set by Ctrl-C (see _catch_sigint)
        self._started_at = time.monotonic()
        self._started_wall = time.time()
        self._user_expectations: list[Expected] | None = None
        self.writer: WriterSimulator | None = None

    def _observers(self) -> list[SinkObserver]:
        """With the router running, the ingest's end is its sink in S3; with ingest alone, the
        state queue. The relay's end is the API stub."""
        environment, names = self.environment, self.environment.provisioned.names
        observers: list[SinkObserver] = [
            system.observer for system in self.systems if isinstance(system, RelaySystem)
        ]
        if {"pipeline", "fifo"} & set(self.options.systems):
            prefix = environment.settings.require_pipeline().results_prefix
            observers.append(S3SinkObserver(environment.client("s3"), names.results_bucket, prefix=prefix))
        elif "ingest" in self.options.systems:
            state_url = environment.provisioned.url(names.state_queue)
            observers.append(StateQueueObserver(environment.client("sqs"), state_url))
        return observers

    # -- expectations -----------------------------------------------------------------------

    def expectations(self) -> list[Expected]:
        relayed = self.relay_writer.snapshot() if self.relay_writer is not None else []
        if self.gateway_client is not None:
            relayed += self.gateway_client.snapshot()
        if self._user_expectations is not None:
            return self._user_expectations + relayed
        written = [
            Expected(file=f.name, fate=f.fate, records=f.records, codes=f.codes)
            for f in self.manifest.snapshot()
        ]
        return written + relayed

    def reconcile_now(self) -> Reconciliation:
        self.observers.refresh()
        inbox = self.environment.share / "inbox"
        return reconcile(
            self.expectations(),
            self.observers.counts,
            read_rejections(self.environment.share),
            {entry.name for entry in inbox.iterdir()},
        )

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        interrupted = timed_out = False
        stop_clean = True
        sources: list[threading.Thread] = []
        writing_s = 0.0
        restore_sigint = self._catch_sigint()
        try:
            for system in self.systems:
                system.start()
            self._started_at = time.monotonic()
            self._started_wall = time.time()
            sources = self._start_sources()
            self.phase = "writing" if sources else "loading"
            while alive := [source for source in sources if source.is_alive()]:
                alive[0].join(POLL_S)
                self._check_interrupt()
                self._report()
            writing_s = self._writing_s(time.monotonic() - self._started_at if sources else 0.0)
            self.phase = "draining"
            timed_out = not self._drain(time.monotonic() + self.options.timeout_s)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            restore_sigint()
            self._stop_source.set()
            for source in sources:
                source.join()
            self.phase = "stopping"
            stop_clean = self._stop_systems(INTERRUPTED_STOP_S if interrupted else None)
        return self._result(
            interrupted=interrupted, timed_out=timed_out, writing_s=writing_s, stop_clean=stop_clean
        )

    def _start_sources(self) -> list[threading.Thread]:
        """The writer simulator (or the user's files, copied at once) and the relay's writer."""
        threads = []
        if self.relay_writer is not None:
            threads.append(self._thread("relay-writer", self.relay_writer.run))
        for system in self.systems:
            if isinstance(system, GatewaySystem):
                self.gateway_client = GatewayClient(system.url, self.options.gateway_rate)
                threads.append(self._thread("gateway-client", self.gateway_client.run))
        share = self.environment.share
        if self.options.inbox is not None:
            imported = import_inbox(self.options.inbox, share / "inbox")
            self._user_expectations = expectations_for(imported)
        elif "ingest" in self.options.systems:
            threads.append(self._thread("writer", self._writer().run))
        return threads

    def _thread(self, name: str, target: Callable[[float, threading.Event], None]) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=(self.options.duration_s, self._stop_source), name=name, daemon=True
        )
        thread.start()
        return thread

    def _writer(self) -> WriterSimulator:
        share = self.environment.share
        writer = self.writer = WriterSimulator(
            share,
            shape=self.options.shape,
            rate=self.options.rate,
            bad_share=self.options.bad_share,
            max_message_bytes=self.environment.config.queues.max_message_bytes,
            seed=self.options.seed,
            manifest=self.manifest,
        )
        return writer

    def _writing_s(self, sources_s: float) -> float:
        """The writer simulator's own window when it ran (exact), else how long the sources ran."""
        writer = self.writer
        if writer is None or writer.started_at is None or writer.stopped_at is None:
            return sources_s
        return writer.stopped_at - writer.started_at

    def _catch_sigint(self) -> Callable[[], None]:
        """Ctrl-C stops the run even if the KeyboardInterrupt it raises lands in code that swallows
        it (a library's broad except): the handler also sets an event the run's loops check.
        Returns what puts the previous handler back (nothing to do off the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_sigint(signum: int, frame: Any) -> None:
            self._interrupt.set()
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)

        return restore

    def _check_interrupt(self) -> None:
        if self._interrupt.is_set():
            raise KeyboardInterrupt

    def _drain(self, deadline: float) -> bool:
        """Wait for every file's fate, then for the pipeline to fall quiet. False on timeout."""
        while time.monotonic() < deadline:
            self._check_interrupt()
            reconciliation = self.reconcile_now()
            self._report()
            if reconciliation.settled:
                break
            time.sleep(POLL_S)
        else:
            return False
        self.phase = "settling"
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            self._check_interrupt()
            if self._quiet():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= self.options.quiet_s:
                    return True
            else:
                quiet_since = None
            self._report()
            time.sleep(min(POLL_S, self.options.quiet_s / 2))
        return False

    def _quiet(self) -> bool:
        sqs = self.environment.client("sqs")
        working = [url for name, url in self.queue_urls.items() if not name.endswith("dlq")]
        return not any(any(queue_depth(sqs, url).values()) for url in working) and all(
            system.idle() for system in self.systems
        )

    def _stop_systems(self, timeout_s: float | None = None) -> bool:
        """Stop every system, waiting for invocations in flight (up to the longest function
        timeout, or `timeout_s`); False if some were still running."""
        longest = max((f.timeout_s for s in self.systems for f in s.functions), default=0)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else longest + 5)
        clean = True
        for system in self.systems:
            clean = system.stop(max(0.0, deadline - time.monotonic())) and clean
        return clean

    # -- reporting --------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for system in self.systems:
            merged.update(system.counters())
        return merged

    def _report(self) -> None:
        if self.on_snapshot is None:
            return
        self.observers.refresh()
        sqs = self.environment.client("sqs")
        delivered = self.observers.records
        self.on_snapshot(
            Snapshot(
                phase=self.phase,
                elapsed_s=time.monotonic() - self._started_at,
                files_written=len(self.manifest.files),
                records_written=sum(e.records or 0 for e in self.expectations()),
                share=count_share(self.environment.share),
                queues={name: queue_depth(sqs, url) for name, url in self.queue_urls.items()},
                counters=self.counters(),
                records_delivered=delivered,
                records_per_s=self._rate.observe(delivered),
            )
        )

    def _result(self, *, interrupted: bool, timed_out: bool, writing_s: float, stop_clean: bool) -> RunResult:
        reconciliation = self.reconcile_now()
        sqs = self.environment.client("sqs")
        dead_letters = sum(
            sum(queue_depth(sqs, url).values())
            for name, url in self.queue_urls.items()
            if name.endswith("dlq")
        )
        invocations: dict[str, dict[str, Any]] = {}
        for system in self.systems:
            for function in system.functions:
                stats = function.stats
                invocations[function.name] = {
                    "invocations": stats.invocations,
                    "errors": stats.errors,
                    "timeouts": stats.timeouts,
                    "throttles": stats.throttles,
                    "reported": dict(stats.totals),
                }
        expectations = self.expectations()
        # Records that should reach the sink: a user's file whose fate was not known in advance
        # counts only if it was not rejected (its records were parsed, never meant to arrive).
        rejected = {f.file for f in reconciliation.files if f.fate == "rejected"}
        return RunResult(
            reconciliation=reconciliation,
            records_written=sum(
                e.records or 0 for e in expectations if not (e.fate is None and e.file in rejected)
            ),
            files_written=len(expectations),
            started_at=self._started_wall,
            writing_s=writing_s,
            first_delivery_at=self.observers.first_delivery_at,
            last_delivery_at=self.observers.last_delivery_at,
            finished_at=time.time(),
            interrupted=interrupted,
            timed_out=timed_out,
            counters=self.counters(),
            invocations=invocations,
            dead_letters=dead_letters,
            halted_batches=count_share(self.environment.share).halted_batches,
            stop_clean=stop_clean,
        )
