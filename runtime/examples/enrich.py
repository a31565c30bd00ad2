"""Enrich and store: the router behind the ingest demo.

Each ingested record gets derived fields in one step — a content digest (a stable identity
for downstream dedup), its field count and the sorted list of its keys — and is then done, so
the framework stores it in the envelope's results object. Everything is derived from the record
alone: the router is deterministic, as the framework requires.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from runtime.pipeline import PoisonItem, mutation

ENRICHED = "_enriched"


@mutation
def enrich(record: dict[str, Any]) -> dict[str, Any]:
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    record[ENRICHED] = {
        "sha256": hashlib.sha256(canonical).hexdigest(),
        "fields": len(record),
        "keys": sorted(record),
    }
    return record


def router(state: Any) -> dict[str, Any] | None:
    if not isinstance(state, dict):
        raise PoisonItem("not_a_record", f"expected a JSON object, got {type(state).__name__}")
    if ENRICHED not in state:
        return enrich(state)
    return None
