"""The local SQS event source mapping against the moto server, with tiny in-test handlers."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from local.esm import SqsMapping, SqsPoller, failed_message_ids, lambda_record
from local.functions import LocalFunction


def _queue(
    sqs: Any, name: str, *, visibility_s: int = 1, max_receive_count: int | None = None
) -> tuple[str, str]:
    attributes = {"VisibilityTimeout": str(visibility_s)}
    if max_receive_count is not None:
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
        )
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _send(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
            ],
        )


def _depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_records_have_lambdas_sqs_event_shape(aws: Any) -> None:
    sqs = aws("sqs")
    url, arn = _queue(sqs, "shape")
    sqs.send_message(
        QueueUrl=url,
        MessageBody="hello",
        MessageAttributes={"reason": {"DataType": "String", "StringValue": "why"}},
    )
    message = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"])[
        "Messages"
    ][0]
    record = lambda_record(message, arn)
    assert record["body"] == "hello"
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["messageId"] == message["MessageId"] and record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["reason"]["stringValue"] == "why"
    assert record["messageAttributes"]["reason"]["dataType"] == "String"


def test_a_malformed_failure_report_fails_the_whole_batch() -> None:
    ids = {"a", "b"}
    assert failed_message_ids(None, ids) == set()
    assert failed_message_ids({"batchItemFailures": []}, ids) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "a"}]}, ids) == {"a"}
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, ids) == ids
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == ids
    assert failed_message_ids({"batchItemFailures": "a"}, ids) == ids
    assert failed_message_ids("ok", ids) == ids


def test_only_successes_are_deleted_and_failures_come_back(aws: Any) -> None:
    sqs = aws("sqs")
    url, arn = _queue(sqs, "partial", visibility_s=1)
    _send(sqs, url, [f"m{i}" for i in range(5)])

    def fail_odd(event: dict[str, Any], context: object) -> dict[str, Any]:
        failed = [r["messageId"] for r in event["Records"] if int(r["body"][1:]) % 2]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

    poller = SqsPoller(sqs, LocalFunction("router", 5, handler=fail_odd), SqsMapping(url, arn, batch_size=10))
    batch = poller._gather([])
    assert sorted(m["Body"] for m in batch) == [f"m{i}" for i in range(5)]
    failed = poller.process(batch)
    assert len(failed) == 2 and poller.stats.deleted == 3
    time.sleep(1.2)  # the failed ones reappear after the visibility timeout
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert sorted(m["Body"] for m in again) == ["m1", "m3"]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "2" for m in again)


def test_a_function_error_deletes_nothing_and_the_redrive_policy_moves_it_to_the_dlq(aws: Any) -> None:
    sqs = aws("sqs")
    url, arn = _queue(sqs, "crashy", visibility_s=1, max_receive_count=2)
    dlq_url = sqs.get_queue_url(QueueName="crashy-dlq")["QueueUrl"]
    _send(sqs, url, ["poison"])
    calls = []

    def crash(event: dict[str, Any], context: object) -> None:
        calls.append(len(event["Records"]))
        raise RuntimeError("router crashed")

    poller = SqsPoller(sqs, LocalFunction("router", 5, handler=crash), SqsMapping(url, arn, batch_size=10))
    poller.start()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and _depth(sqs, dlq_url) == 0:
        time.sleep(0.2)
    assert poller.stop(timeout_s=5)
    assert _depth(sqs, dlq_url) == 1 and _depth(sqs, url) == 0
    assert len(calls) == 2  # received twice (maxReceiveCount), never deleted
    assert poller.stats.deleted == 0 and poller.stats.failed_batches == 2


def test_batches_respect_the_batch_size_and_the_payload_limit(aws: Any) -> None:
    sqs = aws("sqs")
    url, arn = _queue(sqs, "sizes", visibility_s=30)
    _send(sqs, url, ["x" * 100] * 25)
    mapping = SqsMapping(url, arn, batch_size=25, max_payload_bytes=10 * (1024 + 100))
    poller = SqsPoller(sqs, LocalFunction("router", 5, handler=lambda e, c: None), mapping)
    gathered = poller._gather([])
    # Window 0: everything available now, in receives of at most 10, up to the batch size —
    # but the payload limit stops the gathering once ten records fill it.
    assert len(gathered) == 10
    batch, carried = poller._trim(gathered + poller._gather([]))
    assert len(batch) == 10 and len(carried) == 10
    small = SqsPoller(sqs, poller.function, SqsMapping(url, arn, batch_size=3))
    assert len(small._gather([])) == 3


def test_the_batching_window_waits_for_more_records(aws: Any) -> None:
    sqs = aws("sqs")
    url, arn = _queue(sqs, "window", visibility_s=30)
    poller = SqsPoller(
        sqs,
        LocalFunction("router", 5, handler=lambda e, c: None),
        SqsMapping(url, arn, batch_size=50, batching_window_s=1),
    )
    _send(sqs, url, ["first"])
    threading.Timer(0.4, _send, args=(sqs, url, ["second", "third"])).start()
    started = time.monotonic()
    gathered = poller._gather([])
    assert sorted(m["Body"] for m in gathered) == ["first", "second", "third"]
    assert time.monotonic() - started >= 0.9


def test_running_pollers_deliver_every_message_once(aws: Any) -> None:
    sqs = aws("sqs")
    # SQS hands a message to one receiver at a time; moto's server does not under concurrent
    # ReceiveMessage calls (seen here: the same message in two pollers' batches, under load).
    # Receives are made atomic, as SQS's are; the pollers still run concurrently.
    receive, receiving = sqs.receive_message, threading.Lock()

    def atomic_receive(**kwargs: Any) -> Any:
        with receiving:
            return receive(**kwargs)

    sqs.receive_message = atomic_receive
    url, arn = _queue(sqs, "flow", visibility_s=30)
    seen: list[str] = []
    lock = threading.Lock()

    def collect(event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0
        with lock:
            seen.extend(r["body"] for r in event["Records"])
        return {"batchItemFailures": []}

    poller = SqsPoller(
        sqs,
        # A timeout no trivial handler reaches even on a loaded machine: a timed-out invocation
        # is retried (SQS is at-least-once), which is not what this test is about.
        LocalFunction("router", 25, handler=collect),
        SqsMapping(url, arn, batch_size=10, max_concurrency=3),
    )
    poller.start()
    _send(sqs, url, [f"m{i}" for i in range(40)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and poller.stats.deleted < 40:
        time.sleep(0.1)
    assert poller.stop(timeout_s=5)
    assert sorted(seen) == sorted(f"m{i}" for i in range(40))
    assert poller.stats.deleted == 40 and _depth(sqs, url) == 0
