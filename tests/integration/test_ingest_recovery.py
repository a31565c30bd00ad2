"""Recovery (issue 10): kill -9 at every step then resume, the same with Redis flushed, stale
loaders fenced out, a changed body halting, ENOENT after a successful rename, and a file that
kills the loader. Crashes are real: the handler runs in a subprocess that `_exit`s at a named
step (SLUICE_KILL_AT). Exactly once is checked on the queue itself."""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from runtime import codec
from runtime.errors import EnvironmentFailure, LeaseLost
from runtime.ingest import Fs, SqsPartSender, run_checker, run_loader
from runtime.ingest import coord as keys
from runtime.ingest.batch import BatchRun
from runtime.ingest.claim import claim_selected
from runtime.ingest.coord import new_owner_token
from runtime.ingest.header import publish_header
from runtime.ingest.layout import new_batch_id
from runtime.ingest.loader import halt_batch, resume
from runtime.ingest.model import Ingest, PartRecord
from runtime.ingest.selection import InboxListing, select_settled
from runtime.kill import KILLED_EXIT_CODE
from tests.support.ingest import (
    client_is_tidy,
    drain,
    expire_leases,
    forever,
    handler_environment,
    make_ingest,
    reasons,
    record,
    run_handler,
    write_corpus,
    write_file,
)

pytestmark = pytest.mark.slow

BAD_FILE = "2026-11-25T13-00003-bad.json"  # sorts among the good ones: rejected mid-batch
# Issue 22's poison for the kill-point matrix: a 255-byte name (its reason file's name is
# derived, shortened) holding an integer that cannot travel exactly.
POISON = "2026-11-25T13-00005-" + "p" * 230 + ".json"


def corpus(root: Path) -> set[str]:
    expected = write_corpus(root, files=8, records_per_file=25)
    write_file(root, BAD_FILE, b'# junk\n{"a": tru}')
    return expected


def age_claimed(root: Path, seconds: float) -> None:
    """Make every claimed batch look quiet for `seconds` (its directories' mtimes)."""
    stamp = time.time() - seconds
    for directory in (root / "claimed").glob("*"):
        for path in (directory, directory / ".parts"):
            if path.exists():
                os.utime(path, (stamp, stamp))


def recorded_parts(root: Path) -> dict[str, PartRecord]:
    out = {}
    for path in root.glob("*/*/.parts/*.json"):
        part = PartRecord.from_json(path.read_bytes())
        out[part.id] = part
    return out


def assert_exactly_once_by_envelope(root: Path, bodies: list[bytes], expected: set[str]) -> int:
    """Every record in exactly one envelope id; every envelope id carries one body, the one
    recorded in its part file. Returns how many re-sends (same id, same body) arrived."""
    records = recorded_parts(root)
    by_id: dict[str, set[bytes]] = defaultdict(set)
    copies = 0
    for body in bodies:
        envelope_id = orjson.loads(body)["id"]
        copies += envelope_id in by_id
        by_id[envelope_id].add(body)
    owner: dict[str, str] = {}
    for envelope_id, variants in by_id.items():
        assert len(variants) == 1, f"{envelope_id} carried {len(variants)} different bodies"
        [body] = variants
        assert envelope_id in records, f"{envelope_id} was sent without a part record"
        assert records[envelope_id].sha256 == hashlib.sha256(body).hexdigest()
        for item in codec.decode(body).items:
            assert owner.setdefault(item.id, envelope_id) == envelope_id, f"{item.id} in two parts"
    missing = expected - set(owner)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:3]}"
    assert set(owner) == expected
    return copies


def recover(root: Path, client: redis.Redis, sqs: Any, queue_url: str, *, redis_lost: bool) -> Ingest:
    """What the schedule does after a crash: the checker hands the batch back, a loader runs."""
    ingest = make_ingest(root, client, SqsPartSender(sqs, queue_url))
    if redis_lost:
        client.flushall()
        age_claimed(root, ingest.settings.lease_s + 1)
    else:
        expire_leases(client)
    run_checker(ingest)
    run_loader(ingest, forever)
    return ingest


KILL_STEPS = [
    "claim.mid",
    "header.before",
    "reject.before_link",
    "link.before_unlink",
    "part.published",
    "part.sent",
    "commit.before_rename",
    "commit.after_rename",
]


@pytest.mark.parametrize("redis_lost", [False, True], ids=["redis-kept", "redis-flushed"])
@pytest.mark.parametrize("step", KILL_STEPS)
def test_kill_at_each_step_then_resume(
    tmp_path: Path,
    redis_client: redis.Redis,
    redis_server: Any,
    moto: Any,
    sqs: Any,
    queue_url: str,
    step: str,
    redis_lost: bool,
) -> None:
    expected = corpus(tmp_path)
    write_file(tmp_path, POISON, b'{"id": 123456789012345678901234567890}')
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url, read_threads=2)

    crashed = run_handler(env, kill_at=step)
    assert crashed.returncode == KILLED_EXIT_CODE, f"never reached {step}: {crashed.stderr[-1500:]}"

    ingest = recover(tmp_path, redis_client, sqs, queue_url, redis_lost=redis_lost)

    resent = assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    if step == "part.sent":
        assert resent > 0, "the parts sent before the kill were re-sent under their own ids"
    assert ingest.counters.batches_halted == 0
    assert not list((tmp_path / "claimed").iterdir()) and not list((tmp_path / "inbox").iterdir())
    [reason] = list((tmp_path / "rejected").glob(f"*/{BAD_FILE}.reason.json"))
    assert orjson.loads(reason.read_bytes())["code"] == "invalid_json"
    assert len(list((tmp_path / "rejected").glob(f"*/{BAD_FILE}*"))) == 2, "one file, one reason"
    assert reasons(tmp_path) == {BAD_FILE: "invalid_json", POISON: "number_out_of_range"}
    assert len(list((tmp_path / "rejected").glob("*/*"))) == 4, "one reason each, nothing else"
    assert client_is_tidy(redis_client)


def _claim(ingest: Ingest, token: str) -> Any:
    ingest.ensure_layout()
    selection = select_settled(ingest, None, InboxListing(ingest))
    batch = new_batch_id()
    claimed = claim_selected(ingest, batch, token, None, selection)
    return publish_header(ingest, batch, None, selection.settled, claimed)


def test_a_stale_loader_cannot_ack_commit_halt_or_quarantine(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    expected = write_corpus(tmp_path, files=8, records_per_file=25)
    ingest = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url))
    stale_token = new_owner_token()
    header = _claim(ingest, stale_token)
    batch = header.batch

    expire_leases(redis_client)
    run_checker(ingest)
    owner_token = new_owner_token()
    taken = ingest.coord.take_resumable(owner_token, ingest.settings.lease_s)
    assert taken is not None and taken.batch == batch

    stale = BatchRun(ingest, header, stale_token, None, forever)
    with pytest.raises(LeaseLost):
        stale.run()  # publishes and sends (same ids, same bodies), then its ack is refused
    assert redis_client.scard(keys.ACKS_PREFIX + batch) == 0
    with pytest.raises(LeaseLost):
        ingest.coord.commit(batch, stale_token)
    victim = tmp_path / "claimed" / batch / header.members[0].name
    with pytest.raises(LeaseLost):
        stale.reject(0, "invalid_json", "a stale loader's opinion")
    halt_batch(ingest, batch, stale_token, "part_mismatch", "a stale loader's opinion")
    assert victim.exists() and (tmp_path / "claimed" / batch).is_dir()
    assert not (tmp_path / "rejected").exists() or not list((tmp_path / "rejected").iterdir())
    assert not list((tmp_path / "halted").iterdir())

    resume(ingest, taken, owner_token, None, forever)  # the owner: same records, so no halt
    assert ingest.counters.batches_halted == 0 and ingest.counters.batches_committed == 1
    assert ingest.counters.parts_resent > 0
    resent = assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    assert resent == ingest.counters.parts_resent, "every part the stale loader sent went again, same body"


def test_a_changed_body_halts_the_batch(
    tmp_path: Path,
    redis_client: redis.Redis,
    redis_server: Any,
    moto: Any,
    sqs: Any,
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    corpus(tmp_path)
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url)
    assert run_handler(env, kill_at="part.published").returncode == KILLED_EXIT_CODE

    real_encoder = codec.ItemEncoder
    monkeypatch.setattr(codec, "ItemEncoder", lambda: real_encoder(step=0, attempt=1))  # "a deploy"
    ingest = recover(tmp_path, redis_client, sqs, queue_url, redis_lost=False)

    assert ingest.counters.batches_halted == 1
    [halted] = list((tmp_path / "halted").iterdir())
    assert orjson.loads((halted / ".halted.json").read_bytes())["reason"] == "part_mismatch"
    assert drain(sqs, queue_url) == [], "no different body was ever sent under a recorded id"
    assert redis_client.zscore(keys.HALTED, halted.name) is not None
    assert client_is_tidy(redis_client)


class EnoentAfterRename(Fs):
    """Every rename succeeds and then answers ENOENT, as a retried EFS rename can."""

    def rename(self, source: str, target: str) -> None:
        super().rename(source, target)
        raise FileNotFoundError(2, "No such file or directory", source)


def test_enoent_after_a_successful_rename_loses_nothing(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    expected = corpus(tmp_path)
    late = write_file(
        tmp_path, "z-late.json", orjson.dumps(record(7, 0)), age_s=-60
    )  # fresh however slow the machine

    class AlsoAStaleClaim(EnoentAfterRename):
        def write_once(self, path: str, data: bytes) -> bool:
            published = super().write_once(path, data)
            if path.endswith(".header.json") and late.exists():
                os.rename(late, Path(path).parent / late.name)
            return published

    ingest = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), fs=AlsoAStaleClaim())
    run_loader(ingest, forever)

    assert ingest.counters.batches_committed == 1 and ingest.counters.vanished_files == 0
    assert ingest.counters.returned_to_inbox == 1 and (tmp_path / "inbox" / "z-late.json").exists()
    assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    assert client_is_tidy(redis_client)


def test_a_file_that_kills_the_loader_is_quarantined_as_crash(
    tmp_path: Path, redis_client: redis.Redis, redis_server: Any, moto: Any, sqs: Any, queue_url: str
) -> None:
    expected = corpus(tmp_path)
    poison = "2026-11-25T13-00005-poison.json"
    write_file(tmp_path, poison, orjson.dumps([record(99, i) for i in range(3)]))
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url, max_crash_runs=1)
    ingest = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), max_crash_runs=1)

    for run in range(2):  # a normal run dies; then a crash-isolation run dies on the same file
        died = run_handler(env, kill_at=f"parse.file={poison}")
        assert died.returncode == KILLED_EXIT_CODE, f"run {run}: {died.stderr[-1500:]}"
        expire_leases(redis_client)
        run_checker(ingest)
    cursor = redis_client.hget(keys.CURSORS, redis_client.zrange(keys.RESUMABLE, 0, 0)[0])
    assert cursor is not None, "the crash-isolation run recorded the file it was on"

    finished = run_handler(env, kill_at=f"parse.file={poison}")
    assert finished.returncode == 0, finished.stderr[-1500:]

    assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    [reason] = list((tmp_path / "rejected").glob(f"*/{poison}.reason.json"))
    assert orjson.loads(reason.read_bytes())["code"] == "crash"
    assert client_is_tidy(redis_client) and redis_client.hlen(keys.CURSORS) == 0


def test_checker_halts_a_batch_past_the_resend_horizon(
    tmp_path: Path, redis_client: redis.Redis, redis_server: Any, moto: Any, sqs: Any, queue_url: str
) -> None:
    corpus(tmp_path)
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url)
    assert run_handler(env, kill_at="part.sent").returncode == KILLED_EXIT_CODE
    [claimed] = list((tmp_path / "claimed").iterdir())
    old_batch = "20200101T000000.000Z-0000abcd"  # claimed long ago, by its id
    claimed.rename(claimed.with_name(old_batch))
    redis_client.flushall()

    result = run_checker(
        make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), resend_horizon_s=3600)
    )

    assert result.halted == [old_batch]
    assert (tmp_path / "halted" / old_batch / ".header.json").exists()
    assert result.halted_batches == 1 and result.inbox_depth == 0


def test_out_of_time_releases_the_batch_and_the_next_run_resumes_it(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    expected = write_corpus(tmp_path, files=8, records_per_file=25)
    calls = 0

    def runs_out_after_three_files() -> float:
        nonlocal calls
        calls += 1
        return 600.0 if calls <= 4 else 0.0

    first = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), read_threads=1)
    run_loader(first, runs_out_after_three_files)
    assert first.counters.batches_released == 1 and first.counters.batches_committed == 0
    assert redis_client.zcard(keys.RESUMABLE) == 1, "released straight back, no checker needed"

    second = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url))
    run_loader(second, forever)
    assert second.counters.batches_resumed == 1 and second.counters.batches_committed == 1
    assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    assert client_is_tidy(redis_client) and redis_client.hlen(keys.RUNS) == 0


def test_checker_handler_reports_the_backlog(
    tmp_path: Path, redis_server: Any, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.config import get_settings
    from runtime.handlers import checker
    from tests.support.run_loader import Context

    write_corpus(tmp_path, files=3, records_per_file=1)
    monkeypatch.setenv("SLUICE_INGEST__ROOT", str(tmp_path))
    monkeypatch.setenv("SLUICE_REDIS__URL", redis_server.url)
    get_settings.cache_clear()
    checker._ingest.cache_clear()
    try:
        result = checker.handler({}, Context())
    finally:
        get_settings.cache_clear()
        checker._ingest.cache_clear()
    assert result["inbox_depth"] == 3 and result["oldest_file_age_s"] >= 4
    assert result["batches_in_flight"] == 0 and result["requeued_expired"] == []


def test_an_unreachable_queue_stops_the_run_and_charges_no_batch(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """Environment-wide (issue 22): QueueDoesNotExist stops the run with one clear error before
    anything is claimed; once the queue is back, everything is delivered, no batch charged."""
    expected = write_corpus(tmp_path, files=6, records_per_file=25)
    sqs.delete_queue(QueueUrl=queue_url)
    failing = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url, sleep=lambda _: None))
    with pytest.raises(EnvironmentFailure):
        run_loader(failing, forever)
    assert failing.counters.batches_claimed == 0 and failing.counters.rejected_files == 0
    assert redis_client.hlen(keys.RUNS) == 0 and redis_client.hlen(keys.CURSORS) == 0

    assert sqs.create_queue(QueueName="state")["QueueUrl"] == queue_url
    run_loader(make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url)), forever)
    assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    assert client_is_tidy(redis_client)


def test_a_queue_lost_mid_batch_releases_it_uncharged(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """The queue disappears after the run's check: the batch goes back uncharged (its run
    count undone), the run stops with the error, and the next run delivers everything."""
    expected = write_corpus(tmp_path, files=6, records_per_file=25)

    class VanishingQueue(SqsPartSender):
        def send(self, parts: Any) -> None:
            sqs.delete_queue(QueueUrl=queue_url)
            super().send(parts)

    failing = make_ingest(tmp_path, redis_client, VanishingQueue(sqs, queue_url, sleep=lambda _: None))
    with pytest.raises(EnvironmentFailure):
        run_loader(failing, forever)
    assert failing.counters.environment_errors == 1 and failing.counters.batches_released == 1
    assert failing.counters.batch_failures == 0 and failing.counters.rejected_files == 0
    [batch] = [b.decode() for b in redis_client.zrange(keys.RESUMABLE, 0, -1)]
    assert int(redis_client.hget(keys.RUNS, batch) or 0) == 0, "never charged"

    assert sqs.create_queue(QueueName="state")["QueueUrl"] == queue_url
    run_loader(make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url)), forever)
    assert_exactly_once_by_envelope(tmp_path, [m["body"] for m in drain(sqs, queue_url)], expected)
    assert client_is_tidy(redis_client)


def test_a_member_gone_from_a_claimed_batch_halts_it(
    tmp_path: Path, redis_client: redis.Redis, redis_server: Any, moto: Any, sqs: Any, queue_url: str
) -> None:
    corpus(tmp_path)
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url)
    assert run_handler(env, kill_at="part.published").returncode == KILLED_EXIT_CODE
    [batch] = list((tmp_path / "claimed").iterdir())
    next(p for p in sorted(batch.iterdir()) if not p.name.startswith(".")).unlink()  # an operator's rm

    ingest = recover(tmp_path, redis_client, sqs, queue_url, redis_lost=False)

    assert ingest.counters.batches_halted == 1
    assert orjson.loads((tmp_path / "halted" / batch.name / ".halted.json").read_bytes())["reason"] == (
        "member_missing"
    )
    assert drain(sqs, queue_url) == []


def test_checker_hands_back_a_batch_redis_forgot_only_once_it_is_quiet(
    tmp_path: Path, redis_client: redis.Redis, redis_server: Any, moto: Any, sqs: Any, queue_url: str
) -> None:
    corpus(tmp_path)
    env = handler_environment(tmp_path, redis_server.url, moto.url, queue_url)
    assert run_handler(env, kill_at="part.sent").returncode == KILLED_EXIT_CODE
    redis_client.flushall()
    ingest = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url))

    assert run_checker(ingest).requeued_unknown == [], "recent activity: its loader may be alive"
    age_claimed(tmp_path, ingest.settings.lease_s + 1)
    [batch] = [p.name for p in (tmp_path / "claimed").iterdir()]
    assert run_checker(ingest).requeued_unknown == [batch]
    assert run_checker(ingest).requeued_unknown == [], "handed back once"
