"""The straightforward loader the original post describes, kept as the reference the sluice
loader is measured against. Deliberately unoptimised and not exactly-once: regex-strip the
comments, `json.loads`, one SQS message per record sent with SendMessageBatch of 10, and one
Redis round trip per file to mark it processed. Never used outside `bench/`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_COMMENT_LINES = re.compile(r"^\s*(#|//|/\*.*?\*/|;).*$", re.MULTILINE)


@dataclass
class BaselineResult:
    files: int = 0
    records: int = 0


def load_inbox(inbox: Path, sqs: Any, queue_url: str, redis: Any) -> BaselineResult:
    result = BaselineResult()
    for path in sorted(inbox.iterdir()):
        text = _COMMENT_LINES.sub("", path.read_text())
        parsed = json.loads(text)
        records = parsed if isinstance(parsed, list) else [parsed]
        for start in range(0, len(records), 10):
            chunk = records[start : start + 10]
            entries = [{"Id": str(i), "MessageBody": json.dumps(record)} for i, record in enumerate(chunk)]
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        redis.sadd("json_files_processed", path.name)
        result.files += 1
        result.records += len(records)
    return result
