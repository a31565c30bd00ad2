"""What the protocol writes on EFS (header, part records) and what a loader run shares."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from runtime import codec
from runtime.config import IngestSettings
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.sender import PartSender

# Bump when the way bodies are built from a header changes; a resumed batch whose recomputed
# bodies differ from its recorded parts halts whatever this says.
# 2: numbers out of range, files above max_file_bytes and unreadable members are rejected.
CODE_VERSION = "sluice-ingest/2"
HEADER_VERSION = 1


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Packing:
    """Everything a part's body depends on besides the members' bytes."""

    max_message_bytes: int
    projection: dict[str, tuple[str, str]]  # output field -> (dotted path, missing policy)

    @classmethod
    def from_settings(cls, ingest: IngestSettings, max_message_bytes: int) -> Packing:
        return cls(
            max_message_bytes=max_message_bytes,
            projection={name: (rule.path, rule.missing) for name, rule in ingest.projection.items()},
        )


@dataclass(frozen=True)
class Header:
    batch: str
    members: tuple[Member, ...]
    packing: Packing
    code_version: str = CODE_VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": HEADER_VERSION,
                "batch": self.batch,
                "files": self.members,  # orjson writes each Member as {"name", "size", "mtime_ns"}
                "packing": {
                    "max_message_bytes": self.packing.max_message_bytes,
                    "projection": {k: list(v) for k, v in self.packing.projection.items()},
                },
                "code_version": self.code_version,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Header:
        raw = orjson.loads(data)
        packing = raw["packing"]
        return cls(
            batch=raw["batch"],
            members=tuple(Member(**m) for m in raw["files"]),
            packing=Packing(
                max_message_bytes=int(packing["max_message_bytes"]),
                projection={k: (v[0], v[1]) for k, v in packing["projection"].items()},
            ),
            code_version=raw["code_version"],
        )


@dataclass(frozen=True)
class PartRecord:
    """`.parts/<k>.json`: part k's exact range and the sha256 of its body, written once."""

    k: int
    id: str
    first: tuple[int, str, int]  # (header index, file name, record index)
    last: tuple[int, str, int]
    count: int
    size: int  # body bytes
    sha256: str

    @classmethod
    def of(
        cls, part: codec.PackedPart, first: tuple[int, str, int], last: tuple[int, str, int]
    ) -> PartRecord:
        """The record of a packed part whose first and last records are located at `first`/`last`."""
        return cls(
            k=part.index,
            id=part.id,
            first=first,
            last=last,
            count=part.count,
            size=len(part.body),
            sha256=hashlib.sha256(part.body).hexdigest(),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "k": self.k,
                "id": self.id,
                "first": self.first,
                "last": self.last,
                "count": self.count,
                "bytes": self.size,
                "sha256": self.sha256,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PartRecord:
        raw = orjson.loads(data)
        return cls(
            k=raw["k"],
            id=raw["id"],
            first=tuple(raw["first"]),  # type: ignore[arg-type]
            last=tuple(raw["last"]),  # type: ignore[arg-type]
            count=raw["count"],
            size=raw["bytes"],
            sha256=raw["sha256"],
        )

    def holds_file(self, header_index: int) -> bool:
        return self.first[0] <= header_index <= self.last[0]


@dataclass
class Counters:
    """What a loader run did. Thread-safe increments where threads touch them."""

    files: int = 0
    records: int = 0
    parts: int = 0
    parts_resent: int = 0
    bytes: int = 0
    rejected_files: int = 0
    skipped_entries: int = 0
    vanished_files: int = 0
    returned_to_inbox: int = 0
    batches_claimed: int = 0
    selections_ahead: int = 0  # selections started while the batch before them ran (EFS only)
    batches_resumed: int = 0
    batches_committed: int = 0
    batches_halted: int = 0
    batches_released: int = 0
    leases_lost: int = 0
    transient_failures: int = 0
    batch_failures: int = 0  # runs of a batch that failed (not transiently): each counts
    environment_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@dataclass
class Ingest:
    """The dependencies of one loader or checker run (clients injected, never global)."""

    settings: IngestSettings
    max_message_bytes: int
    fs: Fs
    coord: Coordinator
    sender: PartSender
    layout: Layout
    counters: Counters = field(default_factory=Counters)
    environment_error: str = ""  # set when the environment refused this run (it stopped)

    @property
    def packing(self) -> Packing:
        return Packing.from_settings(self.settings, self.max_message_bytes)

    def ensure_layout(self) -> None:
        """The top-level directories (inbox/, claimed/, processed/...), made where missing."""
        for directory in self.layout.top_level_dirs():
            if not os.path.isdir(directory):
                self.fs.makedirs(directory)
