"""What a run looks like right now, for the live display: the share's directories, the queues,
the systems' counters and the sink. Everything here reads; nothing changes state."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.ingest.layout import REASON_SUFFIX


@dataclass(frozen=True)
class ShareCounts:
    inbox: int = 0
    claimed: int = 0
    parts: int = 0
    processed: int = 0
    archived: int = 0
    rejected: int = 0
    halted_batches: int = 0


def _batch_members(batch: Path) -> tuple[int, int]:
    """(member files, published parts) of one batch directory."""
    members = parts = 0
    with os.scandir(batch) as entries:
        for entry in entries:
            if entry.name == ".parts":
                parts += sum(1 for _ in os.scandir(entry.path))
            elif not entry.name.startswith("."):
                members += 1
    return members, parts


def _count_batches(directory: Path) -> tuple[int, int]:
    members = parts = 0
    if not directory.is_dir():
        return 0, 0
    for batch in os.scandir(directory):
        if batch.is_dir(follow_symlinks=False):
            try:
                batch_members, batch_parts = _batch_members(Path(batch.path))
            except FileNotFoundError:
                continue  # moved while we looked (committed or archived)
            members += batch_members
            parts += batch_parts
    return members, parts


def _count_archive(directory: Path) -> tuple[int, int]:
    members = parts = 0
    for root, _dirs, files in os.walk(directory):
        if os.path.basename(root) == ".parts":
            parts += len(files)
        else:
            members += sum(1 for name in files if not name.startswith("."))
    return members, parts


def count_share(share: Path) -> ShareCounts:
    """Files by place (docs/ingest.md#the-efs-layout); parts = `.parts/<k>.json` published."""
    inbox = share / "inbox"
    in_inbox = (
        sum(1 for entry in os.scandir(inbox) if not entry.name.startswith(".")) if inbox.is_dir() else 0
    )
    claimed, claimed_parts = _count_batches(share / "claimed")
    processed, processed_parts = _count_batches(share / "processed")
    archived, archived_parts = _count_archive(share / "archive")
    rejected = sum(
        1
        for _root, _dirs, files in os.walk(share / "rejected")
        for name in files
        if name.endswith(REASON_SUFFIX)
    )
    halted = share / "halted"
    return ShareCounts(
        inbox=in_inbox,
        claimed=claimed,
        parts=claimed_parts + processed_parts + archived_parts,
        processed=processed,
        archived=archived,
        rejected=rejected,
        halted_batches=sum(1 for _ in os.scandir(halted)) if halted.is_dir() else 0,
    )


QUEUE_DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def queue_depth(sqs: Any, url: str) -> dict[str, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=QUEUE_DEPTH_ATTRIBUTES)["Attributes"]
    return {
        "visible": int(attributes["ApproximateNumberOfMessages"]),
        "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        "delayed": int(attributes["ApproximateNumberOfMessagesDelayed"]),
    }


@dataclass
class RateMeter:
    """Records per second over a sliding window of observations."""

    window_s: float = 5.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    def observe(self, total: int) -> float:
        now = time.monotonic()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.pop(0)
        first_at, first_total = self.samples[0]
        elapsed = now - first_at
        return (total - first_total) / elapsed if elapsed > 0 else 0.0
