"""Listing and selection: which inbox files the next claim takes (docs/ingest.md#1-settle).

The loader lists the oldest names of the inbox (`InboxListing`), then settle-checks a slice of
them (`select_settled`): settled regular files are selected for the claim, entries that get a
fate instead (special files, names that are not UTF-8, mtimes far in the future, files that
cannot be opened) are set aside. Nothing here moves a file; the claim does (`claim.py`).
"""

from __future__ import annotations

import errno
import itertools
import operator
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from runtime.ingest.fs import Entry, FileStat, is_temporary_name
from runtime.ingest.layout import is_valid_name
from runtime.ingest.model import Header, Ingest
from runtime.ingest.parallel import WorkerPool, parallel_map
from runtime.ingest.parse import FUTURE_MTIME, INVALID_NAME, NOT_REGULAR_FILE, UNREADABLE
from runtime.ingest.processes import EVERYTHING, Share

OLDEST_SLICE_FACTOR = 4
# A listing keeps only this many batches' worth of the oldest names: memory stays bounded
# however deep the backlog (a million files), at the cost of listing again once they are used.
LISTING_KEEP_FACTOR = 16
# A long backlog is listed again at most this often (more often when it runs low); files that
# were too young at the last listing wait at most this long on top of their settle time.
LISTING_MAX_AGE_S = 10.0


# An inbox entry as listed; entries order by name (names are timestamps, and unique).
Candidate = Entry


class InboxListing:
    """The oldest names of the inbox as last listed (those in this process's `share`), minus
    what this loader has examined since.

    Listing a large inbox for every batch would cost more than the claims; the listing is
    refreshed once fewer than a batch of unexamined names remain, or after the settle time
    (files that were too young then may be settled now). Only the oldest
    `LISTING_KEEP_FACTOR` batches' worth of names are kept (the inbox is streamed through a
    bounded selection), so a deep backlog costs listings, not memory. A name another loader took
    since simply vanishes at its settle check.
    """

    def __init__(self, ingest: Ingest, share: Share = EVERYTHING) -> None:
        self._ingest = ingest
        self._share = share
        self._remaining: list[Candidate] = []
        self._listed_at = float("-inf")

    def _refresh(self) -> None:
        keep = LISTING_KEEP_FACTOR * self._ingest.settings.batch_max_files
        self._remaining = _smallest(keep, self._candidates())
        self._listed_at = time.monotonic()

    def _candidates(self) -> Iterator[Candidate]:
        skipped = 0
        for entry in self._ingest.fs.iter_dir(self._ingest.layout.inbox):
            if not self._share.holds(entry.name):
                continue  # another process of this invocation loads (or skips) it
            if entry.is_dir or is_temporary_name(entry.name):
                skipped += 1
                continue
            yield entry
        self._ingest.counters.add("skipped_entries", skipped)

    def oldest_slice(self, *, refresh: bool = True) -> list[Candidate]:
        """The oldest slice (names are timestamps), rotated to a random offset so concurrent
        loaders rarely collide. Directories and temporary names are skipped. Without
        `refresh`, the next slice of this listing (after what was examined), never a new one."""
        settings = self._ingest.settings
        stale = time.monotonic() - self._listed_at > max(settings.settle_s, LISTING_MAX_AGE_S)
        if refresh and (stale or len(self._remaining) < settings.batch_max_files):
            self._refresh()
        oldest = self._remaining[: OLDEST_SLICE_FACTOR * settings.batch_max_files]
        if not oldest:
            return []
        offset = random.randrange(len(oldest))
        return oldest[offset:] + oldest[:offset]

    def examined(self, names: set[str]) -> None:
        """Drop what a selection examined: all of it lies in the oldest slice it was given."""
        if names:
            head = OLDEST_SLICE_FACTOR * self._ingest.settings.batch_max_files
            kept = [c for c in self._remaining[:head] if c.name not in names]
            self._remaining[:head] = kept


_NAME = operator.itemgetter(0)


def _smallest(keep: int, candidates: Iterator[Candidate]) -> list[Candidate]:
    """The `keep` smallest candidates, sorted, holding at most twice that many at a time: a
    chunk is appended, then everything sorted (in C) and cut back, so a million-file listing
    costs little more than reading it (heapq.nsmallest compares each element in Python)."""
    kept: list[Candidate] = []
    while chunk := list(itertools.islice(candidates, keep)):
        kept.extend(chunk)
        kept.sort(key=_NAME)  # comparing names, not tuples: a third faster
        del kept[keep:]
    return kept


# A settled file this small is read by its settle check's open (one open per file instead of
# two); the bytes are used only if the file is unchanged after the claim. Bounded per batch.
PREREAD_MAX_FILE_BYTES = 64 * 1024
PREREAD_MAX_BATCH_BYTES = 64 * 1024 * 1024


# An inbox file that cannot be opened is tried this many times before it is moved aside.
OPEN_ATTEMPTS = 3
OPEN_RETRY_S = 0.02
# An open that fails with these means "not a regular file any more" (a symlink or socket put in
# its place since the listing): the next listing sees it for what it is.
_NOT_REGULAR_ERRNOS = frozenset({errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP})
Check = tuple[FileStat, bytes | None] | tuple[str, str] | None


def _settle_check(ingest: Ingest, name: str, settled_before_ns: int) -> Check:
    """(stat, bytes or None) for a settled regular file; (code, detail) for a file that gets
    a fate instead (an mtime too far in the future, one that cannot be opened); None when
    not claimable now."""

    small = min(PREREAD_MAX_FILE_BYTES, ingest.settings.max_file_bytes)  # nothing too large is read

    def settled_and_small(st: FileStat) -> bool:
        return st.mtime_ns <= settled_before_ns and st.size <= small

    path = ingest.layout.inbox_file(name)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            st, data = ingest.fs.open_stat_read(path, settled_and_small)
            break
        except FileNotFoundError:
            return None  # vanished since the listing (another loader took it)
        except OSError as exc:
            if exc.errno in _NOT_REGULAR_ERRNOS:
                return None
            if attempt == OPEN_ATTEMPTS - 1:
                return UNREADABLE, f"cannot be opened after {OPEN_ATTEMPTS} attempts: {exc!r}"
            time.sleep(OPEN_RETRY_S * 2**attempt)
    skew_ns = st.mtime_ns - time.time_ns()
    if skew_ns > ingest.settings.max_clock_skew_s * 1e9:
        detail = (
            f"mtime {skew_ns / 1e9:.0f} s ahead of the loader's clock, beyond ingest.max_clock_skew_s "
            f"({ingest.settings.max_clock_skew_s:g} s): it would never settle"
        )
        return FUTURE_MTIME, detail
    return (st, data) if st.mtime_ns <= settled_before_ns else None


_ASIDE_DETAIL = {
    NOT_REGULAR_FILE: "not a regular file; moved aside unopened",
    INVALID_NAME: "the name is not UTF-8 (item ids travel as JSON); moved aside unopened",
}


@dataclass(frozen=True)
class Selection:
    """What a claim will take: settled regular files (name -> the stat that settled them,
    and the bytes read on the way for small ones) and the entries that go aside instead
    (name -> reason code and detail: special entries, names that are not UTF-8, files with
    an mtime far in the future or that cannot be opened)."""

    settled: dict[str, FileStat]
    aside: dict[str, tuple[str, str]]
    preread: dict[str, bytes] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.settled or self.aside)

    def preread_for(self, header: Header) -> dict[str, bytes]:
        """Bytes read before the claim that are exactly a member's first `size` bytes: the
        file is unchanged since (same size and mtime; the writer only ever appends)."""
        usable = {}
        for member in header.members:
            data = self.preread.get(member.name)
            st = self.settled.get(member.name)
            if (
                data is not None
                and st is not None
                and (st.size, st.mtime_ns, len(data))
                == (
                    member.size,
                    member.mtime_ns,
                    member.size,
                )
            ):
                usable[member.name] = data
        return usable


def _aside_at_sight(candidate: Candidate) -> tuple[str, str] | None:
    """The fate of an entry known from its listing alone (never opened)."""
    if not candidate.is_regular:
        return NOT_REGULAR_FILE, _ASIDE_DETAIL[NOT_REGULAR_FILE]
    if not is_valid_name(candidate.name):
        return INVALID_NAME, _ASIDE_DETAIL[INVALID_NAME]
    return None


def select_settled(ingest: Ingest, pool: WorkerPool | None, listing: InboxListing) -> Selection:
    """Up to batch_max_files settled regular files from the oldest slice of the inbox; past an
    oldest slice that yields nothing (files that never settle), the next slices of the same
    listing, so nothing at the head of the inbox starves what is behind it."""
    selection = Selection({}, {}, {})
    for index in range(LISTING_KEEP_FACTOR // OLDEST_SLICE_FACTOR):
        slice_ = listing.oldest_slice(refresh=index == 0)
        if not slice_:
            break
        _select_from(ingest, pool, listing, slice_, selection)
        if selection:
            break
    return selection


def _select_from(
    ingest: Ingest,
    pool: WorkerPool | None,
    listing: InboxListing,
    slice_: list[Candidate],
    selection: Selection,
) -> None:
    limit = ingest.settings.batch_max_files
    settled, aside, preread = selection.settled, selection.aside, selection.preread
    preread_bytes = 0
    settled_before_ns = time.time_ns() - int(ingest.settings.settle_s * 1e9)
    examined: set[str] = set()
    start = 0
    while start < len(slice_) and len(settled) < limit:
        # Check as many as could still be needed at once (all in flight on EFS), never fewer
        # than a small window.
        group = slice_[start : start + max(64, limit - len(settled))]
        start += len(group)
        regular = []
        for candidate in group:
            fate = _aside_at_sight(candidate)
            if fate is None:
                regular.append(candidate.name)
            else:
                aside[candidate.name] = fate
                examined.add(candidate.name)
        checks = parallel_map(pool, lambda n: _settle_check(ingest, n, settled_before_ns), regular)
        for name, check in zip(regular, checks, strict=True):
            if check is None or len(settled) < limit:  # settled ones past the limit stay listed
                examined.add(name)
            if check is None:
                continue
            if isinstance(check[0], str):
                aside[name] = check  # type: ignore[assignment]
            elif len(settled) < limit:
                st, data = check
                settled[name] = st  # type: ignore[assignment]
                if isinstance(data, bytes) and preread_bytes + len(data) <= PREREAD_MAX_BATCH_BYTES:
                    preread[name] = data
                    preread_bytes += len(data)
    listing.examined(examined)
