"""The overhead of the synchronous jobs path: what `POST /jobs` adds over the worker's own time.

`python -m bench.jobs [--jobs N] [--json PATH]` starts a moto server and a redis-server (or
uses `--aws-endpoint-url` / `--redis-url`), then posts N one-step jobs one at a time through
the real jobs handler (event parsing, validation, subscribe, enqueue, wait, answer) while a
worker thread runs the real router pipeline against the state queue, like an event source mapping
that long-polls.

Jobs are posted one at a time, each once the poller is idle again (long-polling), so a job
never queues behind the tail of the previous batch. Per job: `e2e` = the handler's call, end
to end; `worker` = from the start of the batch that carried the job to the moment its
completion was published (the worker's own time: lease, routing, S3 outcome, status,
PUBLISH); `overhead` = e2e - worker: validation, subscribe, enqueue (one SendMessage), the
queue's hand-over to the poller, the wake-up and the answer. `enqueue` is the SendMessage
call alone, reported apart because through moto it is most of the overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import redis

from local.http import SUBMIT_ROUTE, api_event
from local.servers import FAKE_AWS_ENVIRONMENT, running_moto, running_redis
from runtime.clients import AWS_CLIENT_CONFIG, new_session
from runtime.config import JobsSettings, PipelineSettings, QueueSettings, RedisSettings, Settings
from runtime.jobs import JobClients, JobOutcome, JobsRouter
from runtime.jobs.store import make_store
from runtime.jobs.wiring import build_jobs
from runtime.pipeline import Pipeline, build_pipeline, pipeline_clients
from runtime.pipeline.ledger import create_ledger_table

BUCKET = "sluice-bench-jobs"
LEDGER = "sluice-bench-jobs-ledger"


def one_step_job(state: Any) -> None:
    """Done at its first transition: the job's result is its input."""
    return None


class TimedJobsRouter(JobsRouter):
    """Notes when each job's completion was published (the end of the worker's own time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published: dict[str, float] = {}

    def finish(self, outcome: JobOutcome) -> JobOutcome:
        stored = super().finish(outcome)
        self.published[outcome.job_id] = time.perf_counter()
        return stored

    def wait_published(self, job_id: str) -> float:
        deadline = time.monotonic() + 5
        while job_id not in self.published:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} answered but never published")
            time.sleep(0.0005)
        return self.published[job_id]


class TimedSqs:
    """The SQS client, timing each SendMessage (the enqueue inside the jobs path)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.sends: list[float] = []

    def send_message(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._sqs.send_message(**kwargs)
        finally:
            self.sends.append((time.perf_counter() - started) * 1000)


class Poller(threading.Thread):
    """One event-source-mapping poller: long-poll, run the batch through the pipeline, delete."""

    def __init__(self, sqs: Any, settings: Settings, pipeline: Pipeline) -> None:
        super().__init__(daemon=True)
        self.sqs, self.settings, self.pipeline = sqs, settings, pipeline
        self.batch_starts: list[float] = []
        self.stopping = threading.Event()
        self.polling = threading.Event()  # set while it waits in ReceiveMessage

    def run(self) -> None:
        url = self.settings.queues.state_url
        while not self.stopping.is_set():
            self.polling.set()
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not messages:
                continue
            self.polling.clear()
            self.batch_starts.append(time.perf_counter())
            records = [_record(m) for m in messages]
            result = self.pipeline.run(records, remaining_ms=60_000)
            failed = set(result.failed_message_ids)
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)
                if m["MessageId"] not in failed
            ]
            if entries:
                self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def _record(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:state",
        "awsRegion": "us-east-1",
    }


def _settings(aws: Any, redis_url: str) -> Settings:
    sqs, s3 = aws("sqs"), aws("s3")
    state_url = sqs.create_queue(QueueName="bench-jobs-state")["QueueUrl"]
    dlq_url = sqs.create_queue(QueueName="bench-jobs-dlq")["QueueUrl"]
    s3.create_bucket(Bucket=BUCKET)
    create_ledger_table(aws("dynamodb"), LEDGER)
    return Settings(
        redis=RedisSettings(url=redis_url),
        queues=QueueSettings(state_url=state_url, state_dlq_url=dlq_url),
        pipeline=PipelineSettings(ledger_table=LEDGER, results_bucket=BUCKET, lease_s=30),
        jobs=JobsSettings(wait_s=10),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def jobs_overhead(aws_url: str, redis_url: str, jobs: int) -> dict[str, Any]:
    """Run `jobs` sequential jobs; the figures in milliseconds."""

    def aws(service: str) -> Any:
        return new_session().client(  # type: ignore[call-overload]
            service, endpoint_url=aws_url, region_name="us-east-1", config=AWS_CLIENT_CONFIG
        )

    settings = _settings(aws, redis_url)
    client = redis.Redis.from_url(redis_url)
    sqs = TimedSqs(aws("sqs"))
    job_clients = JobClients(sqs=sqs, s3=aws("s3"), redis=client)
    router = TimedJobsRouter(one_step_job, store=make_store(JobClients(None, aws("s3"), client), settings))
    pipeline = build_pipeline(
        settings, pipeline_clients(settings, aws=aws, redis_client=client), router=router
    )
    poller = Poller(aws("sqs"), settings, pipeline)
    poller.start()
    api = build_jobs(settings, job_clients)
    e2e: list[float] = []
    worker: list[float] = []
    try:
        for n in range(jobs + 10):  # the first 10 warm the connections up and are not counted
            event = api_event("POST", "/jobs", SUBMIT_ROUTE, body=orjson.dumps({"n": n}))
            # One job at a time, each posted once the poller has finished the previous batch
            # (its ledger, sink and deletes) and is long-polling again, as an idle mapping is.
            poller.polling.wait(timeout=5)
            time.sleep(0.002)
            started = time.perf_counter()
            response = api(event)
            ended = time.perf_counter()
            body = orjson.loads(response["body"])
            if response["statusCode"] != 200 or body["status"] != "done":
                raise RuntimeError(f"job {n} was answered {response['statusCode']}: {body}")
            if n < 10:
                continue
            published = router.wait_published(body["job_id"])  # noted just after the PUBLISH
            batch_start = max(t for t in poller.batch_starts if t <= ended)
            e2e.append((ended - started) * 1000)
            worker.append((published - batch_start) * 1000)
    finally:
        poller.stopping.set()
        poller.join(timeout=5)
    overhead = [total - own for total, own in zip(e2e, worker, strict=True)]
    enqueue = sqs.sends[10:]
    return {
        "jobs.count": jobs,
        "jobs.overhead_ms_p50": round(statistics.median(overhead), 2),
        "jobs.overhead_ms_p99": round(percentile(overhead, 0.99), 2),
        "jobs.e2e_ms_p50": round(statistics.median(e2e), 2),
        "jobs.e2e_ms_p99": round(percentile(e2e, 0.99), 2),
        "jobs.worker_ms_p50": round(statistics.median(worker), 2),
        "jobs.worker_ms_p99": round(percentile(worker, 0.99), 2),
        "jobs.enqueue_ms_p50": round(statistics.median(enqueue), 2),
        "jobs.enqueue_ms_p99": round(percentile(enqueue, 0.99), 2),
    }


@contextlib.contextmanager
def _servers(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    os.environ.update({k: v for k, v in FAKE_AWS_ENVIRONMENT.items() if k not in os.environ})
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(running_redis()).url
        aws_url = args.aws_endpoint_url or stack.enter_context(running_moto()).url
        yield aws_url, redis_url


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--redis-url")
    parser.add_argument("--aws-endpoint-url")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("sluice").setLevel(logging.WARNING)
    with _servers(args) as (aws_url, redis_url):
        figures = jobs_overhead(aws_url, redis_url, args.jobs)
    text = orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return figures


if __name__ == "__main__":
    main()
