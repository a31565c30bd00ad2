"""Parse throughput (issue 22): a junk-only file and an NDJSON file of the same size through
the loader's parse path (strip junk -> parse -> encode items), in MB/s. The junk-only file must
end as `no_json` in time linear in its size (it used to take quadratic time and outlive the
Lambda)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from runtime import codec
from runtime.ingest.errors import RejectedFile
from runtime.ingest.parse import file_items

JUNK_LINE = b"2026-11-25 12:00:00.123 [INFO] writer-1 flushed segment 42 of {batch}; 17 records\n"
ITEM_LIMIT = codec.SQS_MAX_MESSAGE_BYTES - 200


def _ndjson(size: int) -> bytes:
    lines = []
    total, n = 0, 0
    while total < size:
        line = orjson.dumps({"file": 7, "n": n, "meta": {"source": "writer-1", "pad": "x" * 40}, "ok": True})
        lines.append(line)
        total += len(line) + 1
        n += 1
    return b"# written by writer-1\n" + b"\n".join(lines) + b"\n"


def _timed(data: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        items = file_items("f.json", data, None, codec.ItemEncoder(), ITEM_LIMIT)
        fate = f"{len(items)} records"
    except RejectedFile as rejected:
        fate = rejected.code
    return time.perf_counter() - started, fate


def parse_throughput(megabytes: int) -> dict[str, Any]:
    size = megabytes * 1_000_000
    junk = JUNK_LINE * (size // len(JUNK_LINE))
    junk_s, junk_fate = _timed(junk)
    ndjson = _ndjson(size)
    ndjson_s, ndjson_fate = _timed(ndjson)
    return {
        "file_mb": round(len(junk) / 1e6, 1),
        "junk_only_s": round(junk_s, 3),
        "junk_only_mb_per_s": round(len(junk) / 1e6 / junk_s, 1),
        "junk_only_fate": junk_fate,
        "ndjson_mb": round(len(ndjson) / 1e6, 1),
        "ndjson_s": round(ndjson_s, 3),
        "ndjson_mb_per_s": round(len(ndjson) / 1e6 / ndjson_s, 1),
        "ndjson_fate": ndjson_fate,
    }
