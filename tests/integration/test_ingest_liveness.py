"""No file or batch can stop ingestion, and nothing is silently changed or deleted (issue 22).

Each trigger found against main gets a test here: the bad input is in the inbox for a first
loader run, good files are written after it, and a second run delivers them (exactly once);
the bad input has its fate with a reason in rejected/ or halted/. `max_crash_runs=1` and no
backoff make the charged runs and the crash-isolation run happen within the first run.
Real redis-server and moto; faults come from `Fs` subclasses and part senders that refuse.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from runtime import codec
from runtime.errors import EnvironmentFailure, TransientError
from runtime.ingest import Fs, SqsPartSender, run_checker, run_loader
from runtime.ingest import batch as batch_module
from runtime.ingest import coord as keys
from runtime.ingest.fs import FileStat
from runtime.ingest.layout import NAME_MAX, new_batch_id
from runtime.ingest.loader import LoaderResult
from runtime.ingest.model import Header, Ingest, Member, Packing, PartRecord
from runtime.ingest.parse import file_items
from runtime.ingest.sender import SendRejected
from tests.support.ingest import (
    SMALL_MESSAGE_BYTES,
    assert_exactly_once,
    drain,
    forever,
    make_ingest,
    reasons,
    write_corpus,
    write_file,
)


def loader(root: Path, client: redis.Redis, sender: Any, **overrides: Any) -> Ingest:
    values: dict[str, Any] = {"max_crash_runs": 1, "failure_backoff_s": 0.0}
    values.update(overrides)
    return make_ingest(root, client, sender, **values)


def two_runs(
    root: Path,
    client: redis.Redis,
    sqs: Any,
    queue_url: str,
    *,
    first_sender: Any = None,
    fs: Fs | None = None,
    **overrides: Any,
) -> tuple[LoaderResult, set[str]]:
    """Run 1 over what is in the inbox; good files written after it; run 2; the good files'
    records are on the queue exactly once (with whatever run 1 delivered)."""
    sender = first_sender or SqsPartSender(sqs, queue_url)
    first = run_loader(loader(root, client, sender, fs=fs, **overrides), forever)
    good = write_corpus(root, files=4, records_per_file=3, prefix="2026-11-25T15")
    run_loader(loader(root, client, SqsPartSender(sqs, queue_url), fs=fs, **overrides), forever)
    return first, good


def queue_ids(sqs: Any, queue_url: str) -> list[bytes]:
    return [m["body"] for m in drain(sqs, queue_url)]


def nothing_left(root: Path, client: redis.Redis) -> None:
    assert not [p for p in (root / "claimed").iterdir()], "no batch left claimed"
    assert client.zcard(keys.PROCESSING) == 0 and client.zcard(keys.RESUMABLE) == 0


# --- names --------------------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_rejected_at_selection(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: the header's JSON encoding raised before it was written; the batch blocked all."""
    raw = os.fsencode(str(tmp_path / "inbox")) + b"/2026-11-25T12-bad-\xff.json"
    write_file(tmp_path, "2026-11-25T12-ok.json", orjson.dumps({"a": 1}))
    os.write(fd := os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644), b'{"a": 2}')
    os.close(fd)
    os.utime(raw, (time.time() - 5, time.time() - 5))

    _, good = two_runs(tmp_path, redis_client, sqs, queue_url)

    assert_exactly_once(queue_ids(sqs, queue_url), good | {"2026-11-25T12-ok.json#0"})
    assert reasons(tmp_path) == {os.fsdecode(b"2026-11-25T12-bad-\xff.json"): "invalid_name"}
    nothing_left(tmp_path, redis_client)


def test_a_255_byte_name_gets_its_fate_and_every_derived_name_fits(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: the reason file's temporary name passed 255 bytes -> ENAMETOOLONG, retried forever."""
    bad = "2026-11-25T12-" + "é" * ((NAME_MAX - 19) // 2) + ".json"
    bad += "x" * (NAME_MAX - len(bad.encode()))
    good_long = "2026-11-25T12-" + "g" * (NAME_MAX - 19) + ".json"
    assert len(bad.encode()) == NAME_MAX == len(good_long.encode())
    write_file(tmp_path, bad, b'{"a": tru}')
    write_file(tmp_path, good_long, b'{"a": 1}')

    _, good = two_runs(tmp_path, redis_client, sqs, queue_url)

    assert_exactly_once(queue_ids(sqs, queue_url), good | {f"{good_long}#0"})
    assert reasons(tmp_path) == {bad: "invalid_json"}
    for path in (tmp_path / "rejected").rglob("*"):
        assert len(os.fsencode(path.name)) <= NAME_MAX
    nothing_left(tmp_path, redis_client)


# --- sizes --------------------------------------------------------------------------------------


class ReadRecordingFs(Fs):
    """Notes every path whose bytes were read."""

    def __init__(self) -> None:
        super().__init__()
        self.read_paths: set[str] = set()

    def read_prefix(self, path: str, size: int) -> tuple[bytes, FileStat]:
        if size:
            self.read_paths.add(os.path.basename(path))
        return super().read_prefix(path, size)

    def open_stat_read(self, path: str, read_if: Callable[[FileStat], bool]) -> tuple[FileStat, bytes | None]:
        st, data = super().open_stat_read(path, read_if)
        if data is not None:
            self.read_paths.add(os.path.basename(path))
        return st, data


def test_a_file_above_max_file_bytes_is_rejected_unread(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: a member too large for memory was read whole (the run died, the batch blocked)."""
    big = "2026-11-25T12-big.json"
    write_file(tmp_path, big, orjson.dumps([{"n": i, "pad": "p" * 40} for i in range(60)]))
    fs = ReadRecordingFs()

    _, good = two_runs(tmp_path, redis_client, sqs, queue_url, fs=fs, max_file_bytes=2048)

    assert_exactly_once(queue_ids(sqs, queue_url), good)
    assert reasons(tmp_path) == {big: "file_too_large"}
    assert big not in fs.read_paths, "decided from fstat, before any read"
    nothing_left(tmp_path, redis_client)


# --- SQS refusing -------------------------------------------------------------------------------


def test_a_queue_limit_below_the_packing_stops_the_run_until_fixed(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any
) -> None:
    """Environment-wide: main retried every batch forever (each ClientError was transient). Now
    the run stops with one clear error before claiming; once the queue's limit is raised,
    everything goes, with no batch charged."""
    url = sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    expected = write_corpus(tmp_path, files=3, records_per_file=40)
    with pytest.raises(EnvironmentFailure):
        run_loader(loader(tmp_path, redis_client, SqsPartSender(sqs, url)), forever)
    assert redis_client.hlen(keys.RUNS) == 0 and not (tmp_path / "claimed").exists(), "nothing claimed"

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": str(SMALL_MESSAGE_BYTES)})
    good = write_corpus(tmp_path, files=2, records_per_file=3, prefix="2026-11-25T15")
    run_loader(loader(tmp_path, redis_client, SqsPartSender(sqs, url)), forever)
    assert_exactly_once(queue_ids(sqs, url), expected | good)
    nothing_left(tmp_path, redis_client)


class RefusingSender(SqsPartSender):
    """SQS refusing, as the sender's fault, every part that carries one file's records."""

    def __init__(self, sqs: Any, url: str, needle: bytes) -> None:
        super().__init__(sqs, url)
        self.needle = needle

    def send(self, parts: Any) -> None:
        if any(self.needle in part.body for part in parts):
            raise SendRejected("refused as the sender's fault")
        super().send(parts)


def test_a_part_sqs_refuses_for_good_halts_its_batch_and_the_inbox_moves_on(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    write_file(tmp_path, "2026-11-25T12-refused.json", orjson.dumps({"refuse": "me"}))
    first, good = two_runs(
        tmp_path, redis_client, sqs, queue_url, first_sender=RefusingSender(sqs, queue_url, b"refuse")
    )

    assert first.counters["batch_failures"] == 2 and first.counters["batches_halted"] == 1
    assert_exactly_once(queue_ids(sqs, queue_url), good)
    [halted] = list((tmp_path / "halted").iterdir())
    assert orjson.loads((halted / ".halted.json").read_bytes())["reason"] == "send_rejected"
    assert (halted / "2026-11-25T12-refused.json").exists()
    nothing_left(tmp_path, redis_client)


def test_a_transient_refusal_releases_uncharged_and_ends_the_run(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    expected = write_corpus(tmp_path, files=3, records_per_file=3)

    class Throttled(SqsPartSender):
        def send(self, parts: Any) -> None:
            raise TransientError("RequestThrottled after boto3's retries")

    first = run_loader(loader(tmp_path, redis_client, Throttled(sqs, queue_url)), forever)
    assert first.counters["transient_failures"] == 1 and first.counters["batch_failures"] == 0
    [batch] = [b.decode() for b in redis_client.zrange(keys.RESUMABLE, 0, -1)]
    assert int(redis_client.hget(keys.RUNS, batch) or 0) == 0, "uncharged"
    run_loader(loader(tmp_path, redis_client, SqsPartSender(sqs, queue_url)), forever)
    assert_exactly_once(queue_ids(sqs, queue_url), expected)
    nothing_left(tmp_path, redis_client)


# --- members that fail --------------------------------------------------------------------------


class FailingFs(Fs):
    """An OSError for one name: when it is opened in the inbox, or when read in a batch."""

    def __init__(self, name: str, *, at_open: bool, code: int) -> None:
        super().__init__()
        self.name, self.at_open, self.code = name, at_open, code

    def open_stat_read(self, path: str, read_if: Callable[[FileStat], bool]) -> tuple[FileStat, bytes | None]:
        if self.at_open and path.endswith("/" + self.name):
            raise OSError(self.code, os.strerror(self.code), path)
        return super().open_stat_read(path, read_if)

    def read_prefix(self, path: str, size: int) -> tuple[bytes, FileStat]:
        if not self.at_open and path.endswith("/" + self.name):
            raise OSError(self.code, os.strerror(self.code), path)
        return super().read_prefix(path, size)


def test_a_file_that_cannot_be_opened_is_moved_aside_unreadable(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: it stayed at the head of the inbox forever (and its age read 0)."""
    write_file(tmp_path, "2026-11-25T12-locked.json", b'{"a": 1}')
    fs = FailingFs("2026-11-25T12-locked.json", at_open=True, code=errno.EACCES)
    _, good = two_runs(tmp_path, redis_client, sqs, queue_url, fs=fs)

    assert_exactly_once(queue_ids(sqs, queue_url), good)
    assert reasons(tmp_path) == {"2026-11-25T12-locked.json": "unreadable"}
    nothing_left(tmp_path, redis_client)


def test_a_member_that_cannot_be_read_counts_runs_then_is_quarantined(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """A batch-specific failure: charged (release does not undo it), handed back, and the
    crash-isolation run quarantines the culprit; its batch-mates are delivered."""
    mates = write_corpus(tmp_path, files=2, records_per_file=3, prefix="2026-11-25T11")
    bad = "2026-11-25T12-eio.json"
    write_file(tmp_path, bad, orjson.dumps([{"n": i, "pad": "p" * 100} for i in range(600)]))  # not preread
    fs = FailingFs(bad, at_open=False, code=errno.EIO)

    first, good = two_runs(tmp_path, redis_client, sqs, queue_url, fs=fs)

    assert first.counters["batch_failures"] == 1 and first.counters["batches_committed"] == 1
    assert_exactly_once(queue_ids(sqs, queue_url), good | mates)
    assert reasons(tmp_path) == {bad: "unreadable"}
    nothing_left(tmp_path, redis_client)
    assert redis_client.hlen(keys.RUNS) == 0


def test_a_file_the_loader_fails_on_is_quarantined_as_crash(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure no code foresaw (a bug) on one file: main released the batch and undid the
    run, so the next run failed the same way, forever, ahead of every new file."""
    poison = "2026-11-25T12-poison.json"
    write_file(tmp_path, poison, b'{"a": 1}')
    real = batch_module.file_items

    def fails_on_poison(name: str, *args: Any) -> list[bytes]:
        if name == poison:
            raise RuntimeError("a bug on this file")
        return real(name, *args)

    monkeypatch.setattr(batch_module, "file_items", fails_on_poison)
    first, good = two_runs(tmp_path, redis_client, sqs, queue_url)

    assert first.counters["batch_failures"] == 1
    assert_exactly_once(queue_ids(sqs, queue_url), good)
    assert reasons(tmp_path) == {poison: "crash"}
    nothing_left(tmp_path, redis_client)


def test_with_a_backoff_the_failing_batch_waits_while_new_files_load(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    bad = "2026-11-25T12-eio.json"
    write_file(tmp_path, bad, orjson.dumps([{"n": i, "pad": "p" * 100} for i in range(600)]))
    fs = FailingFs(bad, at_open=False, code=errno.EIO)
    settings = {"fs": fs, "failure_backoff_s": 60.0, "max_crash_runs": 2}

    run_loader(loader(tmp_path, redis_client, SqsPartSender(sqs, queue_url), **settings), forever)
    good = write_corpus(tmp_path, files=3, records_per_file=2, prefix="2026-11-25T15")
    second = run_loader(loader(tmp_path, redis_client, SqsPartSender(sqs, queue_url), **settings), forever)

    assert second.counters["batches_resumed"] == 0, "backing off: not retried ahead of new files"
    assert_exactly_once(queue_ids(sqs, queue_url), good)
    [(batch, due)] = redis_client.zrange(keys.RESUMABLE, 0, -1, withscores=True)
    assert due > time.time() + 30 and int(redis_client.hget(keys.RUNS, batch) or 0) == 1


# --- content ------------------------------------------------------------------------------------


def test_numbers_are_never_silently_changed(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: {"id": 123456789012345678901234567890} arrived as 1.2345678901234568e+29."""
    write_file(tmp_path, "2026-11-25T12-bigint.json", b'{"id": 123456789012345678901234567890}')
    write_file(tmp_path, "2026-11-25T12-inf.json", b'[{"x": 1e400}]')
    write_file(tmp_path, "2026-11-25T12-u64.json", b'{"id": 18446744073709551615}')
    _, good = two_runs(tmp_path, redis_client, sqs, queue_url)

    received = queue_ids(sqs, queue_url)
    assert_exactly_once(received, good | {"2026-11-25T12-u64.json#0"})
    assert b'"state":{"id":18446744073709551615}' in b"".join(received)
    assert reasons(tmp_path) == {
        "2026-11-25T12-bigint.json": "number_out_of_range",
        "2026-11-25T12-inf.json": "number_out_of_range",
    }


def test_a_large_junk_file_is_no_json(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: quadratic (1.56 MB took 4.9 s; 30 MB outlived the Lambda and ended as `crash`)."""
    write_file(tmp_path, "2026-11-25T12-junk.json", b"2026-11-25 12:00:00 [INFO] tick {n}\n" * 40_000)
    _, good = two_runs(tmp_path, redis_client, sqs, queue_url, max_file_bytes=4 * 2**20)
    assert_exactly_once(queue_ids(sqs, queue_url), good)
    assert reasons(tmp_path) == {"2026-11-25T12-junk.json": "no_json"}


# --- hard links ---------------------------------------------------------------------------------


def test_a_second_hard_link_is_loaded_never_unlinked_unsent(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: nlink > 1 was taken for an interrupted quarantine: a file over the read-ahead size
    was deleted unsent; a small one was sent, then halted its batch on resume. Here the first
    run fails transiently after the claim, so both are read again on resume (no read-ahead)."""
    large = write_file(
        tmp_path, "2026-11-25T12-large.json", orjson.dumps([{"n": i, "p": "q" * 700} for i in range(100)])
    )
    small = write_file(tmp_path, "2026-11-25T12-small.json", b'{"n": 1}')
    (tmp_path / "elsewhere").mkdir()
    for path in (large, small):
        os.link(path, tmp_path / "elsewhere" / path.name)
    expected = {f"{large.name}#{i}" for i in range(100)} | {f"{small.name}#0"}

    class FailsOnce(SqsPartSender):
        failed = False

        def send(self, parts: Any) -> None:
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise TransientError("throttled")
            super().send(parts)

    first, good = two_runs(tmp_path, redis_client, sqs, queue_url, first_sender=FailsOnce(sqs, queue_url))

    assert first.counters["transient_failures"] == 1
    assert_exactly_once(queue_ids(sqs, queue_url), good | expected)
    assert reasons(tmp_path) == {} and not list((tmp_path / "halted").iterdir())
    assert (tmp_path / "elsewhere" / large.name).stat().st_nlink == 2, "the member was never unlinked"
    nothing_left(tmp_path, redis_client)


# --- starvation ---------------------------------------------------------------------------------


def test_files_that_never_settle_do_not_starve_the_inbox(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: selection looked only at the oldest slice; files with future mtimes at its head
    starved everything behind them, and the checker read their age as 0."""
    ahead = time.time() + 120  # within the clock-skew allowance: they wait, then load
    for i in range(12):  # more than the oldest slice (4 x batch_max_files)
        path = write_file(tmp_path, f"2026-11-25T10-ahead-{i:02d}.json", b'{"a": 1}')
        os.utime(path, (ahead, ahead))
    far = write_file(tmp_path, "2026-11-25T10-far-future.json", b'{"a": 1}')
    os.utime(far, (time.time() + 86_400, time.time() + 86_400))

    checked = run_checker(loader(tmp_path, redis_client, SqsPartSender(sqs, queue_url), max_clock_skew_s=300))
    assert checked.future_mtime_files == 1 and checked.oldest_file_age_s >= 0

    _, good = two_runs(tmp_path, redis_client, sqs, queue_url, batch_max_files=2, max_clock_skew_s=300)

    assert_exactly_once(queue_ids(sqs, queue_url), good)
    assert reasons(tmp_path) == {far.name: "future_mtime"}
    assert len(list((tmp_path / "inbox").iterdir())) == 12, "the near-future files wait in the inbox"


# --- rules that change between a crash and its resume --------------------------------------------


BATCH = new_batch_id()


def _interrupted_batch(root: Path, client: redis.Redis, name: str, body: bytes, record: PartRecord) -> str:
    """A batch claimed by an earlier code version that recorded part 0 and died."""
    batch = BATCH
    directory = root / "claimed" / batch
    (directory / ".parts").mkdir(parents=True)
    (directory / name).write_bytes(body)
    st = (directory / name).stat()
    header = Header(
        batch=batch,
        members=(Member(name, st.st_size, st.st_mtime_ns),),
        packing=Packing(max_message_bytes=SMALL_MESSAGE_BYTES, projection={}),
        code_version="sluice-ingest/1",
    )
    (directory / ".header.json").write_bytes(header.to_json())
    (directory / ".parts" / "0.json").write_bytes(record.to_json())
    for top in ("inbox", "processed", "halted", "rejected"):
        (root / top).mkdir(exist_ok=True)
    client.zadd(keys.RESUMABLE, {batch: 0})
    return batch


def test_a_file_in_a_recorded_part_is_never_quarantined_under_new_rules(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """main: the new code rejected the file (its records already sent), then halted the batch."""
    name = "2026-11-25T12-bigint.json"
    sent = PartRecord(0, "x/0", (0, name, 0), (0, name, 0), 1, 60, "0" * 64)  # what old code sent
    batch = _interrupted_batch(tmp_path, redis_client, name, b'{"id": 123456789012345678901234567890}', sent)

    _, good = two_runs(tmp_path, redis_client, sqs, queue_url)

    assert_exactly_once(queue_ids(sqs, queue_url), good)
    assert reasons(tmp_path) == {}, "never quarantined: a recorded part holds its records"
    assert (
        orjson.loads((tmp_path / "halted" / batch / ".halted.json").read_bytes())["reason"] == "rules_changed"
    )
    assert (tmp_path / "halted" / batch / name).exists()


def test_a_batch_of_older_rules_whose_parts_reproduce_completes(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    name, data = "2026-11-25T12-ok.json", b'{"id": 1}'
    batch = BATCH
    items = file_items(name, data, None, codec.ItemEncoder(), SMALL_MESSAGE_BYTES)
    body = codec.assemble(f"{batch}/0", None, items)
    sent = PartRecord(
        0, f"{batch}/0", (0, name, 0), (0, name, 0), 1, len(body), hashlib.sha256(body).hexdigest()
    )
    _interrupted_batch(tmp_path, redis_client, name, data, sent)

    _, good = two_runs(tmp_path, redis_client, sqs, queue_url)

    assert_exactly_once(queue_ids(sqs, queue_url), good | {f"{name}#0"})
    assert (tmp_path / "processed" / batch / name).exists() and not (tmp_path / "halted" / batch).exists()
