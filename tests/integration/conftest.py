"""Fixtures the ingest integration tests share: an SQS client on the moto server and a standard
queue named `state` on it."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def sqs(aws: Any) -> Any:
    return aws("sqs")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return sqs.create_queue(QueueName="state")["QueueUrl"]  # type: ignore[no-any-return]
