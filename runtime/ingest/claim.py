"""Settle, claim and the header (DESIGN "The ingest batch protocol", steps 1 and 2)."""

from __future__ import annotations

import errno
import itertools
import operator
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from runtime.ingest.fs import Entry, FileStat, is_temporary_name
from runtime.ingest.layout import is_valid_name
from runtime.ingest.model import Header, Ingest, Member
from runtime.ingest.moves import quarantine, rename_checked
from runtime.ingest.parallel import WorkerPool, parallel_map
from runtime.ingest.parse import FUTURE_MTIME, INVALID_NAME, NOT_REGULAR_FILE, UNREADABLE
from runtime.ingest.processes import EVERYTHING, Share
from runtime.kill import kill_point

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


# A selection is made ahead only while this many deadline margins remain.
AHEAD_MIN_MARGINS = 2


class Selections:
    """Settle checks one batch ahead, on EFS: once a batch is claimed, the next selection is
    made on a background thread while this batch is parsed, sent and committed, so the settle
    checks' round trips overlap the commit's. On a local cache (operations that do not wait)
    it would only contend for the GIL with the parser: selections are made in line there.

    A selection made ahead may be stale by the time it is claimed; the claim already copes
    (a file taken meanwhile vanishes, one that changed goes back to the inbox). An empty one
    is made again before the loop is told there is nothing to claim: files settle meanwhile."""

    def __init__(
        self,
        ingest: Ingest,
        pool: WorkerPool | None,
        listing: InboxListing,
        remaining_s: Callable[[], float],
    ) -> None:
        self._ingest, self._pool, self._listing = ingest, pool, listing
        self._remaining_s = remaining_s
        self._thread: ThreadPoolExecutor | None = None
        self._ahead: Future[Selection] | None = None

    def next(self) -> Selection:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            selection = ahead.result()
            if selection:
                return selection
        return select_settled(self._ingest, self._pool, self._listing)

    def prepare_next(self) -> None:
        pool = self._pool
        if self._ahead is not None or pool is None or not pool.waits_on_io:
            return
        if self._remaining_s() < AHEAD_MIN_MARGINS * self._ingest.settings.deadline_margin_s:
            return  # near the deadline a listing made ahead could outlast the invocation
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="ingest-select")
        self._ahead = self._thread.submit(select_settled, self._ingest, pool, self._listing)
        self._ingest.counters.add("selections_ahead")

    def close(self) -> None:
        """Wait for a selection still being made (it only read) and let it go."""
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)


def claim_selected(
    ingest: Ingest,
    batch: str,
    token: str,
    pool: WorkerPool | None,
    selection: Selection,
) -> Header:
    """Lease `batch`, move the selected files into it (one rename each), move special
    entries aside, publish the header."""
    fs, layout = ingest.fs, ingest.layout
    ingest.coord.claim(batch, token, ingest.settings.lease_s)
    fs.mkdir(layout.claimed(batch))
    ingest.counters.add("batches_claimed")
    names = sorted(selection.settled)
    after_claim: dict[str, FileStat] = {}
    for index, (name, st) in enumerate(parallel_map(pool, lambda n: _claim_one(ingest, batch, n), names)):
        if index == 0:
            kill_point("claim.mid")
        if st is None:
            ingest.counters.add("vanished_files")
        else:
            after_claim[name] = st
    for name, fate in selection.aside.items():
        _move_aside(ingest, batch, token, name, fate)
    return publish_header(ingest, batch, pool, selection.settled, after_claim)


def _claim_one(ingest: Ingest, batch: str, name: str) -> tuple[str, FileStat | None]:
    """rename into the batch, then stat it there (in the same task: one pass over EFS)."""
    layout = ingest.layout
    if not rename_checked(ingest.fs, layout.inbox_file(name), layout.claimed_file(batch, name)):
        return name, None
    return name, _member_stat(ingest, batch, name)


def _move_aside(ingest: Ingest, batch: str, token: str, name: str, fate: tuple[str, str]) -> None:
    """A symlink, FIFO, socket or device, a name that is not UTF-8, a file that would never
    settle or cannot be opened: the entry itself goes to rejected/ (a symlink's target is
    never opened)."""
    code, detail = fate
    ingest.coord.renew(batch, token, ingest.settings.lease_s)  # the fenced check before the move
    try:
        quarantine(
            ingest.fs,
            ingest.layout.inbox_file(name),
            ingest.layout.rejected(batch),
            code=code,
            detail=detail,
            batch=batch,
        )
    except FileNotFoundError:
        ingest.counters.add("vanished_files")
        return
    ingest.counters.add("rejected_files")


def _member_stat(ingest: Ingest, batch: str, name: str) -> FileStat | None:
    try:
        return ingest.fs.stat(ingest.layout.claimed_file(batch, name))
    except FileNotFoundError:
        return None


def publish_header(
    ingest: Ingest,
    batch: str,
    pool: WorkerPool | None,
    settled: dict[str, FileStat] | None,
    after_claim: dict[str, FileStat] | None = None,
) -> Header:
    """Membership is what is in the batch directory, whoever put it there. A file whose size
    or mtime moved between its settle check and its claim (a writer still writing) goes back
    to the inbox. `after_claim`: stats taken right after our own renames (others are taken
    now)."""
    fs, layout = ingest.fs, ingest.layout
    names = sorted(n for n in fs.listdir(layout.claimed(batch)) if not n.startswith("."))
    members = []
    known = after_claim or {}
    unknown = [n for n in names if n not in known]
    looked_up = parallel_map(pool, lambda n: _member_stat(ingest, batch, n), unknown)
    fresh = dict(zip(unknown, looked_up, strict=True))
    stats = [known[n] if n in known else fresh[n] for n in names]
    for name, st in zip(names, stats, strict=True):
        if st is None or not st.is_regular:
            continue
        expected = settled.get(name) if settled else None
        if expected is not None and (expected.size, expected.mtime_ns) != (st.size, st.mtime_ns):
            _return_to_inbox(ingest, batch, [name])
            continue
        members.append(Member(name=name, size=st.size, mtime_ns=st.mtime_ns))
    header = Header(batch=batch, members=tuple(members), packing=ingest.packing)
    kill_point("header.before")
    fs.mkdir(layout.parts(batch), exist_ok=True)
    if not fs.write_once(layout.header(batch), header.to_json()):
        return load_header(ingest, batch) or header  # someone published first: follow theirs
    return header


def load_header(ingest: Ingest, batch: str) -> Header | None:
    try:
        return Header.from_json(ingest.fs.read_all(ingest.layout.header(batch)))
    except FileNotFoundError:
        return None


def _return_to_inbox(ingest: Ingest, batch: str, names: Iterable[str]) -> None:
    for name in names:
        source = ingest.layout.claimed_file(batch, name)
        if rename_checked(ingest.fs, source, ingest.layout.inbox_file(name)):
            ingest.counters.add("returned_to_inbox")


def return_strays(ingest: Ingest, header: Header) -> None:
    """Entries in the batch directory that the header does not name (a stale claim that
    landed after the header) go back to the inbox, where a later batch takes them."""
    members = {m.name for m in header.members}
    present = ingest.fs.listdir(ingest.layout.claimed(header.batch))
    strays = [n for n in present if not n.startswith(".") and n not in members]
    _return_to_inbox(ingest, header.batch, strays)


def ensure_layout(ingest: Ingest) -> None:
    for directory in ingest.layout.top_level_dirs():
        if not os.path.isdir(directory):
            ingest.fs.makedirs(directory)
