"""The unit tier runs offline: no redis-server, no moto server (in-process `mock_aws` is fine);
a unit test that asks for one fails at once, pointing at tests/integration. Stages for the
template tests are built once per session (synth is the slow part) and only read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import pytest

from local.servers import MotoServer, RedisServer
from stacks.stage import SluiceStage
from tests.support.stacks import build_stage

OFFLINE = "the unit tier runs without servers: a test that starts {} belongs in tests/integration"


def _refuse(what: str) -> NoReturn:
    pytest.fail(OFFLINE.format(what), pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> NoReturn:
    _refuse("redis-server")


@pytest.fixture(scope="session")
def moto_server() -> NoReturn:
    _refuse("a moto server")


@pytest.fixture(autouse=True)
def _no_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Also refuses servers started directly (`running_redis()`, `RedisServer(...).start()`)."""
    monkeypatch.setattr(RedisServer, "start", lambda self: _refuse("redis-server"))
    monkeypatch.setattr(MotoServer, "start", lambda self: _refuse("a moto server"))
    yield


@pytest.fixture(scope="session")
def dev() -> SluiceStage:
    return build_stage("dev")


@pytest.fixture(scope="session")
def prod() -> SluiceStage:
    return build_stage("prod")
