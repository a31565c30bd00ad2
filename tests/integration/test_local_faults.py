"""The SQS fault proxy in front of the moto server: each fault does what it claims."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local.faults import FaultProxy, SqsFaults, fault_proxy
from local.servers import MotoServer
from runtime.clients import new_session

NO_RETRIES = Config(retries={"mode": "standard", "max_attempts": 1})


def _client(url: str, config: Config = NO_RETRIES) -> Any:
    return new_session().client("sqs", endpoint_url=url, region_name="us-east-1", config=config)


@pytest.fixture
def queue(aws: Any) -> str:
    url: str = aws("sqs").create_queue(QueueName="faulty")["QueueUrl"]
    return url


def _proxy(moto: MotoServer, **faults: float) -> Iterator[FaultProxy]:
    with fault_proxy(moto.url, SqsFaults(seed=1, **faults)) as proxy:
        yield proxy


def _entries(count: int) -> list[dict[str, str]]:
    return [{"Id": str(i), "MessageBody": f"m{i}"} for i in range(count)]


def _bodies(aws: Any, url: str) -> list[str]:
    bodies = []
    while True:
        messages = aws("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return sorted(bodies)
        bodies += [m["Body"] for m in messages]


def test_spec_parsing() -> None:
    faults = SqsFaults.parse("throttle=0.1, partial=0.5")
    assert (faults.throttle, faults.partial, faults.lost_response) == (0.1, 0.5, 0.0) and faults.active
    assert not SqsFaults.parse("").active
    with pytest.raises(ValueError, match="unknown"):
        SqsFaults.parse("explode=1")
    with pytest.raises(ValueError, match="probability"):
        SqsFaults.parse("partial=2")


def test_other_requests_pass_through(moto: MotoServer, queue: str, aws: Any) -> None:
    for proxy in _proxy(moto, throttle=1, partial=1, lost_response=1):
        sqs = _client(proxy.url)
        sqs.send_message(QueueUrl=queue, MessageBody="single")
        assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    assert _bodies(aws, queue) == ["single"]


def test_partial_failures_really_leave_the_failed_entries_unsent(
    moto: MotoServer, queue: str, aws: Any
) -> None:
    for proxy in _proxy(moto, partial=1):
        answer = _client(proxy.url).send_message_batch(QueueUrl=queue, Entries=_entries(10))
        failed = {f["Id"] for f in answer["Failed"]}
        sent = {s["Id"] for s in answer["Successful"]}
        assert failed and sent and failed | sent == {str(i) for i in range(10)} and not failed & sent
        assert proxy.stats.injected["partial_entries"] == len(failed)
    assert _bodies(aws, queue) == sorted(f"m{i}" for i in sent)


def test_throttling_sends_nothing_and_the_client_sees_request_throttled(
    moto: MotoServer, queue: str, aws: Any
) -> None:
    for proxy in _proxy(moto, throttle=1):
        with pytest.raises(ClientError) as refused:
            _client(proxy.url).send_message_batch(QueueUrl=queue, Entries=_entries(3))
        assert refused.value.response["Error"]["Code"] == "RequestThrottled"
    assert _bodies(aws, queue) == []


def test_a_lost_response_makes_the_retry_send_everything_twice(
    moto: MotoServer, queue: str, aws: Any
) -> None:
    for proxy in _proxy(moto, lost_response=1):
        retrying = _client(proxy.url, Config(retries={"mode": "standard", "max_attempts": 2}))
        with pytest.raises(ClientError):
            retrying.send_message_batch(QueueUrl=queue, Entries=_entries(2))
        attempts = proxy.stats.injected["lost_response"]
        assert attempts >= 2
    # Every attempt reached SQS: each entry is there once per attempt.
    assert _bodies(aws, queue) == sorted(["m0", "m1"] * attempts)
