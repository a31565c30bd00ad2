"""Packing through the loader never exceeds the limit in bytes and never sends an empty
message; SendMessageBatch calls hold at most 10 entries and 1 MiB (the SQS part sender with
in-process moto)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from runtime import codec
from runtime.errors import MessageTooLarge
from runtime.ingest import SqsPartSender, run_loader
from runtime.ingest.sender import MAX_BATCH_BYTES, call_groups
from tests.support.aws import mock_client
from tests.support.ingest import assert_exactly_once, forever, make_ingest, write_file


class CapturingSender:
    """Keeps what it is given (pure packing checks need the bodies, not a queue), in order."""

    ordered = True

    def __init__(self) -> None:
        self.calls = 0
        self.billing_units = 0
        self.parts: list[codec.PackedPart] = []

    def send(self, parts: Sequence[codec.PackedPart]) -> None:
        self.calls += 1
        self.parts.extend(parts)


@pytest.mark.parametrize("limit", [1024, 1500, 8192])
def test_parts_never_exceed_the_limit_and_are_never_empty(
    tmp_path: Path, redis_client: redis.Redis, limit: int
) -> None:
    rng = random.Random(limit)
    expected = set()
    for f in range(30):
        records = [
            {"i": i, "pad": "é" * rng.randint(0, 300), "nc": "\uffff"} for i in range(rng.randint(1, 12))
        ]
        write_file(tmp_path, f"f{f:03d}.json", orjson.dumps(records))
        expected.update(f"f{f:03d}.json#{i}" for i in range(len(records)))
    sender = CapturingSender()

    run_loader(make_ingest(tmp_path, redis_client, sender, max_message_bytes=limit), forever)

    assert_exactly_once([p.body for p in sender.parts], expected)
    for part in sender.parts:
        assert 0 < len(part.body) <= limit and part.count >= 1
        assert "\uffff".encode() not in part.body
        decoded = codec.decode(part.body)
        assert decoded.id == part.id and len(decoded.items) == part.count


def test_call_groups_respect_entries_and_bytes() -> None:
    def part(k: int, size: int) -> codec.PackedPart:
        return codec.PackedPart(index=k, id=f"b/{k}", body=b"x" * size, count=1, first=0, last=0, size=size)

    many_small = [part(k, 100) for k in range(23)]
    assert [len(g) for g in call_groups(many_small)] == [10, 10, 3]
    big = [part(k, 400_000) for k in range(5)]
    groups = call_groups(big)
    assert [len(g) for g in groups] == [2, 2, 1]
    assert all(sum(p.size for p in g) <= MAX_BATCH_BYTES for g in groups)


@pytest.fixture
def in_process_sqs() -> Iterator[Any]:
    with mock_aws():
        yield mock_client("sqs")


def test_sqs_part_sender_retries_entries_that_failed(in_process_sqs: Any) -> None:
    url = in_process_sqs.create_queue(QueueName="q")["QueueUrl"]

    class FlakyClient:
        """The real (moto) client, except that the first call reports its last entry failed."""

        def __init__(self) -> None:
            self.calls = 0

        def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
            self.calls += 1
            if self.calls == 1:
                entries = kwargs["Entries"]
                response = in_process_sqs.send_message_batch(
                    QueueUrl=kwargs["QueueUrl"], Entries=entries[:-1]
                )
                response["Failed"] = [
                    {"Id": entries[-1]["Id"], "SenderFault": False, "Code": "InternalError"}
                ]
                return response  # type: ignore[no-any-return]
            return in_process_sqs.send_message_batch(**kwargs)  # type: ignore[no-any-return]

    parts = [
        codec.PackedPart(index=k, id=f"b/{k}", body=b'{"k":%d}' % k, count=1, first=0, last=0, size=7)
        for k in range(3)
    ]
    sender = SqsPartSender(FlakyClient(), url, sleep=lambda _: None)
    sender.send(parts)
    assert sender.calls == 2
    received = in_process_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in received) == sorted(p.body.decode() for p in parts)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    split=st.integers(min_value=0, max_value=60),
    limit=st.integers(min_value=350, max_value=2000),
)
def test_add_many_packs_exactly_like_add(sizes: list[int], split: int, limit: int) -> None:
    """Resumed batches recompute parts byte for byte: the fast path must cut where `add` does."""
    items = [b'{"x":"' + b"y" * n + b'"}' for n in sizes]

    def packer() -> codec.EnvelopePacker:
        return codec.EnvelopePacker(max_bytes=limit, make_id=lambda k: f"b/{k}")

    def pack_one_by_one() -> list[codec.PackedPart]:
        p = packer()
        parts = [part for i, item in enumerate(items) if (part := p.add(item, i)) is not None]
        return parts + ([last] if (last := p.flush()) else [])

    def pack_fast() -> list[codec.PackedPart]:
        p = packer()
        parts = p.add_many(items[:split], 0) + p.add_many(items[split:], min(split, len(items)))
        return parts + ([last] if (last := p.flush()) else [])

    try:
        expected = pack_one_by_one()
    except MessageTooLarge:
        with pytest.raises(MessageTooLarge):
            pack_fast()
        return
    assert pack_fast() == expected


def test_add_many_refuses_an_item_that_fits_nowhere() -> None:
    packer = codec.EnvelopePacker(max_bytes=100, make_id=lambda k: f"b/{k}")
    packer.add_many([b"1"], 0)
    with pytest.raises(MessageTooLarge):
        packer.add_many([b"x" * 200], 1)


def test_too_large_is_decided_for_the_widest_part_id(tmp_path: Path, redis_client: redis.Redis) -> None:
    """A record that fits alone in any part of the batch is sent; one byte more is rejected,
    wherever in the batch it would land (the part number's width never decides)."""
    limit = 1024
    ingest = make_ingest(tmp_path, redis_client, CapturingSender(), max_message_bytes=limit)
    batch_id_length = len("20261125T130955.123Z-1a2b3c4d")
    item_limit = limit - codec.envelope_overhead("b" * batch_id_length + "/" + "9" * 9)

    def state_for(name: str, item_bytes: int) -> dict[str, str]:
        empty = codec.ItemEncoder().finish(codec.ItemEncoder.id_prefix(f"{name}#"), 0, b'{"p":""}')
        return {"p": "x" * (item_bytes - len(empty))}

    write_file(tmp_path, "a-fits.json", orjson.dumps(state_for("a-fits.json", item_limit)))
    write_file(tmp_path, "b-over.json", orjson.dumps(state_for("b-over.json", item_limit + 1)))

    run_loader(ingest, forever)

    sender = ingest.sender
    assert isinstance(sender, CapturingSender)
    assert [i.id for p in sender.parts for i in codec.decode(p.body).items] == ["a-fits.json#0"]
    reason = orjson.loads(next((tmp_path / "rejected").glob("*/b-over.json.reason.json")).read_bytes())
    assert reason["code"] == "record_too_large"
