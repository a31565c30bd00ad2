"""DynamoDB stream records for the relay tests, built from the canonical stream event
(tests/events/dynamodb_stream.json) with the source table's keys and a chosen image."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeSerializer

from tests.support.events import load_event

_SERIALIZER = TypeSerializer()


def stream_record(
    seq: int, pk: Any, image: dict[str, Any] | None = None, *, event_name: str = "INSERT"
) -> dict[str, Any]:
    """The canonical `event_name` record (INSERT, MODIFY or REMOVE) for the item `pk`/"item"
    with `image`'s attributes, as Lambda delivers it from a NEW_IMAGE stream."""
    [record] = [r for r in load_event("dynamodb_stream")["Records"] if r["eventName"] == event_name]
    item = {"pk": pk, "sk": "item", **(image or {})}
    change = record["dynamodb"]
    change["Keys"] = {"pk": _SERIALIZER.serialize(pk), "sk": _SERIALIZER.serialize("item")}
    change["SequenceNumber"] = f"{seq:021d}"
    if "NewImage" in change:
        change["NewImage"] = {name: _SERIALIZER.serialize(value) for name, value in item.items()}
    record["eventID"] = f"ev{seq:04d}"
    return record
