"""boto3 clients for the tests: the type of a factory of clients (the `aws` fixture's is the local
runtime's `AwsClients`, on the session's moto server), and clients for moto's in-process
`mock_aws`. Both come from `runtime.clients.new_session` (the shared service models: a client
costs ~15 ms of CPU, not ~100 ms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.clients import new_session

AwsClientFactory = Callable[[str], Any]
REGION = "us-east-1"


def mock_client(service: str, **kwargs: Any) -> Any:
    """A new client for moto's in-process `mock_aws` (botocore's default configuration, as
    `boto3.client` gives)."""
    return new_session().client(service, region_name=REGION, **kwargs)
