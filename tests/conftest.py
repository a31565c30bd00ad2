"""Shared fixtures: a real redis-server and a moto server, each a plain process on a free
loopback port (started once per session), and clients pointed at them.

Unit tests may instead use moto's in-process `mock_aws`; anything that exercises Redis talks
to the real server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from local.environment import AwsClients
from local.moto_server import check_moto_version, patch_blocked_fifo_long_poll
from local.servers import FAKE_AWS_ENVIRONMENT, MotoServer, RedisServer, running_moto, running_redis
from tests.support.aws import AwsClientFactory

# Never let a test reach a real AWS account, whatever the developer's shell has configured.
for _name, _value in FAKE_AWS_ENVIRONMENT.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "sluice-tests")
os.environ.setdefault("POWERTOOLS_DEV", "false")
# jsii (CDK) prints a Node end-of-life banner on Node 20; the Makefile sets the same.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# moto's in-process `mock_aws` gets the fix the moto server has (local/moto_server.py): a FIFO long
# poll behind an in-flight group waits instead of spinning this process's core.
check_moto_version()
patch_blocked_fifo_long_poll()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an empty database (flushed before and after each test)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> Iterator[MotoServer]:
    """The session's moto server, reset to empty for this test."""
    moto_server.reset()
    yield moto_server


@pytest.fixture
def aws(moto: MotoServer) -> AwsClientFactory:
    """boto3 clients pointed at the moto server, one per service."""
    return AwsClients(moto.url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files marked `slow` first: pytest-xdist hands files to its workers in this order, so
    the longest start early rather than finishing the run alone on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
