"""End to end through `python -m local`: the writer simulator, the real loader, checker and
router, a real redis-server and a moto server; each run must deliver every record written to
the sink exactly once (the runtime's own check, and these tests' reading of its summary).

Each test is one short run in a child process (a few seconds of writing at a modest rate, small
messages so a few hundred records span many parts; two tests read the same run). Faults are
real: a loader process killed at a named step, Redis restarted under the run, a router that
fails items at random.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from local.servers import RedisServer, running_redis
from runtime.ingest.coord import PROCESSING

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small parts (many messages per batch), short writing, every scheduled function ticking fast.
FAST = [
    "--no-live",
    "--duration", "2",
    "--rate", "300",
    "--records-per-file", "10",
    "--record-bytes", "300",
    "--timeout", "60",
    "--set", "queues.max_message_bytes=8192",
    # A router run that fails whole comes back after the visibility timeout (6 x timeout_s):
    # keep it well inside the run's --timeout.
    "--set", "pipeline.timeout_s=3",
    "--schedule", "loader=300ms",
    "--schedule", "checker=500ms",
    # Locally, a function's concurrent invocations are threads of one process sharing one GIL
    # (on AWS, each has its sandbox): ten routers at once stretch each past the 3 s above, and
    # every timed-out batch then waits out its visibility timeout before the run can end.
    "--concurrency", "router=4",
]  # fmt: skip
GOOD_CODES = {
    "empty",
    "no_json",
    "invalid_json",
    "invalid_encoding",
    "not_records",
    "record_too_large",
    "not_regular_file",
}


class Run:
    """One `python -m local` child process and, once it ended, its summary."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.summary_path = tmp_path / "summary.json"
        self.log_path = tmp_path / "functions.log"
        command = [
            sys.executable, "-m", "local", *FAST, *args,
            "--json", str(self.summary_path), "--log", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for_line(self, fragment: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        with self._seen:
            while True:
                for line in self.lines:
                    if fragment in line:
                        return line
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"no line with {fragment!r}:\n{''.join(self.lines)}")
                self._seen.wait(0.2)

    def finish(self, timeout_s: float = 150) -> dict[str, Any]:
        self.process.wait(timeout_s)
        self._reader.join(5)
        output = "".join(self.lines)
        assert self.summary_path.exists(), output
        summary: dict[str, Any] = orjson.loads(self.summary_path.read_bytes())
        summary["_returncode"] = self.process.returncode
        summary["_output"] = output
        return summary


def assert_exactly_once(summary: dict[str, Any]) -> None:
    context = summary["_output"]
    assert summary["records_written"] > 0, context
    assert summary["lost"] == 0, context
    assert summary["duplicates"] == 0, context
    assert summary["unexpected_records"] == 0, context
    assert summary["records_delivered"] == summary["records_written"], context
    assert summary["pending_files"] == [] and summary["problems"] == [], context
    assert summary["dead_letters"] == 0 and summary["halted_batches"] == 0, context
    assert summary["ok"] is True and summary["_returncode"] == 0, context


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    with running_redis(appendonly=True) as server:
        yield server


@pytest.fixture(scope="module")
def racing_run_with_bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run serves two tests: three loaders racing on one inbox (a new one every 100 ms, three
    files a batch) while the writer puts a bad file beside two in five good ones."""
    return Run(
        tmp_path_factory.mktemp("racing"),
        "--concurrency", "loader=3",
        "--schedule", "loader=100ms",
        "--set", "ingest.batch_max_files=3",
        "--bad-share", "0.4",
        "--seed", "11",
    ).finish()  # fmt: skip


def test_every_record_reaches_the_sink_once_and_bad_files_are_rejected_with_reasons(
    racing_run_with_bad_files: dict[str, Any],
) -> None:
    summary = racing_run_with_bad_files
    assert_exactly_once(summary)
    rejected = summary["rejected_files"]
    assert len(rejected) >= 3, summary["_output"]
    for entry in rejected:
        assert entry["code"] in GOOD_CODES
        assert entry["path"].startswith("rejected/")
    # The loader said it sent what the sink holds, and the router routed it all.
    assert summary["invocations"]["loader"]["reported"]["records"] == summary["records_written"]
    assert summary["invocations"]["router"]["invocations"] > 0


def test_loaders_racing_on_one_inbox_send_each_record_once(racing_run_with_bad_files: dict[str, Any]) -> None:
    summary = racing_run_with_bad_files
    assert_exactly_once(summary)
    assert summary["invocations"]["loader"]["reported"]["batches_committed"] >= 5


def _expire_leases(redis_url: str) -> int:
    """What the checker would see once the lease length has passed
    (docs/architecture.md#testing-the-protocols: expire a lease by rewriting its score, never
    by waiting)."""
    client = redis.Redis.from_url(redis_url)
    try:
        leases = client.zrange(PROCESSING, 0, -1)
        for batch in leases:
            client.zadd(PROCESSING, {batch: 1}, xx=True)
        return len(leases)
    finally:
        client.close()


# The ingest suite kills the loader at every step in isolation; this one kills it where the
# whole system is at stake: a part SQS took but the loader never acknowledged is re-sent under
# its own id, and the router must turn the second delivery into nothing.
@pytest.mark.parametrize("step", ["part.sent"])
def test_a_loader_killed_mid_batch_is_resumed_once_its_lease_expires(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis, step: str
) -> None:
    run = Run(
        tmp_path,
        "--redis-url", redis_server.url,
        "--kill-at", f"loader:{step}",
        "--concurrency", "loader=1",
        "--bad-share", "0",
    )  # fmt: skip
    run.wait_for_line("failed: process exited with 137")
    # The killed process's lease is the only one: the next loader starts a tick later.
    assert _expire_leases(redis_server.url) == 1
    summary = run.finish()
    assert_exactly_once(summary)
    loader = summary["invocations"]["loader"]
    assert loader["errors"] == 1
    assert loader["reported"]["batches_resumed"] >= 1
    if step == "part.sent":
        # The part that was sent but never acknowledged went again, under its own id; the
        # router's ledger made the second delivery a no-op.
        assert loader["reported"]["parts_resent"] >= 1


@pytest.mark.parametrize("keep_data", [True, False], ids=["aof", "empty"])
def test_redis_restarted_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, aof_redis: RedisServer, keep_data: bool
) -> None:
    """Restarted with its AOF, or empty (as ElastiCache comes back). Empty, Redis forgets every
    lease and ack set: the bound on re-sends is the recorded parts of the batches still in
    `claimed/` at that moment (docs/ingest.md#5-resume), each under its own id, which the router's ledger
    recognises — never a duplicate at the sink."""
    run = Run(tmp_path, "--redis-url", aof_redis.url, "--duration", "4", "--bad-share", "0")
    run.wait_for_line("writing", timeout_s=30)  # the first progress line: ~2 s into writing
    aof_redis.restart(keep_data=keep_data)
    summary = run.finish()
    assert_exactly_once(summary)
    loader = summary["invocations"]["loader"]["reported"]
    assert loader["parts_resent"] <= loader["parts"]


def flaky_router(state: Any) -> Any:
    """The enrich-and-store demo, failing a tenth of its calls: a transient fault that the
    framework retries (new envelopes with attempt + 1) and that the plan pins once written."""
    import random

    from runtime.examples.enrich import router

    if random.random() < 0.1:
        raise RuntimeError("the downstream service hiccuped")
    return router(state)


def test_a_router_failing_intermittently_still_delivers_each_record_once(tmp_path: Path) -> None:
    summary = Run(
        tmp_path,
        "--set", "pipeline.router=tests.integration.test_local_run:flaky_router",
        # At 10 % per call, 10 attempts leave a record in the DLQ with odds of 1e-10.
        "--set", "pipeline.max_attempts=10",
        "--bad-share", "0",
    ).finish()  # fmt: skip
    assert_exactly_once(summary)


def test_sqs_throttling_partial_failures_and_lost_answers_still_deliver_each_record_once(
    tmp_path: Path,
) -> None:
    """The loader's and the router's SendMessageBatch calls throttled, partly failed, or
    answered with an error after SQS took every entry (so the retry sends duplicates)."""
    summary = Run(
        tmp_path,
        "--sqs-faults", "throttle=0.1,partial=0.5,lost_response=0.1",
        "--seed", "5",
        "--bad-share", "0",
    ).finish()  # fmt: skip
    assert_exactly_once(summary)
    injected = summary["sqs_faults_injected"]
    # Which calls draw which fault depends on thread timing; each fault's effect is proven on
    # its own in tests/integration/test_local_faults.py. Here: faults of several kinds did happen.
    assert len(injected) >= 2 and sum(injected.values()) >= 3, injected


@pytest.mark.timeout(180)
def test_every_system_in_one_run_delivers_each_record_once(tmp_path: Path) -> None:
    """ingest → FIFO state queue → FIFO router → S3; HTTP POST /messages → state queue → router
    → S3; and DynamoDB INSERTs → stream → relay → relay FIFO → drain → the API stub: every
    record, request and inserted item arrives once."""
    summary = Run(
        tmp_path,
        "--systems", "ingest,fifo,pipeline,relay,gateway",
        "--set", "ingest.target=fifo",
        "--relay-rate", "3",
        "--gateway-rate", "5",
        "--schedule", "drain=300ms",
        "--bad-share", "0",
        # Five systems share two cores and one moto server here: a router batch can take more
        # than FAST's 3 s, and a FIFO batch that times out holds its group for 6 x timeout_s.
        "--set", "pipeline.timeout_s=10",
        "--timeout", "100",
    ).finish()  # fmt: skip
    assert_exactly_once(summary)
    loaded = summary["invocations"]["loader"]["reported"]["records"]
    relayed = summary["invocations"]["drain"]["reported"]["delivered"]
    # The drain says it delivered each insert once; the rest came through the HTTP API.
    assert relayed >= 4
    assert summary["records_written"] - loaded - relayed >= 8
    assert summary["invocations"]["fifo-router"]["invocations"] > 0


def test_ctrl_c_stops_the_run_and_tears_everything_down(tmp_path: Path) -> None:
    run = Run(tmp_path, "--duration", "60", "--bad-share", "0")
    first = run.wait_for_line("sluice local:")
    run.wait_for_line("writing")
    run.process.send_signal(signal.SIGINT)
    run.process.wait(60)
    output = "".join(run.lines)
    assert run.process.returncode == 130, output
    assert "summary" in output
    ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", first)]
    share = Path(re.search(r"share (\S+?);", first).group(1))  # type: ignore[union-attr]
    assert len(ports) == 2
    for port in ports:  # redis-server and the moto server are gone
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    assert not share.exists()
