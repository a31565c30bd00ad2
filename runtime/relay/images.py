"""DynamoDB stream images -> plain JSON values.

boto3's `TypeDeserializer` gives `Decimal` for numbers, `set` for SS/NS/BS and `Binary` for B.
JSON has none of these, so: an integral Decimal becomes an int (exact, any size), any other a
float; sets become sorted lists (a set has no order, so sorting keeps the output deterministic);
binary becomes base64 text.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

_DESERIALIZER = TypeDeserializer()


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON-compatible Python."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {key: plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [plain(inner) for inner in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(inner) for inner in value), key=_sort_key)
    if isinstance(value, Binary | bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _sort_key(value: Any) -> tuple[str, Any]:
    # A set holds one type only (SS, NS or BS), but keep the sort total regardless.
    return (type(value).__name__, value)


def image_to_plain(image: Mapping[str, Any]) -> dict[str, Any]:
    """A stream record's `NewImage` (attribute-value JSON) as a plain JSON object."""
    return {name: plain(_DESERIALIZER.deserialize(value)) for name, value in image.items()}


def attribute_to_plain(value: Mapping[str, Any]) -> Any:
    return plain(_DESERIALIZER.deserialize(value))
