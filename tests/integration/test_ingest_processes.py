"""A loader invocation on two processes (`ingest.processes`), through the real handler: each
process loads its own share of the inbox, every record reaches the queue once, and a helper
process that dies fails the invocation loudly while its batch is resumed like any dead
loader's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from runtime.ingest import SqsPartSender, run_checker
from runtime.ingest.processes import Share
from runtime.kill import KILLED_EXIT_CODE
from tests.support.ingest import (
    assert_exactly_once,
    client_is_tidy,
    drain,
    expire_leases,
    handler_environment,
    make_ingest,
    run_handler,
    write_corpus,
)

FILES = 24


def _everything_processed(root: Path) -> bool:
    return not any((root / "inbox").iterdir()) and not any((root / "claimed").iterdir())


@dataclass
class TwoProcessLoader:
    """An inbox, a queue, and the environment of a loader handler that runs 2 processes."""

    sqs: Any
    queue_url: str
    expected: set[str]
    env: dict[str, str]

    def arrived_once(self) -> None:
        assert_exactly_once([m["body"] for m in drain(self.sqs, self.queue_url)], self.expected)


@pytest.fixture
def loader(tmp_path: Path, redis_server: Any, moto: Any, aws: Any) -> TwoProcessLoader:
    sqs = aws("sqs")
    queue_url = sqs.create_queue(QueueName="state")["QueueUrl"]
    expected = write_corpus(tmp_path, files=FILES, records_per_file=20)
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url, processes=2, batch_max_files=4)
    return TwoProcessLoader(sqs, queue_url, expected, env)


def test_two_processes_each_load_their_share_and_every_record_arrives_once(
    tmp_path: Path, redis_client: redis.Redis, loader: TwoProcessLoader
) -> None:
    ran = run_handler(loader.env)

    assert ran.returncode == 0, ran.stderr[-2000:]
    result = orjson.loads(ran.stdout.strip().splitlines()[-1])
    own, helper = result["files_per_process"]
    assert own > 0 and helper > 0 and own + helper == result["files"] == FILES
    loader.arrived_once()
    assert _everything_processed(tmp_path) and client_is_tidy(redis_client)


def test_a_helper_that_dies_fails_the_invocation_and_its_batch_is_resumed(
    tmp_path: Path, redis_client: redis.Redis, loader: TwoProcessLoader
) -> None:
    in_helper_share = sorted(p.name for p in (tmp_path / "inbox").iterdir() if Share(1, 2).holds(p.name))

    died = run_handler(loader.env, kill_at=f"parse.file={in_helper_share[-1]}")

    assert died.returncode != 0, "a dead helper must fail the invocation"
    assert f"exited with code {KILLED_EXIT_CODE} before reporting" in died.stderr
    expire_leases(redis_client)
    run_checker(make_ingest(tmp_path, redis_client, SqsPartSender(loader.sqs, loader.queue_url)))
    assert run_handler(loader.env).returncode == 0
    loader.arrived_once()
    assert _everything_processed(tmp_path) and client_is_tidy(redis_client)
