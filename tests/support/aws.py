"""boto3 clients for the tests: a factory of clients pointed at one endpoint (the session's
moto server), typed so fixtures and helpers can take it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3

from runtime.clients import AWS_CLIENT_CONFIG

AwsClientFactory = Callable[[str], Any]


def client_factory(endpoint_url: str, region: str = "us-east-1") -> AwsClientFactory:
    """Makes a boto3 client for a service name, on `endpoint_url`."""

    def make(service: str) -> Any:
        return boto3.session.Session().client(
            service, endpoint_url=endpoint_url, region_name=region, config=AWS_CLIENT_CONFIG
        )

    return make
