"""The systems a local run drives, each a pluggable piece with the same small interface:
`start()`, `stop()`, `idle()` and a few counters for the progress display.

- `ingest`: the loader, checker and archiver on their schedules (`local.scheduler`);
- `pipeline`: the router behind an SQS event source mapping on the state queue (`local.esm`);
- `fifo`: the FIFO router behind the FIFO state queue's mapping (10 per batch, no window);

- `relay`: the relay function behind the source table's stream and the drain on its schedule,
  posting to an external-API stub (`local.relay_system`).

- `gateway`: the loopback HTTP API (`local/http.py`: API Gateway v2 events; `POST /messages`
  into the state queue, `/jobs` through the jobs handler) and a client posting to it
  (`local.gateway_system`); its messages are routed by `pipeline`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from local.environment import LocalEnvironment
from local.esm import SqsMapping, SqsPoller
from local.function_options import FunctionOptions
from local.functions import LocalFunction
from local.gateway_system import GatewaySystem
from local.relay_system import RelaySystem
from local.scheduler import Schedule, Scheduler, parse_interval

# Local ticks instead of the config's minutes: a loader exits early when nothing is claimable,
# so on AWS the next minute's invocation picks up new files; locally that wait would dominate a
# one-minute run. `--schedule NAME=RATE` overrides these, `--config-schedules` uses the config's.
LOCAL_SCHEDULES = {"loader": "1s", "checker": "5s", "archiver": "10s"}
# Scheduled functions' concurrency: two loaders may race (they are built for it); the
# checker and archiver each run alone. `--concurrency NAME=N` overrides.
LOCAL_CONCURRENCY = {"loader": 2, "checker": 1, "archiver": 1}


class System(Protocol):
    name: str
    functions: list[LocalFunction]

    def start(self) -> None: ...

    def stop(self, timeout_s: float) -> bool: ...

    def idle(self) -> bool: ...

    def counters(self) -> dict[str, int]: ...


class IngestSystem:
    """The scheduled ingest functions: loader, checker and archiver."""

    name = "ingest"

    def __init__(self, environment: LocalEnvironment, options: FunctionOptions) -> None:
        ingest = environment.config.ingest
        memory = environment.config.functions.memory_mb
        timeouts = {
            "loader": ingest.loader_timeout_s,
            "checker": ingest.checker_timeout_s,
            "archiver": ingest.archiver_timeout_s,
        }
        config_rates = {
            "loader": ingest.loader_schedule,
            "checker": ingest.checker_schedule,
            "archiver": ingest.archiver_schedule,
        }
        reserved = environment.config.functions.reserved_concurrency
        schedules = []
        self.functions = []
        for name, timeout_s in timeouts.items():
            function = options.function(name, timeout_s, memory)
            rate = options.schedules.get(name) or (
                config_rates[name] if options.use_config_schedules else LOCAL_SCHEDULES[name]
            )
            concurrency = options.concurrency.get(name) or reserved.get(name) or LOCAL_CONCURRENCY[name]
            schedules.append(Schedule(function, parse_interval(rate), max_concurrency=concurrency))
            self.functions.append(function)
        self.scheduler = Scheduler(schedules)
        self.claimed = environment.share / "claimed"

    def start(self) -> None:
        self.scheduler.start()

    def stop(self, timeout_s: float) -> bool:
        return self.scheduler.stop(timeout_s)

    def idle(self) -> bool:
        """No batch in flight on the share. Loaders tick all the time, but one with nothing
        claimed and nothing to claim sends nothing."""
        with os.scandir(self.claimed) as batches:
            return not any(True for _ in batches)

    def counters(self) -> dict[str, int]:
        return {f"{f.name} runs": f.stats.invocations for f in self.functions}


class PipelineSystem:
    """The router on the state queue's event source mapping (settings from the config)."""

    name = "pipeline"
    function_name = "router"
    fifo = False

    def __init__(self, environment: LocalEnvironment, options: FunctionOptions) -> None:
        pipeline = environment.config.pipeline
        names = environment.provisioned.names
        router = options.function(
            self.function_name, pipeline.timeout_s, environment.config.functions.memory_mb
        )
        self.functions = [router]
        concurrency = (
            options.concurrency.get(self.function_name)
            or environment.config.functions.reserved_concurrency.get(self.function_name)
            or pipeline.max_concurrency
        )
        queue = names.fifo_queue if self.fifo else names.state_queue
        mapping = SqsMapping(
            queue_url=environment.provisioned.url(queue),
            queue_arn=environment.provisioned.arn(queue),
            # Lambda's rules for FIFO sources: at most 10 per batch, no batching window.
            batch_size=pipeline.fifo_batch_size if self.fifo else pipeline.batch_size,
            batching_window_s=0 if self.fifo else pipeline.batching_window_s,
            max_concurrency=concurrency,
            report_batch_item_failures=True,
        )
        self.poller = SqsPoller(environment.client("sqs"), router, mapping)

    def start(self) -> None:
        self.poller.start()

    def stop(self, timeout_s: float) -> bool:
        return self.poller.stop(timeout_s)

    def idle(self) -> bool:
        return self.poller.stats.in_flight == 0

    def counters(self) -> dict[str, int]:
        stats = self.poller.stats
        return {
            "messages received": stats.received,
            "messages deleted": stats.deleted,
            "failures reported": stats.reported_failures,
            "failed batches": stats.failed_batches,
        }


class FifoPipelineSystem(PipelineSystem):
    """The FIFO router on the FIFO state queue (the loader sends there with
    `--set ingest.target=fifo`)."""

    name = "fifo"
    function_name = "fifo-router"
    fifo = True


SystemFactory = Callable[[LocalEnvironment, FunctionOptions], System]
SYSTEMS: dict[str, SystemFactory] = {
    "ingest": IngestSystem,
    "pipeline": PipelineSystem,
    "fifo": FifoPipelineSystem,
    "relay": RelaySystem,
    "gateway": GatewaySystem,
}
