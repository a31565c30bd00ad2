"""The Redis AUTH token follows a rotation of its secret without a new client (issue 21).

A real redis-server with a password (its own process: the session's server has none) and the
secret in moto's Secrets Manager (`mock_aws`). Redis's ACL stands in for ElastiCache's rotation:
`ACL SETUSER default >new` makes both tokens valid (ROTATE), `<old` then drops the old one
(SET); `CONFIG SET requirepass` swaps the token at once. `ACL LOG` counts refused AUTHs, so the
tests see which token a connection tried first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from moto import mock_aws

from local.servers import RedisServer, running_redis
from runtime import clients
from runtime.clients import AUTH_TOKEN_MAX_AGE_S, SecretsManagerToken, make_redis
from runtime.config import RedisSettings
from runtime.errors import ConfigError
from tests.support.aws import mock_client

OLD = "old-token-0123456789abcdef"
NEW = "new-token-fedcba9876543210"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rotation:
    server: RedisServer
    admin: redis.Redis  # authenticated before any rotation; Redis keeps it authenticated
    secrets: Any  # a boto3 Secrets Manager client
    secret_arn: str
    clock: Clock

    def settings(self) -> RedisSettings:
        return RedisSettings(
            host="127.0.0.1", port=self.server.port, tls=False, auth_secret_arn=self.secret_arn
        )

    def store(self, token: str) -> None:
        self.secrets.put_secret_value(SecretId=self.secret_arn, SecretString=token)

    def acl(self, *arguments: str) -> None:
        self.admin.execute_command("ACL", *arguments)

    def refused_auths(self) -> int:
        return sum(1 for entry in self.admin.acl_log() if entry["reason"] == "auth")


@pytest.fixture
def rotation(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rotation]:
    clock = Clock()
    # Every token make_redis builds reads this test's clock.
    monkeypatch.setattr(clients, "SecretsManagerToken", functools.partial(SecretsManagerToken, clock=clock))
    with running_redis() as server, mock_aws():
        clients.aws_client.cache_clear()  # a client cached by another test may point elsewhere
        admin = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
        admin.config_set("requirepass", OLD)
        admin.acl_log_reset()
        secrets = mock_client("secretsmanager")
        arn = secrets.create_secret(Name="sluice/redis-auth", SecretString=OLD)["ARN"]
        try:
            yield Rotation(server, admin, secrets, arn, clock)
        finally:
            admin.close()
            clients.aws_client.cache_clear()


def fresh_connection_pings(client: redis.Redis) -> bool:
    """A new connection from the client's pool (the old ones are closed first)."""
    client.connection_pool.disconnect()
    return bool(client.ping())


def test_a_new_connection_authenticates_with_the_rotated_token_after_the_cache_age(
    rotation: Rotation,
) -> None:
    client = make_redis(rotation.settings())
    assert fresh_connection_pings(client)

    rotation.acl("SETUSER", "default", f">{NEW}")  # ROTATE: both accepted
    rotation.store(NEW)
    rotation.clock.now += AUTH_TOKEN_MAX_AGE_S  # the runbook's wait
    rotation.acl("SETUSER", "default", f"<{OLD}")  # SET: only the new one

    assert fresh_connection_pings(client)
    assert rotation.refused_auths() == 0  # the first AUTH already carried the new token
    client.close()


def test_the_old_token_is_not_used_beyond_the_cache_age() -> None:
    clock = Clock()
    with mock_aws():
        secrets = mock_client("secretsmanager")
        arn = secrets.create_secret(Name="sluice/redis-auth", SecretString=OLD)["ARN"]
        token = SecretsManagerToken(arn, secrets, max_age_s=300, clock=clock)
        assert token.get_credentials() == (OLD,)
        secrets.put_secret_value(SecretId=arn, SecretString=NEW)

        clock.now += 299.9
        assert token.get_credentials() == (OLD,)  # cached: one read per max age, not per connection
        clock.now += 0.1
        assert token.get_credentials() == (NEW,)


def test_a_refused_token_is_read_again_once_and_the_connection_retried(rotation: Rotation) -> None:
    """Redis stopped accepting the cached token before the cache expired (SET too early, or the
    token swapped at once): the connection re-reads the secret and authenticates."""
    client = make_redis(rotation.settings())
    assert fresh_connection_pings(client)

    rotation.store(NEW)
    rotation.admin.config_set("requirepass", NEW)

    assert fresh_connection_pings(client)
    assert rotation.refused_auths() == 1  # the cached old token, once
    client.close()


def test_a_token_refused_again_after_the_fresh_read_fails_the_connection(rotation: Rotation) -> None:
    """The secret still holds a token Redis refuses (stored before ROTATE, say): no retry with
    the same token, the caller sees the authentication error."""
    client = make_redis(rotation.settings(), retries=0)
    rotation.admin.config_set("requirepass", NEW)

    with pytest.raises(redis.AuthenticationError):
        fresh_connection_pings(client)
    assert rotation.refused_auths() == 1
    client.close()


def test_an_empty_secret_fails_where_the_client_is_built(rotation: Rotation) -> None:
    # A binary secret has no SecretString: nothing to authenticate with.
    rotation.secrets.put_secret_value(SecretId=rotation.secret_arn, SecretBinary=b"token")
    with pytest.raises(ConfigError, match="is empty"):
        make_redis(rotation.settings())


def test_an_unreadable_secret_is_a_redis_connection_error() -> None:
    """Secrets Manager out of reach when the cache expires: the connection fails as Redis being
    unreachable does, which callers that go on without Redis already handle."""
    clock = Clock()
    with mock_aws():
        secrets = mock_client("secretsmanager")
        arn = secrets.create_secret(Name="sluice/redis-auth", SecretString=OLD)["ARN"]
        token = SecretsManagerToken(arn, secrets, clock=clock)
        assert token.get_credentials() == (OLD,)
        secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        clock.now += AUTH_TOKEN_MAX_AGE_S
        with pytest.raises(redis.ConnectionError, match="cannot read the Redis AUTH secret"):
            token.get_credentials()
