"""The inbox listing keeps a bounded number of the oldest names (a deep backlog costs listings,
not memory) and still hands every file out, oldest first."""

from __future__ import annotations

from pathlib import Path

import redis

from runtime.ingest.selection import LISTING_KEEP_FACTOR, OLDEST_SLICE_FACTOR, InboxListing
from runtime.ingest.sender import DiscardingPartSender
from tests.support.ingest import make_ingest, write_file


def test_listing_holds_only_the_oldest_names_and_refills(tmp_path: Path, redis_client: redis.Redis) -> None:
    for index in range(300):
        write_file(tmp_path, f"2026-11-25T13-{index:05d}.json", b"{}")
    (tmp_path / "inbox" / "subdir").mkdir()
    write_file(tmp_path, ".hidden.json", b"{}")
    ingest = make_ingest(tmp_path, redis_client, DiscardingPartSender(), batch_max_files=2)
    listing = InboxListing(ingest)
    handed_out: list[str] = []
    while batch := listing.oldest_slice():
        assert len(listing._remaining) <= LISTING_KEEP_FACTOR * 2
        assert len(batch) <= OLDEST_SLICE_FACTOR * 2
        oldest = sorted(c.name for c in listing._remaining)[: len(batch)]
        assert sorted(c.name for c in batch) == oldest  # the oldest slice, rotated
        taken = {c.name for c in batch[:2]}
        for name in taken:
            (tmp_path / "inbox" / name).unlink()  # claimed: gone from the inbox
        listing.examined(taken)
        handed_out.extend(sorted(taken))
    assert sorted(handed_out) == [f"2026-11-25T13-{i:05d}.json" for i in range(300)]
    assert ingest.counters.skipped_entries > 0  # the directory and the dotfile are never candidates
