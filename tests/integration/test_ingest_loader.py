"""The loader's happy path and bad input, against a real redis-server and the moto server,
verified by reading the queue back (issue 9)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import redis

from runtime.codec import decode
from runtime.ingest import Fs, SqsPartSender, run_loader
from runtime.ingest import coord as keys
from runtime.ingest.batch import SHIPMENTS_IN_FLIGHT
from runtime.ingest.fs import FileStat
from runtime.ingest.model import PartRecord
from runtime.ingest.sender import MAX_BATCH_ENTRIES, SendRejected
from tests.support.ingest import (
    SMALL_MESSAGE_BYTES,
    assert_exactly_once,
    drain,
    files_in,
    forever,
    handler_environment,
    item_ids,
    make_ingest,
    reasons,
    record,
    start_handler,
    write_corpus,
    write_file,
)


def bodies(sqs: Any, url: str) -> list[bytes]:
    return [m["body"] for m in drain(sqs, url)]


def test_every_record_once_in_parts_that_match_their_records(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    expected = write_corpus(tmp_path, files=60, records_per_file=7)
    ingest = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), batch_max_files=25)

    result = run_loader(ingest, forever)

    received = bodies(sqs, queue_url)
    assert_exactly_once(received, expected)
    assert result.counters["batches_committed"] == 3 and result.counters["files"] == 60
    assert len(received) >= 8, "an 8 KiB limit must split 420 records (~65 KB) into many parts"
    for body in received:
        assert 0 < len(body) <= SMALL_MESSAGE_BYTES
        envelope = decode(body)
        batch, k = envelope.id.rsplit("/", 1)
        recorded = PartRecord.from_json(
            (tmp_path / "processed" / batch / ".parts" / f"{k}.json").read_bytes()
        )
        assert recorded.sha256 == hashlib.sha256(body).hexdigest() and recorded.count == len(envelope.items)
        assert all(item.step == 0 and item.attempt == 0 for item in envelope.items)
    assert not list((tmp_path / "inbox").iterdir()) and not list((tmp_path / "claimed").iterdir())
    assert redis_client.zcard(keys.PROCESSED) == 3 and redis_client.zcard(keys.PROCESSING) == 0
    assert result.sqs_calls <= -(-len(received) // 10) + 3  # batched, ≤ 10 entries a call


def test_fifo_target_uses_the_envelope_id_for_dedup(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any
) -> None:
    url = sqs.create_queue(QueueName="state.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    expected = write_corpus(tmp_path, files=30, records_per_file=40)
    sender = SqsPartSender(sqs, url, group_id="g1")
    run_loader(make_ingest(tmp_path, redis_client, sender, fs=EfsLikeFs(), read_threads=8), forever)

    messages = drain(sqs, url)
    assert_exactly_once([m["body"] for m in messages], expected)
    for message in messages:
        assert message["attributes"]["MessageGroupId"] == "g1"
        assert message["attributes"]["MessageDeduplicationId"] == orjson.loads(message["body"])["id"]
    # Parts ship one group at a time on a FIFO queue (concurrently on a standard one): in order.
    part_numbers = [int(orjson.loads(m["body"])["id"].rsplit("/", 1)[1]) for m in messages]
    assert len(part_numbers) > 2 * MAX_BATCH_ENTRIES and part_numbers == sorted(part_numbers)


def test_bad_input_table(tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str) -> None:
    good = write_corpus(tmp_path, files=3, records_per_file=2, prefix="2026-11-25T12")
    bad = {
        "b-empty.json": (b"", "empty"),
        "b-junk.json": (b"# header\n// nothing else\n", "no_json"),
        "b-invalid.json": (b'{"a": tru}', "invalid_json"),
        "b-truncated.json": (b'[{"a": 1}, {"b": ', "invalid_json"),
        "b-encoding.json": (b'{"a": "\xc3\x28"}', "invalid_encoding"),
        "b-scalar.json": (b"# c\n42\n", "not_records"),
        "b-numbers.json": (b"[1, 2]", "not_records"),
        "b-too-large.json": (orjson.dumps({"big": "x" * (SMALL_MESSAGE_BYTES + 10)}), "record_too_large"),
    }
    for name, (body, _) in bad.items():
        write_file(tmp_path, name, body)
    inbox = tmp_path / "inbox"
    target = tmp_path / "secret-target.json"
    target.write_bytes(orjson.dumps(record(9, 9)))
    (inbox / "s-symlink.json").symlink_to(target)
    os.mkfifo(inbox / "s-fifo.json")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(inbox / "s-socket.json"))
    (inbox / "a-directory").mkdir()
    write_file(tmp_path, "c-partial.json.tmp", b'{"half": ')
    write_file(tmp_path, ".c-hidden.json", b'{"x": 1}')

    result = run_loader(make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url)), forever)

    assert_exactly_once(bodies(sqs, queue_url), good)
    expected_reasons = {name: code for name, (_, code) in bad.items()}
    expected_reasons.update(
        {n: "not_regular_file" for n in ("s-symlink.json", "s-fifo.json", "s-socket.json")}
    )
    assert reasons(tmp_path) == expected_reasons
    for name in expected_reasons:  # the entry itself moved, beside its reason, content intact
        [moved] = list((tmp_path / "rejected").glob(f"*/{name}"))
        if name in bad:
            assert moved.read_bytes() == bad[name][0]
        reason = orjson.loads(moved.with_name(name + ".reason.json").read_bytes())
        assert set(reason) == {"code", "detail", "batch", "bytes_sent", "at"} and reason["bytes_sent"] == 0
    [symlink] = list((tmp_path / "rejected").glob("*/s-symlink.json"))
    assert symlink.is_symlink() and target.exists()
    assert sorted(p.name for p in inbox.iterdir()) == [".c-hidden.json", "a-directory", "c-partial.json.tmp"]
    assert result.counters["rejected_files"] == len(expected_reasons)
    assert result.counters["skipped_entries"] >= 3


def test_projection_selects_fields(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    write_file(tmp_path, "p1.json", orjson.dumps([{"a": {"b": 1}, "c": 2, "drop": 3}, {"c": 4}]))
    write_file(tmp_path, "p2.json", orjson.dumps([{"a": {"b": 5}}, {"c": 6}]))
    ingest = make_ingest(
        tmp_path,
        redis_client,
        SqsPartSender(sqs, queue_url),
        projection={"ab": {"path": "a.b", "missing": "null"}, "c": {"path": "c", "missing": "omit"}},
    )
    run_loader(ingest, forever)
    states = {i.id: i.state for b in bodies(sqs, queue_url) for i in decode(b).items}
    assert states == {
        "p1.json#0": {"ab": 1, "c": 2},
        "p1.json#1": {"ab": None, "c": 4},
        "p2.json#0": {"ab": 5},
        "p2.json#1": {"ab": None, "c": 6},
    }


def test_noncharacters_reach_the_queue_escaped(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    write_file(tmp_path, "nc.json", orjson.dumps({"s": "a\ufffeb\uffffc"}))
    run_loader(make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url)), forever)
    [body] = bodies(sqs, queue_url)
    assert "\ufffe".encode() not in body and "\uffff".encode() not in body and b"\\ufffe" in body
    assert decode(body).items[0].state == {"s": "a\ufffeb\uffffc"}


def test_writer_still_writing(tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str) -> None:
    """A fresh file is not claimed; a file that grows between its settle check and the claim
    goes back to the inbox; neither is lost."""
    write_file(tmp_path, "w-settled.json", orjson.dumps(record(1, 0)))
    write_file(tmp_path, "w-fresh.json", b'{"partial": ', age_s=-60)  # fresh however slow the machine
    growing = write_file(tmp_path, "w-growing.json", orjson.dumps(record(2, 0)))

    class GrowsBeforeClaim(Fs):
        def rename(self, source: str, target: str) -> None:
            if source.endswith("inbox/w-growing.json"):
                with open(growing, "ab") as handle:
                    handle.write(b"\n" + orjson.dumps(record(2, 1)))
            super().rename(source, target)

    ingest = make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), fs=GrowsBeforeClaim())
    result = run_loader(ingest, forever)

    assert set(item_ids(bodies(sqs, queue_url))) == {"w-settled.json#0"}
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["w-fresh.json", "w-growing.json"]
    assert result.counters["returned_to_inbox"] == 1


def test_vanished_file_and_stale_claim_after_header(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """A file gone between listing and claim is skipped; a stale claim that lands in the
    batch after its header goes back to the inbox at commit and is loaded by a later batch."""
    expected = write_corpus(tmp_path, files=4, records_per_file=3)
    write_file(tmp_path, "v-vanishing.json", orjson.dumps(record(5, 0)))
    late = write_file(
        tmp_path, "z-late.json", orjson.dumps(record(6, 0)), age_s=-60
    )  # fresh however slow the machine

    class Interfering(Fs):
        landed = False

        def open_stat_read(
            self, path: str, read_if: Callable[[FileStat], bool]
        ) -> tuple[FileStat, bytes | None]:
            found = super().open_stat_read(path, read_if)
            if path.endswith("v-vanishing.json"):
                os.unlink(path)  # the writer's operator deleted it after our listing
            return found

        def write_once(self, path: str, data: bytes) -> bool:
            published = super().write_once(path, data)
            if path.endswith(".header.json") and not self.landed:
                self.landed = True  # a slow loader's rename lands after our header
                os.rename(late, Path(path).parent / late.name)
            return published

    result = run_loader(
        make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url), fs=Interfering()), forever
    )
    assert result.counters["vanished_files"] == 1
    assert result.counters["returned_to_inbox"] == 1
    assert (tmp_path / "inbox" / "z-late.json").exists()
    first = bodies(sqs, queue_url)
    assert_exactly_once(first, expected)

    os.utime(tmp_path / "inbox" / "z-late.json", (1, 1))  # settled now
    run_loader(make_ingest(tmp_path, redis_client, SqsPartSender(sqs, queue_url)), forever)
    assert set(item_ids(bodies(sqs, queue_url))) == {"z-late.json#0"}


def test_several_processes_claiming_one_inbox(
    tmp_path: Path, redis_client: redis.Redis, redis_server: Any, moto: Any, sqs: Any, queue_url: str
) -> None:
    expected = write_corpus(tmp_path, files=240, records_per_file=2)
    env = handler_environment(
        tmp_path, redis_server.url, moto.url, queue_url, batch_max_files=10, read_threads=2
    )
    processes = [start_handler(env) for _ in range(4)]
    outputs = [p.communicate(timeout=90) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    results = [orjson.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(r["files"] for r in results) == 240
    assert sum(1 for r in results if r["batches_committed"]) >= 2, "the loaders should share the work"
    assert_exactly_once(bodies(sqs, queue_url), expected)
    assert not files_in(tmp_path, "inbox") and not files_in(tmp_path, "claimed")


class EfsLikeFs(Fs):
    """Round trips slow enough that the loader spreads its file operations over threads."""

    def _read_op(self, count: int = 1) -> None:
        super()._read_op(count)
        time.sleep(0.0005 * count)

    def _write_op(self, count: int = 1) -> None:
        super()._write_op(count)
        time.sleep(0.001 * count)


def test_threaded_path_under_efs_like_latency(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    expected = write_corpus(tmp_path, files=120, records_per_file=3)
    write_file(tmp_path, "b-bad.json", b"# only junk\n")
    big = orjson.dumps([record(7, i, pad=300) for i in range(200)])  # over the pre-read size
    write_file(tmp_path, "c-big.json", big)
    expected |= {f"c-big.json#{i}" for i in range(200)}
    ingest = make_ingest(
        tmp_path,
        redis_client,
        SqsPartSender(sqs, queue_url),
        fs=EfsLikeFs(),
        batch_max_files=60,
        read_threads=8,
    )

    result = run_loader(ingest, forever)

    assert_exactly_once(bodies(sqs, queue_url), expected)
    assert result.counters["rejected_files"] == 1 and result.counters["batches_committed"] == 3
    assert result.counters["selections_ahead"] >= 2, "on EFS the next batch is selected while one runs"


def test_two_loaders_selecting_ahead_under_latency_share_one_inbox(
    tmp_path: Path, redis_client: redis.Redis, sqs: Any, queue_url: str
) -> None:
    """A selection made ahead goes stale while the batch before it runs (the other loader
    claims some of its files): those vanish at the claim, and nothing is lost or sent twice."""
    expected = write_corpus(tmp_path, files=120, records_per_file=2)

    def loader() -> Any:
        sender = SqsPartSender(sqs, queue_url)
        ingest = make_ingest(
            tmp_path, redis_client, sender, fs=EfsLikeFs(), batch_max_files=15, read_threads=8
        )
        return run_loader(ingest, forever)

    with ThreadPoolExecutor(2) as loaders:
        results = [run.result(timeout=120) for run in [loaders.submit(loader) for _ in range(2)]]

    assert_exactly_once(bodies(sqs, queue_url), expected)
    assert sum(r.counters["files"] for r in results) == 120
    assert all(r.counters["selections_ahead"] >= 1 for r in results)
    assert not files_in(tmp_path, "inbox") and not files_in(tmp_path, "claimed")


class SlowFailingSender:
    """Each send takes a while; the batch's second group of parts (whichever thread starts it
    first) fails as the sender's fault. Notes, as each send ends, whether the batch had already
    been handed back."""

    ordered = False

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls = 0
        self.billing_units = 0
        self.lock = threading.Lock()
        self.ended_after_release = 0

    def send(self, parts: Any) -> None:
        with self.lock:
            self.calls += 1
        time.sleep(0.05)
        if self.client.zcard(keys.RESUMABLE):
            with self.lock:
                self.ended_after_release += 1
        if parts[0].index == MAX_BATCH_ENTRIES:  # groups hold 10 small parts: the second group
            raise SendRejected("refused")


def test_a_failed_shipment_is_waited_for_before_the_batch_is_handed_back(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    # One batch of more groups of parts than may be in flight: the failure surfaces while
    # later groups are still on their way.
    write_corpus(tmp_path, files=600, records_per_file=20)
    sender = SlowFailingSender(redis_client)
    ingest = make_ingest(tmp_path, redis_client, sender, read_threads=8, batch_max_files=600)

    result = run_loader(ingest, forever)

    assert sender.calls > SHIPMENTS_IN_FLIGHT, "shipments were in flight when one failed"
    assert sender.ended_after_release == 0, "a shipment was still sending after its batch was released"
    # SQS refusing as the sender's fault is this batch's failure: counted, handed back charged.
    assert result.counters["batch_failures"] == 1 and result.counters["batches_released"] == 0
    assert redis_client.zcard(keys.RESUMABLE) == 1, "the batch is handed back, to be resumed"
