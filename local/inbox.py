"""A run over the user's own files (`--inbox DIR`): DIR's entries are copied into the share's
inbox the way a writer would have left them — regular files by content (mtime kept), symlinks
as symlinks (their targets are never opened, here or by the loader), FIFOs as FIFOs,
directories as empty directories — and DIR is never modified.

What each entry must become follows the bad-input table (docs/bad-input.md#files-ingest)
where the kind of entry decides it (directories and temporary names are skipped, special
entries rejected); a regular file's fate is observed, and its record count is taken from the
loader's own parser so a delivered file with a missing record is caught.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from local.fates import Expected
from runtime.ingest.errors import RejectedFile
from runtime.ingest.fs import is_temporary_name
from runtime.ingest.layout import is_valid_name
from runtime.ingest.parse import INVALID_NAME, NOT_REGULAR_FILE, parse_records


@dataclass(frozen=True)
class ImportedEntry:
    name: str
    kind: str  # file | symlink | fifo | directory | unsupported
    source: Path


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "unsupported"


def import_inbox(source: Path, inbox: Path) -> list[ImportedEntry]:
    """Copy DIR's top-level entries into `inbox` (see module docs); returns what was copied."""
    imported = []
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        path = Path(entry.path)
        kind = _kind(entry.stat(follow_symlinks=False).st_mode)
        target = inbox / entry.name
        if kind == "symlink":
            os.symlink(os.readlink(path), target)
        elif kind == "file":
            shutil.copy2(path, target, follow_symlinks=False)
        elif kind == "fifo":
            os.mkfifo(target)
        elif kind == "directory":
            target.mkdir()
        imported.append(ImportedEntry(name=entry.name, kind=kind, source=path))
    return imported


def _expected_for_file(entry: ImportedEntry) -> Expected:
    if is_temporary_name(entry.name):
        return Expected(file=entry.name, fate="skipped", records=0)
    if not is_valid_name(entry.name):
        return Expected(file=entry.name, fate="rejected", records=0, codes=frozenset({INVALID_NAME}))
    try:
        records = len(parse_records(entry.source.read_bytes()))
    except RejectedFile:
        # Rejected by parsing: whatever the loader decides is its fate; no records expected.
        return Expected(file=entry.name, fate="rejected", records=0)
    # Parsed: delivered, unless the loader decides otherwise from what only it sees (a record
    # too large for a message, a file above max_file_bytes, an mtime far in the future).
    return Expected(file=entry.name, fate=None, records=records)


def expectations_for(imported: list[ImportedEntry]) -> list[Expected]:
    """What must become of each imported entry (see module docs)."""
    expected = []
    for entry in imported:
        if entry.kind == "directory":
            expected.append(Expected(file=entry.name, fate="skipped", records=0))
        elif entry.kind in ("symlink", "fifo"):
            fate = "skipped" if is_temporary_name(entry.name) else "rejected"
            codes = frozenset() if fate == "skipped" else frozenset({NOT_REGULAR_FILE})
            expected.append(Expected(file=entry.name, fate=fate, records=0, codes=codes))
        elif entry.kind == "file":
            expected.append(_expected_for_file(entry))
    return expected
