"""The relay as a local system: INSERTs into the relay source table (a writer at a chosen rate),
the table's stream polled by `local.relay.StreamPoller` into the real relay function, the real
drain on its schedule posting to `local.relay.ApiStub`, and an observer that reads what the stub
accepted. Every inserted item must be accepted by the API exactly once.

A relay record is named `relay/<pk>/<sk>` and counted as one record of that "file", so the run's
reconciliation (`local.fates`) checks it like any ingested file.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from local.environment import LocalEnvironment
from local.fates import Expected
from local.function_options import FunctionOptions
from local.functions import LocalFunction
from local.observe import queue_depth
from local.relay import ApiStub, StreamPoller
from local.resources import TABLE_PARTITION_KEY, TABLE_SORT_KEY
from local.scheduler import Schedule, Scheduler, parse_interval

RELAY_PREFIX = "relay/"
LOCAL_DRAIN_SCHEDULE = "1s"
STREAM_POLL_S = 0.2


def relay_name(pk: str, sk: str) -> str:
    return f"{RELAY_PREFIX}{pk}/{sk}"


class RelayApiObserver:
    """The end of the relay: what the API stub accepted, as `relay/<pk>/<sk>#0` ids."""

    def __init__(self, stub: ApiStub, partition_key: str = TABLE_PARTITION_KEY) -> None:
        self.stub = stub
        self.partition_key = partition_key
        self.counts: Counter[str] = Counter()
        self.objects = 0
        self.first_delivery_at: float | None = None
        self.last_delivery_at: float | None = None
        self._seen = 0

    def refresh(self) -> int:
        accepted = self.stub.accepted()
        fresh = accepted[self._seen :]
        self._seen = len(accepted)
        for request in fresh:
            state = request.json()
            self.counts[f"{relay_name(str(state[TABLE_PARTITION_KEY]), str(state[TABLE_SORT_KEY]))}#0"] += 1
            self.first_delivery_at = self.first_delivery_at or request.at
            self.last_delivery_at = request.at
        self.objects += len(fresh)
        return len(fresh)

    @property
    def records(self) -> int:
        return sum(self.counts.values())


@dataclass
class RelayWriter:
    """Inserts items into the relay source table at `rate` per second (new keys only: the stream
    filter passes INSERTs, and each must reach the API once)."""

    dynamodb: Any
    table: str
    rate: float
    groups: int = 4
    written: list[Expected] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, duration_s: float, stop: threading.Event) -> None:
        started = time.monotonic()
        sequence = 0
        while not stop.is_set():
            due = started + sequence / self.rate
            if due >= started + duration_s or stop.wait(max(0.0, due - time.monotonic())):
                return
            pk, sk = f"customer-{sequence % self.groups}", f"order-{sequence:07d}"
            self.dynamodb.put_item(
                TableName=self.table,
                Item={
                    TABLE_PARTITION_KEY: {"S": pk},
                    TABLE_SORT_KEY: {"S": sk},
                    "amount": {"N": str(sequence)},
                },
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": TABLE_PARTITION_KEY},
            )
            with self.lock:
                self.written.append(Expected(relay_name(pk, sk), "delivered", 1))
            sequence += 1

    def snapshot(self) -> list[Expected]:
        with self.lock:
            return list(self.written)


class RelaySystem:
    """The relay function behind a stream event source mapping, and the drain on a schedule."""

    name = "relay"

    def __init__(self, environment: LocalEnvironment, options: FunctionOptions) -> None:
        if environment.api_stub is None:
            raise ValueError("the relay system needs the environment's API stub (api_stub=True)")
        config, names = environment.config, environment.provisioned.names
        relay, memory = config.relay, config.functions.memory_mb
        self.relay_function = options.function("relay", relay.relay_timeout_s, memory)
        drain = options.function("drain", relay.drain_timeout_s, memory)
        self.functions: list[LocalFunction] = [self.relay_function, drain]
        stream_arn = environment.client("dynamodb").describe_table(TableName=names.relay_source_table)[
            "Table"
        ]["LatestStreamArn"]
        self.poller = StreamPoller(
            environment.client("dynamodbstreams"),
            stream_arn,
            self.relay_function.invoke,
            batch_size=relay.stream_batch_size,
            retry_attempts=relay.retry_attempts,
        )
        rate = options.schedules.get("drain") or (
            relay.drain_schedule if options.use_config_schedules else LOCAL_DRAIN_SCHEDULE
        )
        self.scheduler = Scheduler(
            [Schedule(drain, parse_interval(rate), options.concurrency.get("drain", 1))]
        )
        self.sqs = environment.client("sqs")
        self.queue_url = environment.provisioned.url(names.relay_queue)
        self.observer = RelayApiObserver(environment.api_stub)
        self._stack = ExitStack()

    def start(self) -> None:
        self._stack.enter_context(self.poller.running(STREAM_POLL_S))
        self.scheduler.start()

    def stop(self, timeout_s: float) -> bool:
        self._stack.close()
        return self.scheduler.stop(timeout_s)

    def idle(self) -> bool:
        return not any(queue_depth(self.sqs, self.queue_url).values()) and not self.poller.retrying

    def counters(self) -> dict[str, int]:
        stats = self.poller.stats
        return {
            "stream records polled": stats.polled,
            "relay invocations": stats.invocations,
            "API calls accepted": len(self.observer.stub.accepted()),
            "API calls refused": len(self.observer.stub.received) - len(self.observer.stub.accepted()),
        }
