"""The exactly-once check: per-file fates and the run's totals over the sink."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from local.fates import (
    Expected,
    Rejection,
    S3SinkObserver,
    StateQueueObserver,
    item_ids_in_sink_object,
    read_rejections,
    reconcile,
    split_item_id,
)


def _ids(name: str, count: int, start: int = 0) -> list[str]:
    return [f"{name}#{i}" for i in range(start, start + count)]


def test_item_ids_split_at_the_last_hash() -> None:
    assert split_item_id("a#b.json#12") == ("a#b.json", 12)
    # Another shape (the gateway's SQS message ids) is a source of one record.
    assert split_item_id("8c0e-message-id") == ("8c0e-message-id", 0)
    assert split_item_id("x#y") == ("x#y", 0)


def test_sink_objects_of_every_supported_shape() -> None:
    envelope = {"v": 1, "id": "e", "items": [{"id": "f#0"}, {"id": "f#1"}]}
    assert item_ids_in_sink_object(orjson.dumps(envelope)) == ["f#0", "f#1"]
    assert item_ids_in_sink_object(orjson.dumps([{"id": "f#0"}, {"id": "f#1"}])) == ["f#0", "f#1"]
    assert item_ids_in_sink_object(b'{"id": "f#0"}\n{"id": "f#1"}\n') == ["f#0", "f#1"]


def test_everything_delivered_once_is_ok() -> None:
    expected = [Expected("a", "delivered", 3), Expected("b", "delivered", 2)]
    result = reconcile(expected, Counter(_ids("a", 3) + _ids("b", 2)), {}, set())
    assert result.ok and result.settled
    assert result.records_expected == result.records_delivered == 5
    assert [f.fate for f in result.files] == ["delivered", "delivered"]
    assert result.files[0].item_ids == _ids("a", 3)


def test_losses_duplicates_and_strangers_are_each_counted() -> None:
    expected = [Expected("a", "delivered", 3), Expected("b", "delivered", 2)]
    counts = Counter(_ids("a", 2) + _ids("b", 2) + ["b#1", "b#7", "zzz#0", "odd-id"])
    result = reconcile(expected, counts, {}, set())
    assert not result.ok
    assert result.lost == 1  # a#2
    assert result.duplicates == 1  # b#1 twice
    assert result.unexpected_ids == sorted(["b#7", "zzz#*", "odd-id#*"])
    assert {f.file: f.problem for f in result.problems} == {
        "a": "1 lost, 0 duplicated",
        "b": "0 lost, 1 duplicated",
    }
    assert not result.settled  # a is delivered with a record missing: maybe still in flight


def _rejection(name: str, code: str) -> dict[str, list[Rejection]]:
    return {name: [Rejection(file=name, code=code, detail="why", batch="B", path=f"rejected/B/{name}")]}


def test_bad_files_must_be_rejected_with_a_right_code() -> None:
    expected = [Expected("bad", "rejected", 0, frozenset({"invalid_json"}))]
    right = reconcile(expected, Counter(), _rejection("bad", "invalid_json"), set())
    assert right.ok and right.files[0].rejected_path == "rejected/B/bad"
    wrong_code = reconcile(expected, Counter(), _rejection("bad", "empty"), set())
    assert not wrong_code.ok and "expected one of ['invalid_json']" in (wrong_code.problems[0].problem or "")
    not_yet = reconcile(expected, Counter(), {}, {"bad"})
    assert not_yet.pending and not not_yet.settled and not not_yet.ok


def test_a_good_file_that_ends_rejected_is_a_final_loss() -> None:
    expected = [Expected("good", "delivered", 4)]
    result = reconcile(expected, Counter(), _rejection("good", "invalid_json"), set())
    assert result.settled and not result.ok
    assert result.lost == 4 and result.files[0].problem == "expected delivered, found rejected"


def test_skipped_entries_stay_in_the_inbox() -> None:
    expected = [Expected(".hidden", "skipped", 0), Expected("x.tmp", "skipped", 0)]
    assert reconcile(expected, Counter(), {}, {".hidden", "x.tmp"}).ok
    gone = reconcile(expected, Counter(), {}, {"x.tmp"})
    assert gone.pending and gone.pending[0].file == ".hidden"


def test_unknown_counts_still_catch_gaps_and_missing_fates() -> None:
    expected = [Expected("mine.json", None, None), Expected("other.json", None, None)]
    counts = Counter(["mine.json#0", "mine.json#2"])
    result = reconcile(expected, counts, {}, {"other.json"})
    mine, other = result.files
    assert mine.fate == "delivered" and mine.lost == 1
    assert other.fate == "pending" and other.problem == "no fate yet"


def test_rejections_are_read_from_reason_files(tmp_path: Path) -> None:
    batch = tmp_path / "rejected" / "20261125T000000-abc"
    batch.mkdir(parents=True)
    (batch / "a b é.json").write_bytes(b"junk")
    reason = {"code": "no_json", "detail": "nothing", "batch": batch.name, "bytes_sent": 0, "at": "now"}
    (batch / "a b é.json.reason.json").write_bytes(orjson.dumps(reason))
    found = read_rejections(tmp_path)
    (entry,) = found["a b é.json"]
    assert entry.code == "no_json" and entry.batch == batch.name
    assert entry.path == f"rejected/{batch.name}/a b é.json"
    assert read_rejections(tmp_path / "nowhere") == {}


def test_the_s3_sink_reader_reads_each_object_once(aws: Any) -> None:
    s3 = aws("s3")
    s3.create_bucket(Bucket="sink")
    s3.put_object(Bucket="sink", Key="results/e1.json", Body=orjson.dumps({"items": [{"id": "f#0"}]}))
    s3.put_object(Bucket="sink", Key="other/x.json", Body=b"[]")
    reader = S3SinkObserver(s3, "sink", prefix="results/")
    assert reader.refresh() == 1
    assert reader.refresh() == 0
    s3.put_object(
        Bucket="sink", Key="results/e2.json", Body=orjson.dumps({"items": [{"id": "f#0"}, {"id": "f#1"}]})
    )
    assert reader.refresh() == 2
    assert reader.counts == Counter({"f#0": 2, "f#1": 1}) and reader.objects == 2


def test_the_queue_sink_consumes_envelopes(aws: Any) -> None:
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName="end")["QueueUrl"]
    body = {
        "v": 1,
        "id": "b/0",
        "parent": None,
        "items": [{"id": "f#0", "step": 0, "attempt": 0, "state": {}}],
    }
    sqs.send_message(QueueUrl=url, MessageBody=orjson.dumps(body).decode())
    sink = StateQueueObserver(sqs, url)
    assert sink.refresh() == 1 and sink.counts == Counter({"f#0": 1})
    assert sink.refresh() == 0
