"""Moves whose targets may already exist (rejected/, halted/) and moves that must survive a
retried rename: EFS keeps no reply cache, so ENOENT or EEXIST from a non-idempotent operation
means "stat both sides and decide", never "skip" (docs/ingest.md#efs-rules).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os

import orjson

from runtime.ingest.fs import Fs
from runtime.ingest.layout import alternate_name, printable_name, reason_name
from runtime.kill import kill_point
from runtime.observability import logger

_MAX_ALTERNATE_NAMES = 1000


def rename_checked(fs: Fs, source: str, target: str) -> bool:
    """rename; True when the entry is now at `target`, False when it was at neither side
    (it vanished before we moved it). An ENOENT whose target exists is a retried success."""
    try:
        fs.rename(source, target)
    except FileNotFoundError:
        if fs.exists(target) and not fs.exists(source):
            return True
        if fs.exists(source):
            raise
        return False
    return True


def _same_entry(fs: Fs, a: str, b: str) -> bool:
    try:
        return fs.stat(a).ino == fs.stat(b).ino
    except FileNotFoundError:
        return False


def _own_reason(fs: Fs, reason_path: str, code: str, batch: str) -> bool:
    """A reason file left by this same quarantine in a run that died before the link."""
    try:
        reason = orjson.loads(fs.read_all(reason_path))
    except FileNotFoundError:
        return False
    return bool(reason.get("code") == code and reason.get("batch") == batch)


def _quarantine_name(fs: Fs, source: str, directory: str, *, name: str, code: str, batch: str) -> str:
    """`name`, or `name~2`, `name~3`... : the first whose place is free, or already holds
    this very entry or its reason (a move that died between its steps). Never another's."""
    for attempt in range(1, _MAX_ALTERNATE_NAMES + 1):
        candidate = alternate_name(name, attempt)
        target = os.path.join(directory, candidate)
        if fs.exists(target):
            if _same_entry(fs, source, target):
                return candidate
            continue
        reason_path = os.path.join(directory, reason_name(candidate))
        if not fs.exists(reason_path) or _own_reason(fs, reason_path, code, batch):
            return candidate
    raise FileExistsError(f"no free quarantine name for {name} in {directory}")


def reason_document(code: str, detail: str, batch: str, bytes_sent: int) -> bytes:
    return orjson.dumps(
        {
            "code": code,
            "detail": detail,
            "batch": batch,
            "bytes_sent": bytes_sent,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )


def quarantine(
    fs: Fs, source: str, directory: str, *, code: str, detail: str, batch: str, bytes_sent: int = 0
) -> str:
    """Move `source` (the entry itself, never a symlink's target) into `directory` beside a
    reason file: reason first (write-once), then link, then unlink. A source left with
    st_nlink > 1 by a crash is finished by `finish_unlink`. Returns the name used."""
    fs.makedirs(directory)
    name = _quarantine_name(fs, source, directory, name=os.path.basename(source), code=code, batch=batch)
    target = os.path.join(directory, name)
    fs.write_once(
        os.path.join(directory, reason_name(name)), reason_document(code, detail, batch, bytes_sent)
    )
    kill_point("reject.before_link")
    try:
        fs.link(source, target)
    except FileExistsError:
        if not _same_entry(fs, source, target):
            raise
    kill_point("link.before_unlink")
    finish_unlink(fs, source)
    logger.warning(
        "file rejected",
        extra={
            "code": code,
            "detail": detail,
            "batch": batch,
            "file": printable_name(name),
            "bytes_sent": bytes_sent,
        },
    )
    return name


def quarantined_as(fs: Fs, st_ino: int, directory: str, name: str) -> str | None:
    """The entry in `directory` (under `name` or an alternate) that is the inode `st_ino`, if
    any: proof that a quarantine of that file got as far as its link."""
    for attempt in range(1, _MAX_ALTERNATE_NAMES + 1):
        candidate = alternate_name(name, attempt)
        try:
            if fs.stat(os.path.join(directory, candidate)).ino == st_ino:
                return candidate
        except FileNotFoundError:
            if not fs.exists(os.path.join(directory, reason_name(candidate))):
                return None
    return None


def was_quarantined(names: set[str], name: str) -> bool:
    """Does a listing of a rejected/ directory hold the reason of `name` (or an alternate)?"""
    for attempt in range(1, _MAX_ALTERNATE_NAMES + 1):
        candidate = alternate_name(name, attempt)
        if reason_name(candidate) in names:
            return True
        if candidate not in names:
            return False
    return False


def finish_unlink(fs: Fs, source: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # a retried unlink that already succeeded
        fs.unlink(source)


def move_directory(fs: Fs, source: str, parent: str, name: str) -> str:
    """rename a batch directory under `parent`, at `name` or the first free `name~N` (a
    rename onto an existing empty directory would silently replace it)."""
    fs.makedirs(parent)
    for attempt in range(1, _MAX_ALTERNATE_NAMES + 1):
        candidate = alternate_name(name, attempt)
        target = os.path.join(parent, candidate)
        if fs.exists(target):
            continue
        if rename_checked(fs, source, target):
            return candidate
        raise FileNotFoundError(source)
    raise FileExistsError(f"no free name for {name} in {parent}")
