"""Client factories with lazy defaults. Core functions take clients as parameters; handlers
call these once per execution environment, and tests pass real clients pointed at moto and a
real redis-server instead.

boto3 honours `AWS_ENDPOINT_URL`, which is how the local runtime points every client at its
moto server without any code path of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
import redis
from botocore.config import Config
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from runtime.config import RedisSettings
from runtime.errors import ConfigError

# Standard retry mode: exponential backoff with jitter on throttling and transient errors.
AWS_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    max_pool_connections=32,
    connect_timeout=5,
    read_timeout=30,
)


@functools.cache
def aws_client(service: str) -> Any:
    return boto3.session.Session().client(service, config=AWS_CLIENT_CONFIG)  # type: ignore[call-overload]


def _auth_token(secret_arn: str) -> str:
    # Imported here so that importing this module never pulls in Powertools' providers.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(secret_arn, max_age=300)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"Redis AUTH secret {secret_arn} is empty")
    return value


def make_redis(
    settings: RedisSettings, *, timeout_s: float | None = None, retries: int | None = None
) -> redis.Redis:
    """A Redis client (hiredis parser when installed) from validated settings. `timeout_s`
    overrides the connect and read timeouts, `retries` the client's retries (with a short
    backoff) after a connection error or timeout: a caller that can go on without Redis bounds
    how long an outage costs it."""
    timeout = settings.socket_timeout_s if timeout_s is None else timeout_s
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    if retries is not None:
        common["retry"] = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries)
    if settings.url:
        return redis.Redis.from_url(settings.url, **common)
    if not settings.host:
        raise ConfigError("set SLUICE_REDIS__URL or SLUICE_REDIS__HOST")
    password = _auth_token(settings.auth_secret_arn) if settings.auth_secret_arn else None
    return redis.Redis(
        host=settings.host,
        port=settings.port,
        ssl=settings.tls,
        password=password,
        **common,
    )
