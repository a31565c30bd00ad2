"""Fault injection for SQS, locally: a loopback HTTP proxy in front of the moto server that the
functions' clients talk to (their `AWS_ENDPOINT_URL`), while the runtime's own clients talk to
moto directly.

For `SendMessageBatch` calls (the loader's and the router's sends) it injects, each with its own
probability:
- `throttle`: the call is refused with `RequestThrottled` before reaching SQS (nothing sent;
  botocore's standard retry mode backs off and retries);
- `partial`: only some entries are forwarded; the others come back in `Failed` (really not sent,
  as in a partial failure; the caller must retry exactly those);
- `lost_response`: the call reaches SQS and succeeds, then the answer is lost (HTTP 500): the
  caller retries the whole call and SQS receives every entry twice, under the same ids — the
  duplicate that the ledger and the create-only sink must absorb.

Every other request passes through untouched.
"""

from __future__ import annotations

import http.client
import random
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import orjson

LOOPBACK = "127.0.0.1"
SEND_MESSAGE_BATCH = "AmazonSQS.SendMessageBatch"
FAULT_NAMES = ("throttle", "partial", "lost_response")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "expect"}
_JSON = [("Content-Type", "application/x-amz-json-1.0")]


@dataclass(frozen=True)
class SqsFaults:
    throttle: float = 0.0
    partial: float = 0.0
    lost_response: float = 0.0
    seed: int | None = None

    @classmethod
    def parse(cls, text: str, seed: int | None = None) -> SqsFaults:
        """`throttle=0.1,partial=0.2,lost_response=0.05`."""
        values: dict[str, float] = {}
        for pair in filter(None, (part.strip() for part in text.split(","))):
            name, _, raw = pair.partition("=")
            if name not in FAULT_NAMES:
                raise ValueError(f"unknown SQS fault {name!r}; known: {', '.join(FAULT_NAMES)}")
            value = float(raw)
            if not 0 <= value <= 1:
                raise ValueError(f"SQS fault {name} must be a probability between 0 and 1")
            values[name] = value
        return cls(seed=seed, **values)

    @property
    def active(self) -> bool:
        return any((self.throttle, self.partial, self.lost_response))


@dataclass
class FaultStats:
    injected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.injected[name] += amount


class FaultProxy:
    """The proxy (see module docs). `url` is what the functions' clients use."""

    def __init__(self, upstream: str, faults: SqsFaults) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or LOOPBACK
        self.upstream_port = parsed.port or 80
        self.faults = faults
        self.stats = FaultStats()
        self._random = random.Random(faults.seed)
        self._random_lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sqs-fault-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def roll(self, probability: float) -> bool:
        with self._random_lock:
            return self._random.random() < probability

    def choose_failed(self, entries: list[Any]) -> set[int]:
        """A non-empty, proper subset of entry positions to fail (at least one goes through)."""
        with self._random_lock:
            count = self._random.randint(1, len(entries) - 1)
            return set(self._random.sample(range(len(entries)), count))

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _json_error(code: str, message: str) -> bytes:
    return orjson.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message})


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    return type("FaultProxyHandler", (_ProxyHandler,), {"proxy": proxy})


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: ClassVar[FaultProxy]
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.headers.get("X-Amz-Target") == SEND_MESSAGE_BATCH:
            self._send_message_batch(method, headers, body)
            return
        self._reply(*self.proxy.forward(method, self.path, headers, body))

    def _send_message_batch(self, method: str, headers: dict[str, str], body: bytes) -> None:
        faults = self.proxy.faults
        if self.proxy.roll(faults.throttle):
            self.proxy.stats.count("throttle")
            self._reply(400, _JSON, _json_error("RequestThrottled", "Rate exceeded (injected)"))
            return
        request = orjson.loads(body)
        entries = request.get("Entries", [])
        if len(entries) > 1 and self.proxy.roll(faults.partial):
            self._partial(method, headers, request, entries)
            return
        status, response_headers, response_body = self.proxy.forward(method, self.path, headers, body)
        if status == 200 and self.proxy.roll(faults.lost_response):
            self.proxy.stats.count("lost_response")
            self._reply(500, _JSON, _json_error("InternalError", "answer lost (injected)"))
            return
        self._reply(status, response_headers, response_body)

    def _partial(
        self, method: str, headers: dict[str, str], request: dict[str, Any], entries: list[Any]
    ) -> None:
        failed = self.proxy.choose_failed(entries)
        kept = [entry for index, entry in enumerate(entries) if index not in failed]
        status, response_headers, response_body = self.proxy.forward(
            method, self.path, headers, orjson.dumps({**request, "Entries": kept})
        )
        if status != 200:
            self._reply(status, response_headers, response_body)
            return
        answer = orjson.loads(response_body)
        answer.setdefault("Failed", []).extend(
            {
                "Id": entries[index]["Id"],
                "SenderFault": False,
                "Code": "InternalError",
                "Message": "injected",
            }
            for index in sorted(failed)
        )
        self.proxy.stats.count("partial_entries", len(failed))
        self._reply(200, _JSON, orjson.dumps(answer))

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def fault_proxy(upstream: str, faults: SqsFaults) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, faults)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
