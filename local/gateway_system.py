"""The gateway as a local system: the loopback HTTP API (`local.http.LocalHttpApi`, API Gateway
v2 emulated: `POST /messages` is the SQS service integration, `/jobs` the real jobs handler)
and a client that posts JSON bodies to `/messages` at a chosen rate.

The router takes every gateway body as one raw item keyed by its request id (the integration's
`sluice-request-id` attribute, `runtime.pipeline.gateway`), so each accepted POST is expected at
the sink once, as the item `gw-<request id>` (the `apigw-requestid` header of its answer).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from local.environment import LocalEnvironment
from local.fates import Expected
from local.function_options import FunctionOptions
from local.functions import LocalFunction
from local.http import REQUEST_ID_HEADER, GatewayClients, build_gateway
from runtime.handlers import jobs
from runtime.pipeline.gateway import ITEM_PREFIX


class GatewaySystem:
    """The HTTP API on a free loopback port (`url`), serving each request on its own thread."""

    name = "gateway"

    def __init__(self, environment: LocalEnvironment, options: FunctionOptions) -> None:
        del options  # the /messages route runs no function; /jobs runs the jobs handler as is
        self.api = build_gateway(
            environment.settings,
            GatewayClients(sqs=environment.client("sqs"), jobs=jobs.handler),
            jobs_timeout_s=environment.config.jobs.timeout_s,
        )
        self.functions: list[LocalFunction] = []

    @property
    def url(self) -> str:
        return self.api.url

    def start(self) -> None:
        self.api.start()

    def stop(self, timeout_s: float) -> bool:
        self.api.stop()
        return True

    def idle(self) -> bool:
        return True  # requests are answered synchronously; what they enqueue is the pipeline's

    def counters(self) -> dict[str, int]:
        return {}


@dataclass
class GatewayClient:
    """Posts one JSON body per 1/`rate` seconds to `POST /messages` and remembers each request
    id the API answered with."""

    url: str
    rate: float
    posted: list[Expected] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, duration_s: float, stop: threading.Event) -> None:
        started = time.monotonic()
        sequence = 0
        while True:
            due = started + sequence / self.rate
            if due >= started + duration_s or stop.wait(max(0.0, due - time.monotonic())):
                return
            self._post({"order": sequence, "customer": f"c-{sequence % 7}", "amount": sequence * 3})
            sequence += 1

    def _post(self, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.url}/messages",
            data=orjson.dumps(body),
            method="POST",
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                request_id = answer.headers[REQUEST_ID_HEADER]
        except OSError:
            with self.lock:
                self.refused += 1  # not accepted: the client knows, nothing is expected of it
            return
        with self.lock:
            self.posted.append(Expected(f"{ITEM_PREFIX}{request_id}", "delivered", 1))

    def snapshot(self) -> list[Expected]:
        with self.lock:
            return list(self.posted)
