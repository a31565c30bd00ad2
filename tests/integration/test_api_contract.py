"""The HTTP API's contract (api/openapi.json) fuzzed by schemathesis against the local gateway:
the local HTTP API (the SQS integration emulated, the real jobs handler) on the moto server and
a real redis-server. No 5xx, every response conforms to the document (status, headers, content
type, schema: every sluice-made 4xx has `error` and `detail`). Bounded: a few dozen examples."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from local.http import OPENAPI_DOCUMENT, OPENAPI_ROUTE, LocalHttpApi
from local.servers import RedisServer
from tests.support.jobs import Jobs, serve
from tests.support.pipeline import Harness

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def api(aws: Any, redis_client: redis.Redis, redis_server: RedisServer) -> Iterator[LocalHttpApi]:
    jobs = Jobs.create(Harness.create(aws, redis_client, redis_server.url), wait_s=0.2)
    with serve(jobs) as server:
        yield server


def test_the_local_runtime_serves_the_contract(api: LocalHttpApi) -> None:
    with urllib.request.urlopen(f"{api.url}{OPENAPI_ROUTE}", timeout=10) as answer:
        served = orjson.loads(answer.read())
    assert served == orjson.loads(OPENAPI_DOCUMENT.read_bytes())
    assert set(served["paths"]) == {"/messages", "/jobs", "/jobs/{id}"}


def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    api: LocalHttpApi, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{api.url}{OPENAPI_ROUTE}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        "10",
        "--seed",
        "24",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "30",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=tmp_path,  # its replay store (.schemathesis/) stays out of the tree
        check=False,
    )
    print(run.stdout[run.stdout.rfind("SUMMARY") - 40 :])  # the run's summary, for the report (-s)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
