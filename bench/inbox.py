"""Generated inboxes for the benchmarks: timestamp-named JSON files with junk comment lines at
the top, like the writer container's, already settled (mtime in the past)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

JUNK_HEADER = b"# exported by writer v3.2\n// host: writer-7\n/* batch window: 60s */\n\n"


def make_record(file_index: int, record_index: int, record_bytes: int) -> dict[str, object]:
    """A record with many metadata fields, padded to about `record_bytes` of JSON."""
    record: dict[str, object] = {
        "event_id": f"{file_index:08d}-{record_index:05d}",
        "source": "writer-7",
        "kind": "reading",
        "ts": 1_764_000_000 + file_index,
        "device": {"id": f"dev-{file_index % 997}", "fw": "3.2.1", "site": "eu-west-1a"},
        "value": (file_index * 31 + record_index) % 1000 / 10,
        "unit": "celsius",
        "tags": ["a", "b"],
    }
    padding = record_bytes - len(orjson.dumps(record)) - len(',"note":""')
    record["note"] = "x" * max(0, padding)
    return record


def write_inbox(
    root: Path, *, files: int, records_per_file: int, record_bytes: int = 400, age_s: float = 600.0
) -> Path:
    """Create `root/inbox` with `files` settled files; returns the inbox path."""
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    settled = time.time() - age_s
    for file_index in range(files):
        records = [make_record(file_index, r, record_bytes) for r in range(records_per_file)]
        payload = records[0] if records_per_file == 1 else records
        path = inbox / f"2026-11-25T13-00-00.{file_index:09d}.json"
        path.write_bytes(JUNK_HEADER + orjson.dumps(payload))
        os.utime(path, (settled, settled))
    return inbox
