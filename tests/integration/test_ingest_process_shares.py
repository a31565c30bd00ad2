"""Several processes per loader invocation: disjoint shares of the inbox, results merged,
every helper collected, and a helper's failure raised in the invoking process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from runtime.errors import ConfigError
from runtime.ingest import DiscardingPartSender, run_loader
from runtime.ingest.loader import LoaderResult
from runtime.ingest.processes import HelperFailed, Share, run_shares
from tests.support.ingest import forever, make_ingest

pytestmark = pytest.mark.slow

NAMES = [f"2026-11-25T13-00-{n:05d}.json" for n in range(2000)]


@pytest.mark.parametrize("count", [1, 2, 3, 6])
def test_every_name_is_in_exactly_one_share(count: int) -> None:
    shares = [Share(i, count) for i in range(count)]
    for name in NAMES:
        assert sum(share.holds(name) for share in shares) == 1
    sizes = [sum(share.holds(n) for n in NAMES) for share in shares]
    assert min(sizes) > len(NAMES) / count * 0.8, f"shares are unbalanced: {sizes}"


def test_a_share_outside_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="share 2 of 2"):
        Share(2, 2)


def test_results_combine_by_summing_what_each_process_did() -> None:
    def one(files: int, reads: int) -> LoaderResult:
        return LoaderResult({"files": files, "records": 10 * files}, reads, 1, 2, 3, 9.0, (files,))

    combined = LoaderResult.combined([one(4, 20), one(6, 30)], elapsed_s=1.5)

    assert combined.counters == {"files": 10, "records": 100}
    assert (combined.efs_read_ops, combined.efs_write_ops, combined.sqs_calls, combined.billing_units) == (
        50,
        2,
        4,
        6,
    )
    assert combined.files_per_process == (4, 6) and combined.elapsed_s == 1.5


def test_several_processes_need_a_factory_for_the_helpers(tmp_path: Path, redis_client: redis.Redis) -> None:
    ingest = make_ingest(tmp_path, redis_client, DiscardingPartSender(), processes=2)
    with pytest.raises(ConfigError, match=r"ingest\.processes is 2"):
        run_loader(ingest, forever)


# Helpers run in spawned interpreters: what they run must be importable by name.
def _pid_of(share: Share) -> tuple[int, int]:
    return share.index, os.getpid()


def _fails(share: Share) -> int:
    raise RuntimeError(f"share {share.index} broke")


def _dies(share: Share) -> int:
    os._exit(9)


def _hangs(share: Share) -> int:
    time.sleep(60)
    return share.index


def test_helpers_run_the_other_shares_in_their_own_processes() -> None:
    outcomes = run_shares(3, _pid_of, _pid_of, time.monotonic() + 60)
    assert not outcomes.failures
    assert [index for index, _ in outcomes.results] == [0, 1, 2]
    assert outcomes.results[0][1] == os.getpid()
    assert len({pid for _, pid in outcomes.results}) == 3


@pytest.mark.parametrize(
    ("helper", "message"),
    [
        (_fails, "RuntimeError: share "),
        (_dies, "exited with code 9 before reporting"),
        (_hangs, "had not finished by its deadline; killed"),
    ],
)
def test_a_helper_that_fails_dies_or_hangs_is_reported_with_what_did_get_done(
    helper: object, message: str
) -> None:
    started = time.monotonic()
    outcomes = run_shares(3, _pid_of, helper, started + 3)  # type: ignore[arg-type]

    assert outcomes.results == [(0, os.getpid())], "this process's own share still counts"
    assert len(outcomes.failures) == 2 and all(message in str(f) for f in outcomes.failures)
    with pytest.raises(HelperFailed, match=message):
        outcomes.raise_failures()
    assert time.monotonic() - started < 3 + 5, "a hung helper is killed soon after the deadline"


def test_a_failure_in_this_process_is_raised_once_the_helpers_are_collected() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="share 0 broke"):
        run_shares(2, _fails, _hangs, started + 2)
    assert 2 <= time.monotonic() - started < 2 + 5, "the helper was waited for, then killed"
