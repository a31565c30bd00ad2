"""The relay function's core: filter, NEW_IMAGE conversion, FIFO group/dedup ids, and stopping at
the first record that cannot be sent (in-process moto)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer
from moto import mock_aws

from runtime import codec
from runtime.relay.filters import INSERT_ONLY, is_relayed, matches
from runtime.relay.images import image_to_plain
from runtime.relay.stream import SEND_BATCH_MAX_ENTRIES, group_id_for, relay_records
from tests.support.aws import mock_client
from tests.support.relay import stream_record

_SERIALIZER = TypeSerializer()


@pytest.fixture
def fifo() -> Any:
    with mock_aws():
        sqs = mock_client("sqs")
        url = sqs.create_queue(QueueName="relay.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        yield sqs, url


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_filter_pattern_passes_inserts_only() -> None:
    assert INSERT_ONLY == {"eventName": ["INSERT"]}
    assert is_relayed({"eventName": "INSERT"})
    assert not is_relayed({"eventName": "MODIFY"})
    assert not is_relayed({"eventName": "REMOVE"})
    assert not is_relayed({})
    nested = {"dynamodb": {"Keys": {"pk": {"S": ["a"]}}}}
    assert matches(nested, {"dynamodb": {"Keys": {"pk": {"S": "a"}}}})
    assert not matches(nested, {"dynamodb": {"Keys": {"pk": {"S": "b"}}}})


def test_new_image_becomes_plain_json() -> None:
    image = {
        "count": _SERIALIZER.serialize(Decimal("42")),
        "big": _SERIALIZER.serialize(Decimal("123456789012345678901234567890")),
        "huge_round": _SERIALIZER.serialize(Decimal("1E+30")),
        "precise": _SERIALIZER.serialize(Decimal("0.12345678901234567890123")),
        "price": _SERIALIZER.serialize(Decimal("19.99")),
        "tags": _SERIALIZER.serialize({"b", "a"}),
        "sizes": _SERIALIZER.serialize({Decimal(3), Decimal(1)}),
        "blob": _SERIALIZER.serialize(Binary(b"\x00\x01")),
        "nested": _SERIALIZER.serialize({"list": [Decimal("1.5"), None, True], "m": {"x": "y"}}),
    }
    plain = image_to_plain(image)
    assert plain == {
        "count": 42,
        "big": "123456789012345678901234567890",
        "huge_round": 1e30,
        "precise": "0.12345678901234567890123",
        "price": 19.99,
        "tags": ["a", "b"],
        "sizes": [1, 3],
        "blob": "AAE=",
        "nested": {"list": [1.5, None, True], "m": {"x": "y"}},
    }
    assert isinstance(plain["count"], int)
    codec.dumps(plain)  # serializable as is


def test_group_ids_are_valid_fifo_group_ids() -> None:
    assert group_id_for("customer-17") == "customer-17"
    assert group_id_for(17) == "17"
    odd = group_id_for("Zürich office")  # a space and a non-ASCII letter: SQS refuses both
    assert odd.startswith("h-") and len(odd) <= 128
    assert odd == group_id_for("Zürich office")
    assert group_id_for("x" * 200) != group_id_for("x" * 201)


def test_inserts_reach_the_fifo_in_order_with_group_and_dedup_ids(fifo: Any) -> None:
    sqs, url = fifo
    records = [
        stream_record(1, "a", {"n": Decimal(1)}),
        stream_record(2, "a", {"n": Decimal(2)}, event_name="MODIFY"),
        stream_record(3, "b", {"n": Decimal(3)}),
        stream_record(4, "a", {"n": Decimal(4)}),
        stream_record(5, "a", event_name="REMOVE"),
    ]
    result = relay_records(records, sqs=sqs, queue_url=url, group_key_field="pk")
    assert (result.sent, result.skipped, result.batch_item_failures()) == (3, 2, [])
    messages = receive_all(sqs, url)
    by_group: dict[str, list[str]] = {}
    for message in messages:
        envelope = codec.decode(message["Body"])
        attributes = message["Attributes"]
        assert attributes["MessageDeduplicationId"] == envelope.id == envelope.items[0].id
        by_group.setdefault(attributes["MessageGroupId"], []).append(envelope.id)
        assert envelope.items[0].state["pk"] == attributes["MessageGroupId"]
    assert by_group == {"a": ["ev0001", "ev0004"], "b": ["ev0003"]}


def test_a_resent_record_is_deduplicated_by_its_event_id(fifo: Any) -> None:
    sqs, url = fifo
    records = [stream_record(1, "a"), stream_record(2, "a")]
    relay_records(records, sqs=sqs, queue_url=url, group_key_field="pk")
    relay_records(records, sqs=sqs, queue_url=url, group_key_field="pk")  # Lambda's retry
    assert [codec.decode(m["Body"]).id for m in receive_all(sqs, url)] == ["ev0001", "ev0002"]


def test_a_record_that_cannot_be_sent_stops_the_batch_there(fifo: Any) -> None:
    sqs, url = fifo
    broken = stream_record(3, "a")
    del broken["dynamodb"]["NewImage"]  # a KEYS_ONLY stream, say: nothing to relay
    records = [stream_record(1, "a"), stream_record(2, "b"), broken, stream_record(4, "c")]
    result = relay_records(records, sqs=sqs, queue_url=url, group_key_field="pk")
    assert result.batch_item_failures() == [{"itemIdentifier": broken["dynamodb"]["SequenceNumber"]}]
    assert result.failure is not None and "StreamRecordError" in result.failure
    assert [codec.decode(m["Body"]).id for m in receive_all(sqs, url)] == ["ev0001", "ev0002"]


class _FailingEntries:
    """The moto client, except that SendMessageBatch reports the entries whose dedup id is in
    `fail` as failed (moto never fails an entry on its own). Records every batch sent."""

    def __init__(self, sqs: Any, fail: set[str]) -> None:
        self._sqs = sqs
        self._fail = fail
        self.batches: list[list[dict[str, Any]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append(Entries)
        ok = [e for e in Entries if e["MessageDeduplicationId"] not in self._fail]
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
            for e in Entries
            if e["MessageDeduplicationId"] in self._fail
        ]
        response = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=ok) if ok else {}
        return {"Successful": response.get("Successful", []), "Failed": failed}


def test_batches_never_hold_two_records_of_one_group(fifo: Any) -> None:
    sqs, url = fifo
    recorder = _FailingEntries(sqs, fail=set())
    records = [stream_record(i, "a" if i % 2 else f"g{i}") for i in range(1, 30)]
    result = relay_records(records, sqs=recorder, queue_url=url, group_key_field="pk")
    assert result.sent == 29
    for batch in recorder.batches:
        groups = [entry["MessageGroupId"] for entry in batch]
        assert len(groups) == len(set(groups)) and len(batch) <= SEND_BATCH_MAX_ENTRIES


def test_a_failed_entry_is_reported_and_nothing_after_it_is_sent(fifo: Any) -> None:
    sqs, url = fifo
    records = [stream_record(i, f"g{i}") for i in range(1, 15)]
    failing = _FailingEntries(sqs, fail={"ev0004"})
    result = relay_records(records, sqs=failing, queue_url=url, group_key_field="pk")
    assert result.batch_item_failures() == [{"itemIdentifier": records[3]["dynamodb"]["SequenceNumber"]}]
    assert len(failing.batches) == 1  # the second batch (records 11-14) was never sent
    # Lambda retries from record 4: the retry sends 4..14, and 5..10 again under the same ids.
    retry = relay_records(records[3:], sqs=sqs, queue_url=url, group_key_field="pk")
    assert retry.batch_item_failures() == []
    ids = sorted(codec.decode(m["Body"]).id for m in receive_all(sqs, url))
    assert ids == [f"ev{i:04d}" for i in range(1, 15)]
