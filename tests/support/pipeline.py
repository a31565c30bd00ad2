"""Test harness for the router: real queues, ledger table and bucket (moto) plus real Redis,
and an emulated event source mapping (receive → handler → delete what did not fail)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from runtime import codec
from runtime.config import PipelineSettings, QueueSettings, RedisSettings, Settings, to_environ
from runtime.pipeline import BatchResult, PipelineClients, build_pipeline, pipeline_clients
from runtime.pipeline.ledger import Ledger, create_ledger_table
from runtime.pipeline.state import Router
from tests.support.events import sqs_record

ROOT = Path(__file__).resolve().parents[2]
LEDGER_TABLE = "sluice-test-ledger"
BUCKET = "sluice-test-results"
VISIBILITY_S = 1


def _make_queue(sqs: Any, name: str, fifo: bool) -> str:
    attributes = {"VisibilityTimeout": str(VISIBILITY_S)}
    if fifo:
        attributes["FifoQueue"] = "true"
    return sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=attributes)["QueueUrl"]  # type: ignore[no-any-return]


@dataclass
class Harness:
    sqs: Any
    dynamodb: Any
    s3: Any
    redis: Any
    settings: Settings
    fifo: bool = False
    results: list[BatchResult] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        aws: Callable[[str], Any],
        redis_client: Any,
        redis_url: str,
        *,
        fifo: bool = False,
        **pipeline: Any,
    ) -> Harness:
        sqs, dynamodb, s3 = aws("sqs"), aws("dynamodb"), aws("s3")
        state_url = _make_queue(sqs, "state", fifo)
        dlq_url = _make_queue(sqs, "state-dlq", fifo)
        create_ledger_table(dynamodb, LEDGER_TABLE)
        s3.create_bucket(Bucket=BUCKET)
        queues = (
            QueueSettings(fifo_url=state_url, fifo_dlq_url=dlq_url, **_queue_overrides(pipeline))
            if fifo
            else QueueSettings(state_url=state_url, state_dlq_url=dlq_url, **_queue_overrides(pipeline))
        )
        defaults: dict[str, Any] = {
            "ledger_table": LEDGER_TABLE,
            "results_bucket": BUCKET,
            "max_attempts": 3,
            "backoff_base_s": 0,
            "backoff_cap_s": 0,
            "lease_s": 30,
            "time_budget_margin_s": 0,
            "done_marker_ttl_s": 60,
        }
        settings = Settings(
            redis=RedisSettings(url=redis_url),
            queues=queues,
            pipeline=PipelineSettings(**{**defaults, **pipeline}),
        )
        return cls(sqs=sqs, dynamodb=dynamodb, s3=s3, redis=redis_client, settings=settings, fifo=fifo)

    @property
    def clients(self) -> PipelineClients:
        aws = {"sqs": self.sqs, "dynamodb": self.dynamodb, "s3": self.s3}
        return pipeline_clients(self.settings, aws=aws.__getitem__, redis_client=self.redis)

    @property
    def state_url(self) -> str:
        return self.settings.queues.fifo_url if self.fifo else self.settings.queues.state_url

    @property
    def dlq_url(self) -> str:
        return self.settings.queues.fifo_dlq_url if self.fifo else self.settings.queues.state_dlq_url

    @property
    def ledger(self) -> Ledger:
        return self.clients.ledger(self.settings.require_pipeline())

    def send(self, body: bytes | str, group_id: str = "g1") -> None:
        text = body.decode() if isinstance(body, bytes) else body
        extra = {"MessageGroupId": group_id, "MessageDeduplicationId": _dedup(text)} if self.fifo else {}
        self.sqs.send_message(QueueUrl=self.state_url, MessageBody=text, **extra)

    def receive(
        self, url: str | None = None, *, max_messages: int = 10, wait_s: int = 0
    ) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=url or self.state_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])  # type: ignore[no-any-return]

    def records(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [sqs_record(m, "arn:aws:sqs:us-east-1:123456789012:state", fifo=self.fifo) for m in messages]

    def process(
        self,
        messages: list[dict[str, Any]],
        router: Router,
        *,
        remaining_ms: float = 60_000,
        rng: random.Random | None = None,
    ) -> BatchResult:
        """One invocation: the handler's pipeline over `messages`, then the ESM's deletes."""
        pipeline = build_pipeline(self.settings, self.clients, router=router, fifo=self.fifo, rng=rng)
        result = pipeline.run(self.records(messages), remaining_ms)
        self.results.append(result)
        failed = set(result.failed_message_ids)
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.state_url, ReceiptHandle=message["ReceiptHandle"])
        return result

    def run(
        self,
        router: Router,
        *,
        until: Callable[[], bool] | None = None,
        timeout_s: float = 20,
        wait_s: int = 1,
    ) -> None:
        """Deliver and process until the state queue is empty (or `until()`), like an ESM."""
        deadline = time.monotonic() + timeout_s
        idle = 0
        while time.monotonic() < deadline:
            messages = self.receive(wait_s=wait_s)
            if messages:
                idle = 0
                self.process(messages, router)
            else:
                idle += 1
                if (until is not None and until()) or (until is None and self.in_flight() == 0):
                    return
        raise AssertionError("the queue did not drain in time")

    def rerun_after_redis_loss(
        self, redis_client: Any, envelope_id: str, router: Router
    ) -> tuple[BatchResult, list[dict[str, Any]]]:
        """Flush Redis, wait for the crashed delivery of `envelope_id` to come back and process
        it with `router`; returns that run and every other message on the queue (its outputs,
        including what the crashed run had already sent)."""
        redis_client.flushall()
        time.sleep(1.1)  # the crashed delivery's visibility timeout (about 1 s in tests)
        outputs: list[dict[str, Any]] = []
        rerun = None
        while rerun is None:
            for message in self.receive(wait_s=1):
                if orjson.loads(message["Body"])["id"] == envelope_id:
                    rerun = self.process([message], router)
                else:
                    outputs.append(message)
                    self.sqs.delete_message(QueueUrl=self.state_url, ReceiptHandle=message["ReceiptHandle"])
        outputs.extend(self.drain(self.state_url))
        return rerun, outputs

    def in_flight(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.state_url, AttributeNames=["All"])[
            "Attributes"
        ]
        return sum(
            int(attributes[name])
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Every message now on `url` (received and deleted)."""
        out: list[dict[str, Any]] = []
        while True:
            messages = self.receive(url)
            if not messages:
                return out
            out.extend(messages)
            for message in messages:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def sink_objects(self) -> dict[str, dict[str, Any]]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix="results/").get("Contents", [])
        return {
            o["Key"]: orjson.loads(self.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
            for o in listing
        }

    def sunk_items(self) -> list[dict[str, Any]]:
        return [item for obj in self.sink_objects().values() for item in obj["items"]]


def _queue_overrides(pipeline: dict[str, Any]) -> dict[str, Any]:
    size = pipeline.pop("max_message_bytes", None)
    return {"max_message_bytes": size} if size else {}


def _dedup(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def envelope(
    envelope_id: str, states: list[Any], *, step: int = 0, attempt: int = 0, prefix: str = "r"
) -> bytes:
    items = tuple(
        codec.Item(id=f"{prefix}#{i}", step=step, attempt=attempt, state=s) for i, s in enumerate(states)
    )
    return codec.encode(codec.Envelope(id=envelope_id, parent=None, items=items))


def run_handler_in_child(
    h: Harness,
    moto_url: str,
    messages: list[dict[str, Any]],
    *,
    router: str,
    handler: str = "runtime.handlers.router",
    **env: str,
) -> int:
    """The real handler (`handler`, running the router `router` names as module:attribute) in
    a child process over `messages`: a crashed Lambda sandbox takes only itself down. Returns its
    exit code (137 at a kill point)."""
    settings = h.settings.model_copy(
        update={"pipeline": h.settings.require_pipeline().model_copy(update={"router": router})}
    )
    environ = {**os.environ, **to_environ(settings), "AWS_ENDPOINT_URL": moto_url, **env}
    environ["PYTHONPATH"] = str(ROOT)
    child = subprocess.run(
        [sys.executable, "-c", CHILD.replace("runtime.handlers.router", handler)],
        check=False,  # the exit code is the point: 137 at the kill point
        input=orjson.dumps({"Records": h.records(messages)}),
        env=environ,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    return child.returncode


CHILD = """
import sys, orjson
from runtime.handlers.router import handler

class Context:
    function_name = "router"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:router"
    aws_request_id = "crash-test"

    def get_remaining_time_in_millis(self):
        return 30_000

sys.stderr.write(orjson.dumps(handler(orjson.loads(sys.stdin.buffer.read()), Context())).decode())
"""
