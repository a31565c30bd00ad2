"""The relay, locally: a DynamoDB-stream poller for the moto server that emulates the relay's
event source mapping, and a stub of the third-party API.

`StreamPoller` reads the table's stream shards, applies the same filter pattern the stack gives
the event source mapping (`runtime.relay.filters.INSERT_ONLY`), invokes the function with
Lambda's event shape, and honours `ReportBatchItemFailures`: it resumes from the first reported
record, retries a failing batch up to `retry_attempts` times, then hands it to `on_failure` (the
S3 on-failure destination's stand-in) and moves on. (Lambda would also bisect a failing batch;
the stand-in retries it whole.)

`ApiStub` is an HTTP server on loopback that answers each request from a script (200, 429 with
`Retry-After`, 500, 400, a slow answer for timeouts) and records everything it received.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson

from runtime.relay.filters import INSERT_ONLY, matches

LOOPBACK = "127.0.0.1"


# -- the DynamoDB stream event source mapping -------------------------------------------------


class Invocation(Protocol):
    """What the poller needs of an invocation's result (`local.functions.InvocationResult`)."""

    @property
    def ok(self) -> bool: ...

    response: Any


@dataclass
class PollStats:
    polled: int = 0
    filtered_out: int = 0
    invocations: int = 0
    retries: int = 0
    failed_batches: int = 0


@dataclass
class _Shard:
    shard_id: str
    checkpoint: str | None = None  # last sequence number done with (sent, filtered or failed over)
    attempts: int = 0  # failed invocations of the batch starting after the checkpoint


class StreamPoller:
    """Emulates a DynamoDB-stream event source mapping with a filter, batch size, retries and
    batch item failures. `poll_once()` is one pass over every shard; `running()` polls on a
    thread."""

    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        invoke: Callable[[dict[str, Any]], Invocation],
        *,
        batch_size: int = 100,
        retry_attempts: int = 2,
        pattern: Mapping[str, Any] = INSERT_ONLY,
        on_failure: Callable[[list[dict[str, Any]], str], None] | None = None,
    ) -> None:
        self._streams = streams
        self._arn = stream_arn
        self._invoke = invoke
        self._batch_size = batch_size
        self._retry_attempts = retry_attempts
        self._pattern = pattern
        self._on_failure = on_failure
        self._shards: dict[str, _Shard] = {}
        self.stats = PollStats()
        self.failed: list[tuple[list[dict[str, Any]], str]] = []

    def _refresh_shards(self) -> None:
        description = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            self._shards.setdefault(shard["ShardId"], _Shard(shard["ShardId"]))

    def _read(self, shard: _Shard) -> list[dict[str, Any]]:
        position: dict[str, str] = {"ShardIteratorType": "TRIM_HORIZON"}
        if shard.checkpoint is not None:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": shard.checkpoint}
        iterator = self._streams.get_shard_iterator(StreamArn=self._arn, ShardId=shard.shard_id, **position)
        response = self._streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=self._batch_size)
        records: list[dict[str, Any]] = response.get("Records", [])
        return records

    @property
    def retrying(self) -> bool:
        """Whether a failed batch waits for its next attempt (a pass that retries takes nothing)."""
        return any(shard.attempts for shard in self._shards.values())

    def poll_once(self) -> int:
        """One pass; returns how many records it took off the streams (sent or filtered)."""
        self._refresh_shards()
        return sum(self._poll_shard(shard) for shard in self._shards.values())

    def _poll_shard(self, shard: _Shard) -> int:
        records = self._read(shard)
        if not records:
            return 0
        self.stats.polled += len(records)
        wanted = [
            {**record, "eventSourceARN": self._arn} for record in records if matches(self._pattern, record)
        ]
        self.stats.filtered_out += len(records) - len(wanted)
        if not wanted:
            shard.checkpoint = records[-1]["dynamodb"]["SequenceNumber"]
            return len(records)
        failed_at = self._deliver(wanted)
        if failed_at is None:
            shard.attempts = 0
            shard.checkpoint = records[-1]["dynamodb"]["SequenceNumber"]
            return len(records)
        return self._after_failure(shard, records, wanted, failed_at)

    def _deliver(self, records: list[dict[str, Any]]) -> int | None:
        """Invoke once; the index of the first record to retry, or None when all succeeded."""
        self.stats.invocations += 1
        result = self._invoke({"Records": records})
        if not result.ok:
            return 0
        failures = (result.response or {}).get("batchItemFailures") or []
        if not failures:
            return None
        failed = {failure["itemIdentifier"] for failure in failures}
        for index, record in enumerate(records):
            if record["dynamodb"]["SequenceNumber"] in failed:
                return index
        return 0  # an identifier Lambda cannot match fails the whole batch

    def _after_failure(
        self, shard: _Shard, records: list[dict[str, Any]], wanted: list[dict[str, Any]], failed_at: int
    ) -> int:
        first_failed = wanted[failed_at]["dynamodb"]["SequenceNumber"]
        done_before = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) < int(first_failed)]
        if done_before:
            # Progress: the checkpoint moves up to the failed record, whose retries start afresh.
            shard.checkpoint = done_before[-1]["dynamodb"]["SequenceNumber"]
            shard.attempts = 0
        shard.attempts += 1
        if shard.attempts <= self._retry_attempts:
            self.stats.retries += 1
            return len(done_before)
        # Retries exhausted: the batch goes to the on-failure destination and the shard moves on.
        self.stats.failed_batches += 1
        remaining = wanted[failed_at:]
        reason = f"retries exhausted at sequence number {first_failed}"
        self.failed.append((remaining, reason))
        if self._on_failure is not None:
            self._on_failure(remaining, reason)
        shard.attempts = 0
        shard.checkpoint = records[-1]["dynamodb"]["SequenceNumber"]
        return len(records)

    @contextmanager
    def running(self, every_s: float = 0.2) -> Iterator[StreamPoller]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self.poll_once()
                stop.wait(every_s)

        thread = threading.Thread(target=loop, name="relay-stream-poller", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=10)


# -- the third-party API stub -----------------------------------------------------------------


@dataclass(frozen=True)
class StubResponse:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # longer than the client's read timeout = a timeout

    @classmethod
    def throttled(cls, retry_after_s: int) -> StubResponse:
        return cls(429, b'{"error":"slow down"}', {"Retry-After": str(retry_after_s)})


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    status: int  # what the stub answered
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class ApiStub:
    """The third-party API on a loopback port: answers from a script, then `default`."""

    def __init__(self, default: StubResponse | None = None) -> None:
        self.default = default or StubResponse()
        self._script: deque[StubResponse] = deque()
        self._received: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # script and record

    def script(self, *responses: StubResponse | int) -> None:
        """Queue answers for the next requests, in order (an int is a status with a stock body)."""
        with self._lock:
            self._script.extend(r if isinstance(r, StubResponse) else StubResponse(r) for r in responses)

    def set_default(self, response: StubResponse | int) -> None:
        with self._lock:
            self.default = response if isinstance(response, StubResponse) else StubResponse(response)

    def _next_response(self) -> StubResponse:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._received.append(request)

    @property
    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    def accepted(self) -> list[ReceivedRequest]:
        return [request for request in self.received if request.accepted]

    def reset(self) -> None:
        with self._lock:
            self._received.clear()
            self._script.clear()

    # server

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the API stub is not running")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/records"

    def start(self) -> None:
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="relay-api-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ApiStub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_class(stub: ApiStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the drain's pooled connections are reused

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            answer = stub._next_response()
            if answer.delay_s:
                time.sleep(answer.delay_s)
            stub._record(
                ReceivedRequest(
                    method="POST",
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                    status=answer.status,
                    at=time.time(),
                )
            )
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client gave up (a scripted timeout): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
