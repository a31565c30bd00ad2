"""The relay's event filter, defined once: the stack passes `INSERT_ONLY` to the event source
mapping's filter criteria, and the local stream poller applies it with `matches`.

Only INSERTs are relayed: a MODIFY or REMOVE is not a new item for the third-party API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Lambda event-filter syntax: a key's list holds the values that match (exact equality).
INSERT_ONLY: Mapping[str, Any] = {"eventName": ["INSERT"]}


def matches(pattern: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether `record` passes `pattern`, for the subset of Lambda's filter syntax sluice uses:
    nested objects and lists of exact values (every key must match)."""
    for key, expected in pattern.items():
        if key not in record:
            return False
        actual = record[key]
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping) or not matches(expected, actual):
                return False
        elif isinstance(expected, list):
            if actual not in expected:
                return False
        else:
            raise ValueError(f"filter value for {key!r} must be an object or a list of values")
    return True


def is_relayed(record: Mapping[str, Any]) -> bool:
    return matches(INSERT_ONLY, record)
