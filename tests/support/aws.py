"""boto3 clients for the tests: a factory of clients pointed at one endpoint (the session's
moto server), typed so fixtures and helpers can take it, and clients for moto's in-process
`mock_aws`. Both come from `runtime.clients.new_session` (the shared service models: a client
costs ~15 ms of CPU, not ~100 ms)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from runtime.clients import AWS_CLIENT_CONFIG, new_session

AwsClientFactory = Callable[[str], Any]
REGION = "us-east-1"


def client_factory(endpoint_url: str, region: str = REGION) -> AwsClientFactory:
    """Makes the boto3 client of a service, on `endpoint_url`: one per service (boto3 clients
    are thread-safe; their Session is not, hence the lock)."""
    session = new_session()
    lock = threading.Lock()

    @functools.cache
    def make(service: str) -> Any:
        with lock:
            return session.client(
                service, endpoint_url=endpoint_url, region_name=region, config=AWS_CLIENT_CONFIG
            )

    return make


def mock_client(service: str, **kwargs: Any) -> Any:
    """A new client for moto's in-process `mock_aws` (botocore's default configuration, as
    `boto3.client` gives)."""
    return new_session().client(service, region_name=REGION, **kwargs)
