"""One run over one batch: parts, acknowledgments, commit, and the fates of what goes wrong
(docs/ingest.md#3-parts to #7-fencing).

A batch's parts are a pure function of its header and the first `size` bytes of each member,
so a fresh run and a resumed one compute the same bodies; every part is checked against (or
published as) its write-once record before it is sent, and acknowledged in Redis only after
SQS accepted it.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from runtime import codec
from runtime.ingest.errors import BatchFailed, BatchMustHalt, RejectedFile
from runtime.ingest.fs import FileStat
from runtime.ingest.header import return_strays
from runtime.ingest.model import CODE_VERSION, Header, Ingest, Member, PartRecord
from runtime.ingest.moves import finish_unlink, quarantine, quarantined_as, rename_checked, was_quarantined
from runtime.ingest.parallel import WorkerPool, parallel_map
from runtime.ingest.parse import (
    CRASH,
    FILE_TOO_LARGE,
    UNREADABLE,
    Projector,
    compile_projection,
    file_items,
)
from runtime.ingest.sender import MAX_BATCH_BYTES, MAX_BATCH_ENTRIES
from runtime.kill import kill_point

# How many members may be read ahead of the one being parsed (bounds memory).
READ_AHEAD_FILES = 512
# Far more parts than a batch of batch_max_files can make (sizes items for the widest id).
LARGEST_PART_NUMBER = 10**9 - 1
# A member that cannot be read is tried this many times in a run (then the run fails, counted;
# a crash-isolation run rejects it `unreadable`).
READ_ATTEMPTS = 3
READ_RETRY_S = 0.05
# The reason a resumed batch halts when its recorded parts do not reproduce under other rules.
RULES_CHANGED = "rules_changed"
PART_MISMATCH = "part_mismatch"


class OutOfTime(Exception):  # a signal from a run to its loop, not an error
    """The run reached its deadline margin with the batch unfinished."""


@dataclass
class _Read:
    """One member as read for this run: its bytes, or why it takes no part."""

    index: int
    member: Member
    data: bytes | None = None
    skipped: bool = False
    rejection: RejectedFile | None = None  # its fate is known before parsing (too large)
    failure: OSError | None = None  # it could not be read


# Groups of parts (a SendMessageBatch each) a run may have on their way at once.
SHIPMENTS_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class _Outgoing:
    part: codec.PackedPart
    record: PartRecord | None  # to publish before the first send; None when already published


class Shipping:
    """Runs shipments on a pool, at most `limit` at once, or in line without a pool. A failed
    shipment raises from `submit` (the oldest first) or `wait_all`."""

    def __init__(self, pool: WorkerPool | None, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._in_flight: deque[Future[None]] = deque()

    def submit(self, ship: Callable[[list[_Outgoing]], None], group: list[_Outgoing]) -> None:
        if self._pool is None:
            ship(group)
            return
        while len(self._in_flight) >= self._limit:
            self._in_flight.popleft().result()
        self._in_flight.append(self._pool.submit(ship, group))

    def wait_all(self) -> None:
        """Every shipment done; the first failure (in order) raised once all have ended."""
        failure: BaseException | None = None
        while self._in_flight:
            try:
                self._in_flight.popleft().result()
            except BaseException as exc:  # noqa: BLE001 - the first is re-raised below
                failure = failure or exc
        if failure is not None:
            raise failure

    def wait_all_quietly(self) -> None:
        """Every shipment done, their failures dropped: the run is already failing."""
        with contextlib.suppress(BaseException):
            self.wait_all()


@dataclass
class BatchRun:
    """A loader's run over one batch it holds the lease on (`token`)."""

    ingest: Ingest
    header: Header
    token: str
    pool: WorkerPool | None
    remaining_s: Callable[[], float]
    recorded: dict[int, PartRecord] = field(default_factory=dict)
    preread: dict[str, bytes] = field(default_factory=dict)  # members' bytes read at the claim
    acked: set[int] = field(default_factory=set)
    crash_isolation: bool = False

    def __post_init__(self) -> None:
        self._pending: list[_Outgoing] = []
        self._pending_bytes = 0
        # Groups of parts on their way on the pool (each published, sent, acknowledged): their
        # EFS writes and SQS calls overlap the parsing. A FIFO queue takes them in order.
        concurrent = self.pool is not None and not self.crash_isolation and not self.ingest.sender.ordered
        self._shipping = Shipping(self.pool if concurrent else None, SHIPMENTS_IN_FLIGHT)
        self._file_starts: list[int] = []  # global record number where each loaded file starts
        self._file_indexes: list[int] = []  # header index of each loaded file
        self._records_seen = 0
        self._last_renewal = time.monotonic()
        self._rejected_names: set[str] | None = None
        self._computed_parts = 0

    @property
    def batch(self) -> str:
        return self.header.batch

    # --- the run -----------------------------------------------------------------------------
    def run(self) -> None:
        """Send every part not yet acknowledged, then commit. Raises LeaseLost, OutOfTime,
        TransientError or BatchMustHalt (the loop decides what each means)."""
        packing = self.header.packing
        packer = codec.EnvelopePacker(max_bytes=packing.max_message_bytes, make_id=self._part_id)
        project = compile_projection(packing.projection)
        encoder = codec.ItemEncoder()
        # A record must fit alone in any part of the batch, whatever its number's width, so
        # that whether it is "too large" never depends on where it lands.
        item_limit = packing.max_message_bytes - codec.envelope_overhead(self._part_id(LARGEST_PART_NUMBER))
        try:
            for read in self._reads():
                self._keep_lease()
                items = self._items(read, project, encoder, item_limit)
                if items is None:
                    continue
                self._file_starts.append(self._records_seen)
                self._file_indexes.append(read.index)
                for closed in packer.add_many(items, self._records_seen):
                    self._on_part(closed)
                self._records_seen += len(items)
            final = packer.flush()
            if final is not None:
                self._on_part(final)
            self._ship_pending()
            self._shipping.wait_all()
        except BaseException:
            self._shipping.wait_all_quietly()  # nothing of this run may still be sending after it
            raise
        finally:
            self.ingest.counters.add("files", len(self._file_starts))  # once, not a lock per file
        self._check_no_extra_parts()
        self.commit()

    def _part_id(self, k: int) -> str:
        return f"{self.batch}/{k}"

    def _keep_lease(self) -> None:
        if self.remaining_s() <= self.ingest.settings.deadline_margin_s:
            raise OutOfTime
        if time.monotonic() - self._last_renewal > self.ingest.settings.lease_s / 4:
            self.ingest.coord.renew(self.batch, self.token, self.ingest.settings.lease_s)
            self._last_renewal = time.monotonic()

    def _items(
        self,
        read: _Read,
        project: Projector | None,
        encoder: codec.ItemEncoder,
        item_limit: int,
    ) -> list[bytes] | None:
        if read.skipped:
            return None
        if self.crash_isolation:
            self.ingest.coord.set_cursor(self.batch, self.token, self.ingest.settings.lease_s, read.index)
        if read.rejection is not None:
            self.reject(read.index, read.rejection.code, read.rejection.detail)
            return None
        if read.failure is not None or read.data is None:
            detail = f"{read.member.name} cannot be read: {read.failure!r}"
            if not self.crash_isolation:
                raise BatchFailed(UNREADABLE, detail, culprit=read.index) from read.failure
            self.reject(read.index, UNREADABLE, detail)
            return None
        kill_point("parse.file", read.member.name)
        try:
            return file_items(read.member.name, read.data, project, encoder, item_limit)
        except RejectedFile as rejected:
            self.reject(read.index, rejected.code, rejected.detail)
        except Exception as failure:
            # A bug or a limit of the parser on this file: a run that fails counts like one
            # that dies, and crash isolation quarantines the file it was on.
            if not self.crash_isolation:
                raise
            self.reject(read.index, CRASH, f"the loader failed on this file in crash isolation: {failure!r}")
        return None

    # --- reading members -----------------------------------------------------------------------
    def _reads(self) -> Iterator[_Read]:
        """Members in header order, read on the pool one window ahead of the parser."""
        members = list(enumerate(self.header.members))
        everything_read = len(self.preread) == len(members)
        pool = None if self.crash_isolation or everything_read else self.pool
        windows = [members[i : i + READ_AHEAD_FILES] for i in range(0, len(members), READ_AHEAD_FILES)]
        if pool is None:
            yield from map(self._read_member, members)
            return
        ahead = parallel_map(pool, self._read_member, windows[0]) if windows else iter(())
        for following in [*windows[1:], None]:
            current = ahead
            ahead = parallel_map(pool, self._read_member, following) if following else iter(())
            yield from current

    def _read_member(self, indexed: tuple[int, Member]) -> _Read:
        """A member's first `size` bytes (or its fate): never read above max_file_bytes, an
        interrupted quarantine finished only where the quarantined copy is this inode."""
        index, member = indexed
        too_large = member.size > self.ingest.settings.max_file_bytes
        data = self.preread.pop(member.name, None)
        if data is not None and not too_large:
            return _Read(index, member, data=data)  # a new batch: nothing of it quarantined yet
        path = self.ingest.layout.claimed_file(self.batch, member.name)
        try:
            data, st = self._read(path, 0 if too_large else member.size)
        except FileNotFoundError:
            if self._was_rejected(member.name):
                return _Read(index, member, skipped=True)
            raise BatchMustHalt("member_missing", f"{member.name} is in the header but gone") from None
        except OSError as exc:
            return _Read(index, member, failure=exc)
        if self._interrupted_quarantine(member, st):
            finish_unlink(self.ingest.fs, path)  # the quarantined link is this very file
            return _Read(index, member, skipped=True)
        if too_large:
            limit = self.ingest.settings.max_file_bytes
            detail = f"{member.size} bytes, above ingest.max_file_bytes ({limit}); not read"
            return _Read(index, member, rejection=RejectedFile(FILE_TOO_LARGE, detail))
        if len(data) < member.size:
            raise BatchMustHalt("member_shrank", f"{member.name} has {len(data)} of {member.size} bytes")
        return _Read(index, member, data=data)

    def _read(self, path: str, size: int) -> tuple[bytes, FileStat]:
        """read_prefix, tried READ_ATTEMPTS times (ENOENT at once: it means something)."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return self.ingest.fs.read_prefix(path, size)
            except FileNotFoundError:
                raise
            except OSError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                time.sleep(READ_RETRY_S * 2**attempt)
        raise AssertionError("unreachable")

    def _interrupted_quarantine(self, member: Member, st: FileStat) -> bool:
        """A second link is a quarantine that died between link and unlink only when the
        quarantined entry is this same inode; any other second link (the writer's, an
        operator's) leaves the file to load like any other."""
        if st.nlink <= 1:
            return False
        rejected = self.ingest.layout.rejected(self.batch)
        return quarantined_as(self.ingest.fs, st.ino, rejected, member.name) is not None

    def _rejected_listing(self) -> set[str]:
        if self._rejected_names is None:
            try:
                self._rejected_names = set(self.ingest.fs.listdir(self.ingest.layout.rejected(self.batch)))
            except FileNotFoundError:
                self._rejected_names = set()
        return self._rejected_names

    def _was_rejected(self, name: str) -> bool:
        return was_quarantined(self._rejected_listing(), name)

    # --- parts -----------------------------------------------------------------------------------
    def _locate(self, record_number: int) -> tuple[int, str, int]:
        slot = bisect.bisect_right(self._file_starts, record_number) - 1
        header_index = self._file_indexes[slot]
        name = self.header.members[header_index].name
        return header_index, name, record_number - self._file_starts[slot]

    def _record_of(self, part: codec.PackedPart) -> PartRecord:
        return PartRecord.of(part, self._locate(part.first), self._locate(part.last))

    def _on_part(self, part: codec.PackedPart) -> None:
        self._computed_parts = part.index + 1
        record: PartRecord | None = self._record_of(part)
        existing = self.recorded.get(part.index)
        if existing is not None:
            if existing != record:
                raise BatchMustHalt(self._mismatch, f"part {part.index} differs from its record")
            if part.index in self.acked:
                return
            self.ingest.counters.add("parts_resent")
            record = None  # published by an earlier run
        if self._pending and (
            len(self._pending) == MAX_BATCH_ENTRIES or self._pending_bytes + part.size > MAX_BATCH_BYTES
        ):
            self._ship_pending()
        self._pending.append(_Outgoing(part, record))
        self._pending_bytes += part.size

    def _ship_pending(self) -> None:
        if self._pending:
            group, self._pending, self._pending_bytes = self._pending, [], 0
            self._shipping.submit(self._ship, group)

    def _ship(self, group: list[_Outgoing]) -> None:
        """Publish each new part's record, send the group, acknowledge it: a part is never
        sent before its record is on EFS, nor acknowledged before SQS accepted it."""
        for outgoing in group:
            if outgoing.record is not None:
                self._publish(outgoing.record)
        parts = [outgoing.part for outgoing in group]
        kill_point("part.published")
        self.ingest.sender.send(parts)
        kill_point("part.sent")
        self.ingest.coord.ack(self.batch, self.token, self.ingest.settings.lease_s, [p.index for p in parts])
        self._last_renewal = time.monotonic()
        counters = self.ingest.counters
        counters.add("parts", len(parts))
        counters.add("records", sum(p.count for p in parts))
        counters.add("bytes", sum(len(p.body) for p in parts))

    def _publish(self, record: PartRecord) -> None:
        path = self.ingest.layout.part(self.batch, record.k)
        if self.ingest.fs.write_once(path, record.to_json()):
            return
        existing = PartRecord.from_json(self.ingest.fs.read_all(path))
        if existing != record:
            raise BatchMustHalt(self._mismatch, f"part {record.k} differs from its record")

    @property
    def _mismatch(self) -> str:
        """Why recorded parts do not reproduce: other rules (code) than the header's, or not."""
        return RULES_CHANGED if self.header.code_version != CODE_VERSION else PART_MISMATCH

    def _check_no_extra_parts(self) -> None:
        extra = sorted(k for k in self.recorded if k >= self._computed_parts)
        if extra:
            raise BatchMustHalt(self._mismatch, f"recorded parts {extra} are not recomputed")

    # --- fates -------------------------------------------------------------------------------
    def commit(self) -> None:
        """Every part is acknowledged: strays back to the inbox, `.committed`, the durable
        rename into processed/, then the Redis commit (fenced)."""
        ingest, layout = self.ingest, self.ingest.layout
        return_strays(ingest, self.header)
        ingest.fs.write_once(layout.committed_marker(self.batch), str(time.time()).encode())
        ingest.coord.renew(self.batch, self.token, ingest.settings.lease_s)
        kill_point("commit.before_rename")
        if not rename_checked(ingest.fs, layout.claimed(self.batch), layout.processed(self.batch)):
            raise BatchMustHalt("batch_missing", f"claimed/{self.batch} vanished before its commit")
        kill_point("commit.after_rename")
        ingest.coord.commit(self.batch, self.token)
        ingest.counters.add("batches_committed")

    def reject(self, header_index: int, code: str, detail: str) -> None:
        """Quarantine a member, only right after a successful fenced check, and never one
        whose records a recorded part holds (the batch halts instead)."""
        member = self.header.members[header_index]
        if self._in_recorded_part(header_index):
            raise BatchMustHalt(
                self._mismatch if code != CRASH else "crash_in_published_part",
                f"{member.name} would be rejected ({code}: {detail}), but a recorded part holds its records",
            )
        self.ingest.coord.renew(self.batch, self.token, self.ingest.settings.lease_s)
        quarantine(
            self.ingest.fs,
            self.ingest.layout.claimed_file(self.batch, member.name),
            self.ingest.layout.rejected(self.batch),
            code=code,
            detail=detail,
            batch=self.batch,
        )
        self.ingest.counters.add("rejected_files")

    def _in_recorded_part(self, header_index: int) -> bool:
        """Does a recorded part hold records of this member? A part's range spans it, and it
        was not rejected by an earlier run (whose reason file a quarantine writes first)."""
        if not any(r.holds_file(header_index) for r in self.recorded.values()):
            return False
        return not self._was_rejected(self.header.members[header_index].name)

    def quarantine_crash_file(self, header_index: int) -> None:
        """The file a crash-isolation run died on, unless a published part holds its records."""
        path = self.ingest.layout.claimed_file(self.batch, self.header.members[header_index].name)
        if self.ingest.fs.exists(path):
            self.reject(header_index, CRASH, "the loader died on this file in crash isolation")
