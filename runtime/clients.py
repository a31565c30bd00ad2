"""Client factories with lazy defaults. Core functions take clients as parameters; handlers
call these once per execution environment, and tests pass real clients pointed at moto and a
real redis-server instead.

boto3 honours `AWS_ENDPOINT_URL`, which is how the local runtime points every client at its
moto server without any code path of its own.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from redis.backoff import ExponentialBackoff
from redis.connection import AbstractConnection
from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
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


class _SearchPaths(list[str]):
    """boto3 appends its own data directory to the loader of every Session it makes: a loader
    shared by many Sessions keeps one copy of each path."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


# Every client gets a Session of its own (a boto3 Session is not thread-safe; its clients are),
# but a new Session would read and parse the service models' JSON again: ~100 ms of CPU per
# client, which the local runtime and the tests pay over and over. The models are read-only
# data, so all of this process's Sessions share one loader (~15 ms per client). It reads botocore's
# and boto3's own data only (no `AWS_DATA_PATH`: sluice ships no model of its own).
_SERVICE_MODELS = botocore.loaders.Loader(extra_search_paths=_SearchPaths())


def new_session(**kwargs: Any) -> boto3.session.Session:
    """A boto3 Session of its own (`kwargs` as for `boto3.session.Session`) on the shared models."""
    core = botocore.session.Session()
    core.register_component("data_loader", _SERVICE_MODELS)
    return boto3.session.Session(botocore_session=core, **kwargs)


@functools.cache
def aws_client(service: str) -> Any:
    return new_session().client(service, config=AWS_CLIENT_CONFIG)  # type: ignore[call-overload]


# How long a read of the Redis AUTH token is trusted. Each new connection authenticates with the
# cached token, so after the secret changes every new connection uses the new token within this
# many seconds; the AUTH rotation runbook (docs/operations.md#rotating-the-redis-auth-token) waits
# at least this long between storing the new token and making Redis refuse the old one.
AUTH_TOKEN_MAX_AGE_S = 300.0


class SecretsManagerToken(CredentialProvider):
    """The Redis AUTH token from a Secrets Manager secret (a plain string), re-read once the
    cached value is older than `max_age_s`. redis-py calls `get_credentials` for every new
    connection (reconnects included), so a long-lived client follows a rotation of the secret.
    Shared by every connection of a client's pool, hence the lock."""

    def __init__(
        self,
        secret_arn: str,
        secrets: Any,
        *,
        max_age_s: float = AUTH_TOKEN_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret_arn = secret_arn
        self._secrets = secrets
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._read_at = 0.0

    def get_credentials(self) -> tuple[str]:
        with self._lock:
            token = self._token
            if token is None or self._clock() - self._read_at >= self._max_age_s:
                token = self._read()
            return (token,)

    def refresh(self) -> bool:
        """Read the secret now, whatever the cache's age; True when the token changed."""
        with self._lock:
            before = self._token
            self._read()
            return self._token != before

    def _read(self) -> str:
        try:
            value = self._secrets.get_secret_value(SecretId=self._secret_arn).get("SecretString")
        except (BotoCoreError, ClientError) as exc:
            # Raised while a connection is set up: to its caller Redis is unreachable, and code
            # that goes on without Redis (or redis-py's retry) handles it as such.
            raise RedisConnectionError(
                f"cannot read the Redis AUTH secret {self._secret_arn}: {exc}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise ConfigError(f"Redis AUTH secret {self._secret_arn} is empty")
        self._token, self._read_at = value, self._clock()
        return value


def _authenticate_with_refresh(token: SecretsManagerToken) -> Callable[[AbstractConnection], None]:
    """The connection set-up (AUTH, then redis-py's usual handshake), retried once with a fresh
    read of the secret when Redis refuses the cached token: Redis stopped accepting it (the
    rotation's SET) before the cache expired, and the secret already holds the new one."""

    def on_connect(connection: AbstractConnection) -> None:
        try:
            connection.on_connect()
        except AuthenticationError:
            if not token.refresh():
                raise
            connection.on_connect()

    return on_connect


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
    if settings.auth_secret_arn:
        token = SecretsManagerToken(settings.auth_secret_arn, aws_client("secretsmanager"))
        # Read now, so that a missing or empty secret fails where the client is built.
        token.get_credentials()
        common["credential_provider"] = token
        common["redis_connect_func"] = _authenticate_with_refresh(token)
    return redis.Redis(host=settings.host, port=settings.port, ssl=settings.tls, **common)
