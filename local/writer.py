"""The writer simulator: drops JSON files into `inbox/` the way the writer container does.

Files are named by a timestamp (plus a sequence number, so a name is never reused), start with
junk comment lines, hold `records_per_file` records of about `record_bytes` each, and are written
**non-atomically**: created under their final name, written in several pieces, then closed —
the loader must wait for them to settle. A share of files is bad input from the bad-input table
(docs/bad-input.md#files-ingest), each with the fate it must meet; every file written goes into
a `Manifest` that the run summary checks against what reached the sink.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson

JUNK_LINES = (
    b"# exported by writer-sim 1.0",
    b"// host: local",
    b"/* window: 1s */",
    b"; generated for sluice",
    b"",
)

Fate = Literal["delivered", "rejected", "skipped"]


@dataclass(frozen=True)
class BadKind:
    """A kind of bad input, the fate it must meet and the reason codes that are correct for it."""

    name: str
    fate: Fate
    codes: frozenset[str] = frozenset()


# docs/bad-input.md#files-ingest: every row the writer can produce, with the codes that are right for it. A
# file of nothing but comments may be `empty` or `no_json` (the table lists both for that row).
BAD_KINDS: tuple[BadKind, ...] = (
    BadKind("empty", "rejected", frozenset({"empty"})),
    BadKind("comments_only", "rejected", frozenset({"empty", "no_json"})),
    BadKind("truncated_json", "rejected", frozenset({"invalid_json"})),
    BadKind("not_utf8", "rejected", frozenset({"invalid_encoding"})),
    # Text before the first `{`/`[` is junk to the loader, so a bare top-level string is
    # indistinguishable from a file of nothing but junk.
    BadKind("scalar_top_level", "rejected", frozenset({"not_records", "no_json"})),
    BadKind("array_of_numbers", "rejected", frozenset({"not_records"})),
    BadKind("record_too_large", "rejected", frozenset({"record_too_large"})),
    BadKind("symlink", "rejected", frozenset({"not_regular_file"})),
    BadKind("tmp_name", "skipped"),
    BadKind("dotfile", "skipped"),
    BadKind("directory", "skipped"),
)
BAD_KINDS_BY_NAME = {kind.name: kind for kind in BAD_KINDS}


@dataclass(frozen=True)
class FileShape:
    records_per_file: int = 100
    record_bytes: int = 400
    junk_lines: int = 3
    pieces: int = 3
    stall_s: float = 0.0
    ndjson: bool = False


@dataclass(frozen=True)
class WrittenFile:
    """One entry the writer made, and what must become of it."""

    name: str
    kind: str
    fate: Fate
    records: int
    codes: frozenset[str] = frozenset()


@dataclass
class Manifest:
    """Everything written, in order; shared between the writer thread and the progress display."""

    files: list[WrittenFile] = field(default_factory=list)
    records: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, written: WrittenFile) -> None:
        with self.lock:
            self.files.append(written)
            self.records += written.records

    def snapshot(self) -> list[WrittenFile]:
        with self.lock:
            return list(self.files)


def timestamp_name(sequence: int, suffix: str = ".json") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{sequence:07d}{suffix}"


_RECORD_HEAD = (
    b'{"seq":%d,"index":%d,"source":"writer-sim","kind":"reading","ts":%.6f,'
    b'"device":{"id":"dev-%03d","fw":"1.0.0","site":"local"},"value":%.1f,"unit":"celsius",'
    b'"tags":["local","sim"],"note":"'
)


def record_template(record_bytes: int) -> bytes:
    """A record with many metadata fields, as a %-template padded to about `record_bytes` of
    JSON. Formatting bytes keeps the writer cheap: at 6,000 records/s it shares two cores with
    everything it feeds."""
    sample = _RECORD_HEAD % (1_000_000, 1000, time.time(), 996, 99.9) + b'"}'
    return _RECORD_HEAD + b"x" * max(0, record_bytes - len(sample)) + b'"}'


def make_records(template: bytes, sequence: int, count: int) -> list[bytes]:
    now = time.time()
    return [
        template % (sequence, index, now, sequence % 997, (sequence * 31 + index) % 1000 / 10)
        for index in range(count)
    ]


def _pieces(data: bytes, count: int) -> list[bytes]:
    step = max(1, -(-len(data) // max(1, count)))
    return [data[start : start + step] for start in range(0, len(data), step)] or [b""]


class WriterSimulator:
    """Writes files into `inbox` at `rate` records per second (bad files come on top)."""

    def __init__(
        self,
        share: Path,
        *,
        shape: FileShape,
        rate: float,
        bad_share: float = 0.0,
        max_message_bytes: int = 1_048_576,
        seed: int | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        self.share = share
        self.inbox = share / "inbox"
        self.outside = share / ".writer-private"
        self.shape = shape
        self.rate = rate
        self.bad_share = bad_share
        self.max_message_bytes = max_message_bytes
        self.manifest = manifest if manifest is not None else Manifest()
        self._random = random.Random(seed)
        self._template = record_template(shape.record_bytes)
        self._sequence = 0
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outside.mkdir(parents=True, exist_ok=True)
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    # -- the loop -------------------------------------------------------------------------------

    def run(self, duration_s: float, stop: threading.Event) -> None:
        """Write for `duration_s` (or until `stop`), pacing good files to the record rate."""
        self.started_at = time.monotonic()
        end = self.started_at + duration_s
        good_records = 0
        try:
            while not stop.is_set():
                due = self.started_at + good_records / self.rate
                if due >= end:
                    stop.wait(max(0.0, end - time.monotonic()))  # the window's last interval
                    break
                if stop.wait(max(0.0, due - time.monotonic())):
                    break
                if self.bad_share and self._random.random() < self.bad_share:
                    self.write_bad(self._random.choice(BAD_KINDS))
                good_records += self.write_good().records
        finally:
            self.stopped_at = time.monotonic()

    # -- one file -----------------------------------------------------------------------------

    def _next_name(self, suffix: str = ".json", prefix: str = "") -> str:
        self._sequence += 1
        return prefix + timestamp_name(self._sequence, suffix)

    def _junk(self) -> bytes:
        lines = [JUNK_LINES[i % len(JUNK_LINES)] for i in range(self.shape.junk_lines)]
        return b"".join(line + b"\n" for line in lines)

    def _write_non_atomically(self, path: Path, data: bytes) -> None:
        """Create under the final name, write in pieces, close: like a real writer, never atomic."""
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            for index, piece in enumerate(_pieces(data, self.shape.pieces)):
                if index and self.shape.stall_s:
                    time.sleep(self._random.uniform(0, self.shape.stall_s))
                os.write(fd, piece)
        finally:
            os.close(fd)

    def _records_body(self, sequence: int, count: int, template: bytes | None = None) -> bytes:
        records = make_records(template or self._template, sequence, count)
        if self.shape.ndjson:
            return b"\n".join(records) + b"\n"
        return records[0] if count == 1 else b"[" + b",".join(records) + b"]"

    def write_good(self) -> WrittenFile:
        name = self._next_name()
        count = self.shape.records_per_file
        body = self._records_body(self._sequence, count)
        self._write_non_atomically(self.inbox / name, self._junk() + body)
        written = WrittenFile(name=name, kind="good", fate="delivered", records=count)
        self.manifest.add(written)
        return written

    def write_bad(self, kind: BadKind) -> WrittenFile:
        name = self._make_bad(kind)
        written = WrittenFile(name=name, kind=kind.name, fate=kind.fate, records=0, codes=kind.codes)
        self.manifest.add(written)
        return written

    def _make_bad(self, kind: BadKind) -> str:
        makers: dict[str, Callable[[], str]] = {
            "symlink": self._make_symlink,
            "directory": self._make_directory,
            "tmp_name": lambda: self._make_file(self._next_name(".json.tmp"), self._junk() + b"[{}]"),
            "dotfile": lambda: self._make_file(self._next_name(prefix="."), self._junk() + b"[{}]"),
        }
        if kind.name in makers:
            return makers[kind.name]()
        return self._make_file(self._next_name(), self._bad_content(kind.name))

    def _bad_content(self, kind: str) -> bytes:
        contents = {
            "empty": b"",
            "comments_only": self._junk() or b"# nothing but a comment\n",
            "truncated_json": self._junk() + self._records_body(self._sequence, 3)[:-7],
            # Latin-1 bytes where UTF-8 is required.
            "not_utf8": self._junk() + b'[{"city": "S\xe3o Paulo", "temp": 21.5}]',
            "scalar_top_level": self._junk() + b'"just a string"',
            "array_of_numbers": self._junk() + b"[1, 2, 3]",
            "record_too_large": self._junk()
            + orjson.dumps([{"blob": "y" * (self.max_message_bytes + 1024)}]),
        }
        return contents[kind]

    def _make_file(self, name: str, data: bytes) -> str:
        self._write_non_atomically(self.inbox / name, data)
        return name

    def _make_symlink(self) -> str:
        # The target holds valid records: if it were ever read, they would reach the sink with
        # ids the manifest does not expect and the run would fail.
        name = self._next_name()
        target = self.outside / f"target-{name}"
        target.write_bytes(self._records_body(self._sequence, 2))
        os.symlink(target, self.inbox / name)
        return name

    def _make_directory(self) -> str:
        name = self._next_name(suffix=".d")
        (self.inbox / name).mkdir()
        return name
