"""The archiver (docs/ingest.md#8-archive): committed batches out of the way.

For each `processed/<batch>/` whose `.committed` stamp is older than the lease plus the
loader's timeout (so no loader that could still touch it is alive):

1. re-stat every member against the header: a file whose size or mtime changed after the claim
   was written to late — its extra bytes were never sent — so a copy goes to
   `rejected/<batch>/` as `late_write`, its reason recording how many bytes were sent;
2. return strays (entries a stale loader renamed in after the commit) to `inbox/`;
3. move the batch to `archive/YYYY/MM/DD/HH/<batch>` (the commit's hour, UTC) with one rename;
4. drop the batch from `{sluice:ingest}:json_files_processed`.

Every step is idempotent, so an archiver killed anywhere simply does the rest next time. Old
archive hours are deleted once past `archive_retention_days`, when that is set. Work within a
batch runs on a thread pool: on EFS each stat costs ~1 ms and each unlink ~2.7 ms.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from aws_lambda_powertools.metrics import MetricUnit

from runtime import metric_names
from runtime.config import IngestSettings
from runtime.ingest.coord import PROCESSED, TAG
from runtime.ingest.fs import Fs, is_temporary_name
from runtime.ingest.layout import COMMITTED_NAME, HEADER_NAME, Layout, reason_name
from runtime.ingest.model import Header, Ingest, Member
from runtime.ingest.moves import move_directory, reason_document
from runtime.ingest.parse import FILE_TOO_LARGE
from runtime.kill import kill_point
from runtime.observability import logger, metrics

LATE_WRITE = "late_write"
ARCHIVER_LOCK = f"{TAG}:archiver"
ARCHIVE_DIR = "archive"
# Stats and unlinks in flight within a batch: on EFS each waits a round trip.
ARCHIVER_THREADS = 32

RemainingSeconds = Callable[[], float]


@dataclass
class ArchiverResult:
    batches_archived: int = 0
    batches_waiting: int = 0
    files_archived: int = 0
    late_writes: int = 0
    strays_returned: int = 0
    batches_deleted: int = 0
    files_deleted: int = 0
    processed_trimmed: int = 0
    locked_out: bool = False
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


@dataclass
class Archiver:
    settings: IngestSettings
    fs: Fs
    redis: redis.Redis
    threads: int = ARCHIVER_THREADS
    clock: Callable[[], float] = time.time

    @classmethod
    def for_ingest(cls, ingest: Ingest, *, threads: int = ARCHIVER_THREADS) -> Archiver:
        """The archiver of the ingest system `build_ingest` wired: its settings, EFS and Redis."""
        return cls(settings=ingest.settings, fs=ingest.fs, redis=ingest.coord.redis, threads=threads)

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.root)

    @property
    def archive_root(self) -> str:
        return os.path.join(self.settings.root, ARCHIVE_DIR)

    def run(self, remaining_s: RemainingSeconds) -> ArchiverResult:
        """Archive due batches, then apply retention, until the deadline margin."""
        started = time.monotonic()
        result = ArchiverResult()
        lock_ttl_ms = max(1000, int(remaining_s() * 1000))
        token = os.urandom(8).hex()
        # One archiver at a time: overlapping runs would be safe (every step is idempotent)
        # but would only repeat each other's EFS operations.
        if not self.redis.set(ARCHIVER_LOCK, token, nx=True, px=lock_ttl_ms):
            result.locked_out = True
            return result
        try:
            with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="archiver") as pool:
                self._archive_due(pool, result, remaining_s)
                if self.settings.archive_retention_days is not None:
                    self._apply_retention(pool, result, remaining_s)
            self._trim_orphans(result)
        finally:
            self._unlock(token)
        result.elapsed_s = time.monotonic() - started
        _emit_metrics(result)
        return result

    def _unlock(self, token: str) -> None:
        script = (
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
        )
        self.redis.eval(script, 1, ARCHIVER_LOCK, token)

    # --- archiving ---------------------------------------------------------------------------
    def _due_batches(self) -> list[tuple[str, float]]:
        try:
            names = sorted(self.fs.listdir(self.layout.processed_root))
        except FileNotFoundError:
            return []
        due = []
        for batch in names:
            committed = self._committed_at(batch)
            if committed is not None:
                due.append((batch, committed))
        return due

    def _committed_at(self, batch: str) -> float | None:
        path = os.path.join(self.layout.processed(batch), COMMITTED_NAME)
        try:
            return float(self.fs.read_all(path).decode())
        except FileNotFoundError:
            # Committed by a rename, so the stamp must exist; without it fall back to the
            # directory's own mtime rather than never archiving the batch.
            with contextlib.suppress(FileNotFoundError):
                return self.fs.stat(self.layout.processed(batch)).mtime_ns / 1e9
            return None

    def _archive_due(
        self, pool: ThreadPoolExecutor, result: ArchiverResult, remaining_s: RemainingSeconds
    ) -> None:
        now = self.clock()
        for batch, committed in self._due_batches():
            if remaining_s() <= self.settings.deadline_margin_s:
                return
            if now - committed < self.settings.archive_after_s:
                result.batches_waiting += 1
                continue
            self.archive_batch(pool, batch, committed, result)

    def archive_batch(
        self, pool: ThreadPoolExecutor, batch: str, committed: float, result: ArchiverResult
    ) -> None:
        directory = self.layout.processed(batch)
        header = Header.from_json(self.fs.read_all(os.path.join(directory, HEADER_NAME)))
        members = {m.name: m for m in header.members}
        present = [n for n in self.fs.listdir(directory) if not is_temporary_name(n)]
        ours = [members[n] for n in present if n in members]
        strays = [n for n in present if n not in members]
        for late in pool.map(lambda m: self._late_write(directory, m), ours):
            if late is not None:
                self._quarantine_late(batch, directory, *late)
                result.late_writes += 1
        kill_point("archiver.after_late_writes")
        for name in strays:
            self._return_stray(directory, name)
        result.strays_returned += len(strays)
        kill_point("archiver.after_strays")
        move_directory(self.fs, directory, os.path.join(self.archive_root, _hour_path(committed)), batch)
        kill_point("archiver.after_move")
        self.redis.zrem(PROCESSED, batch)
        result.batches_archived += 1
        result.files_archived += len(ours)

    def _late_write(self, directory: str, member: Member) -> tuple[Member, int, int] | None:
        try:
            now = self.fs.stat(os.path.join(directory, member.name))
        except FileNotFoundError:
            return None  # gone since the listing: nothing left to compare
        if now.size != member.size or now.mtime_ns != member.mtime_ns:
            return member, now.size, now.mtime_ns
        return None

    def _quarantine_late(self, batch: str, directory: str, member: Member, size: int, mtime_ns: int) -> None:
        """A copy of the file as it is now goes to rejected/<batch>/ beside its reason; the
        original stays with its batch. Both are write-once, so a re-run after a crash between
        them finishes the copy and never writes a second one. (Within one batch names are
        unique, and a member the loader rejected is no longer in processed/.)"""
        rejected_dir = self.layout.rejected(batch)
        target = os.path.join(rejected_dir, member.name)
        if self.fs.exists(target):
            return
        self.fs.makedirs(rejected_dir)
        detail = (
            f"written after the claim: {member.size} bytes (mtime_ns {member.mtime_ns}) were sent; "
            f"the file now has {size} bytes (mtime_ns {mtime_ns})"
        )
        source = os.path.join(directory, member.name)
        too_large = size > self.settings.max_file_bytes
        if too_large:  # from the stat, never read: the copy is a second link to the same file
            detail += f"; above ingest.max_file_bytes ({self.settings.max_file_bytes}), linked, not copied"
        code = FILE_TOO_LARGE if too_large else LATE_WRITE
        reason = reason_document(code, detail, batch, bytes_sent=member.size)
        self.fs.write_once(os.path.join(rejected_dir, reason_name(member.name)), reason)
        kill_point("archiver.after_late_reason")
        if too_large:
            with contextlib.suppress(FileExistsError):
                self.fs.link(source, target)
        else:
            self.fs.write_once(target, self.fs.read_all(source))
        logger.warning(
            "late write quarantined",
            extra={"code": code, "file": member.name, "batch": batch, "bytes_sent": member.size},
        )

    def _return_stray(self, directory: str, name: str) -> None:
        source = os.path.join(directory, name)
        try:
            self.fs.rename(source, self.layout.inbox_file(name))
        except FileNotFoundError:
            if self.fs.exists(source):
                raise
        logger.info("stray returned to the inbox", extra={"file": name, "from": directory})

    # --- retention ---------------------------------------------------------------------------
    def _apply_retention(
        self, pool: ThreadPoolExecutor, result: ArchiverResult, remaining_s: RemainingSeconds
    ) -> None:
        days = self.settings.archive_retention_days
        assert days is not None
        cutoff = self.clock() - days * 86_400
        for hour_dir, hour_start in self._archive_hours():
            if hour_start + 3600 > cutoff:
                return  # hours are visited oldest first
            if remaining_s() <= self.settings.deadline_margin_s:
                return
            for batch in self.fs.listdir(hour_dir):
                result.files_deleted += self._delete_tree(pool, os.path.join(hour_dir, batch))
                result.batches_deleted += 1
                kill_point("archiver.after_delete_batch")
            self._remove_empty_parents(hour_dir)

    def _archive_hours(self) -> list[tuple[str, float]]:
        hours = []
        for year, month, day, hour in self._walk_levels(self.archive_root, 4):
            try:
                start = dt.datetime(int(year), int(month), int(day), int(hour), tzinfo=dt.UTC).timestamp()
            except ValueError:
                continue  # not a directory the archiver made: leave it alone
            hours.append((os.path.join(self.archive_root, year, month, day, hour), start))
        return sorted(hours, key=lambda h: h[1])

    def _walk_levels(self, root: str, depth: int) -> list[tuple[str, ...]]:
        if depth == 0:
            return [()]
        try:
            names = self.fs.listdir(root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [
            (name, *rest)
            for name in sorted(names)
            for rest in self._walk_levels(os.path.join(root, name), depth - 1)
        ]

    def _delete_tree(self, pool: ThreadPoolExecutor, directory: str) -> int:
        deleted = 0
        subdirs: list[str] = []
        files: list[str] = []
        for entry in self.fs.scandir(directory):
            (subdirs if entry.is_dir else files).append(os.path.join(directory, entry.name))
        for path in subdirs:
            deleted += self._delete_tree(pool, path)
        for _ in pool.map(self._unlink_quietly, files):
            deleted += 1
        with contextlib.suppress(FileNotFoundError):
            self.fs.rmdir(directory)
        return deleted

    def _unlink_quietly(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # a retried unlink that already happened
            self.fs.unlink(path)

    def _remove_empty_parents(self, directory: str) -> None:
        while os.path.abspath(directory) != os.path.abspath(self.archive_root):
            try:
                self.fs.rmdir(directory)
            except (FileNotFoundError, OSError):
                return
            directory = os.path.dirname(directory)

    # --- the seed's processed set ------------------------------------------------------------------
    def _trim_orphans(self, result: ArchiverResult) -> None:
        """Entries whose batch has left processed/ (a run died between the move and the trim).
        The loader adds a batch to the set only after its rename into processed/, so a due
        entry without that directory has been archived."""
        horizon = self.clock() - self.settings.archive_after_s
        members: list[bytes] = self.redis.zrangebyscore(PROCESSED, "-inf", horizon, start=0, num=1000)  # type: ignore[assignment]
        old = [m.decode() for m in members]
        orphans = [b for b in old if not self.fs.exists(self.layout.processed(b))]
        if orphans:
            result.processed_trimmed += int(self.redis.zrem(PROCESSED, *orphans))


def _hour_path(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y/%m/%d/%H")


def _emit_metrics(result: ArchiverResult) -> None:
    for name, value in (
        (metric_names.BATCHES_ARCHIVED, result.batches_archived),
        (metric_names.LATE_WRITES, result.late_writes),
        (metric_names.STRAYS_RETURNED, result.strays_returned),
        (metric_names.FILES_DELETED, result.files_deleted),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
