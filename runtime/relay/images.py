"""DynamoDB stream images -> plain JSON values.

boto3's `TypeDeserializer` gives `Decimal` for numbers, `set` for SS/NS/BS and `Binary` for B.
JSON has none of these, so a number becomes an int when it is integral and fits 64 bits (what
orjson writes), else a float when the float is exactly the same number, else - never losing
digits silently - a string of its exact decimal digits (DynamoDB keeps 38). Sets become sorted
lists (a set has no order, so sorting keeps the output deterministic);
binary becomes base64 text.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

_DESERIALIZER = TypeDeserializer()
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def plain_number(value: Decimal) -> int | float | str:
    if value == value.to_integral_value():
        integral = int(value)
        if _INT64_MIN <= integral <= _UINT64_MAX:
            return integral
    as_float = float(value)
    if Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON-compatible Python."""
    if isinstance(value, Decimal):
        return plain_number(value)
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
