"""Every EFS operation the ingest protocol performs, in one thin, injectable class.

The protocol code never calls `os` directly: a benchmark wraps `Fs` to add EFS latency
(docs/ingest.md#the-efs-latency-model: 1 ms per read operation, 2.7 ms per write or
metadata-changing operation) and tests subclass it to inject faults (a rename that answers
ENOENT after succeeding, an EIO). Each method counts the operations it performs so a run can
report EFS operations per file.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

# Operations a write-once publish performs on top of the data write: create the temporary
# name, fsync, link into place, unlink the temporary name.
_TMP_PREFIX = ".tmp-"


# Tuples, not dataclasses: one of each is made per file on the loader's hot path, and a tuple
# is built in C.
class Entry(NamedTuple):
    """One directory entry as `readdir` reports it (no extra stat unless the type is unknown)."""

    name: str
    is_regular: bool
    is_dir: bool


class FileStat(NamedTuple):
    size: int
    mtime_ns: int
    nlink: int
    ino: int
    is_regular: bool
    ctime_ns: int = 0  # the last change of the inode: set by the kernel, never by a writer's utime


def _file_stat(st: os.stat_result) -> FileStat:
    return FileStat(
        st.st_size, st.st_mtime_ns, st.st_nlink, st.st_ino, stat.S_ISREG(st.st_mode), st.st_ctime_ns
    )


class OpCounter:
    """Counts of read and write (or metadata-changing) operations across threads.

    Each thread counts in its own slot (a lock per operation would cost more than a
    warm-cache syscall); totals are summed when read.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._slots: list[list[int]] = []
        self._lock = threading.Lock()

    def _slot(self) -> list[int]:
        try:
            return self._local.slot  # type: ignore[no-any-return]
        except AttributeError:
            slot = [0, 0]
            with self._lock:
                self._slots.append(slot)
            self._local.slot = slot
            return slot

    def add(self, reads: int = 0, writes: int = 0) -> None:
        slot = self._slot()
        slot[0] += reads
        slot[1] += writes

    @property
    def reads(self) -> int:
        with self._lock:
            return sum(s[0] for s in self._slots)

    @property
    def writes(self) -> int:
        with self._lock:
            return sum(s[1] for s in self._slots)

    @property
    def total(self) -> int:
        return self.reads + self.writes


class Fs:
    """The filesystem operations of the ingest protocol, over `os`.

    Subclasses override `_read_op` / `_write_op` to model latency; tests override single
    methods to inject faults. Errors are the plain `OSError`s the kernel returns; the
    protocol decides what an ENOENT or EEXIST means.
    """

    def __init__(self) -> None:
        self.ops = OpCounter()

    # Hooks: called once per modelled operation (a latency model sleeps here).
    def _read_op(self, count: int = 1) -> None:
        self.ops.add(reads=count)

    def _write_op(self, count: int = 1) -> None:
        self.ops.add(writes=count)

    # --- reads ---------------------------------------------------------------------------
    def iter_dir(self, path: str) -> Iterator[Entry]:
        """A directory's entries, streamed: a listing of a million-file inbox never has to be
        held whole. On file systems without d_type this costs an lstat each."""
        self._read_op()
        with os.scandir(path) as it:
            for entry in it:
                name, regular = entry.name, entry.is_file(follow_symlinks=False)
                yield Entry(name, regular, not regular and entry.is_dir(follow_symlinks=False))

    def scandir(self, path: str) -> list[Entry]:
        """A (small) directory's entries: a batch directory, an archive hour."""
        return list(self.iter_dir(path))

    def listdir(self, path: str) -> list[str]:
        self._read_op()
        return os.listdir(path)

    def open_stat(self, path: str) -> FileStat:
        """open + fstat: under close-to-open consistency, open revalidates the attributes."""
        self._read_op(2)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            return _file_stat(os.fstat(fd))
        finally:
            os.close(fd)

    def open_stat_read(self, path: str, read_if: Callable[[FileStat], bool]) -> tuple[FileStat, bytes | None]:
        """open + fstat, then (only when `read_if(stat)`) the file's first `size` bytes from
        the same open: a settle check that also reads a file it is about to claim."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            st = _file_stat(os.fstat(fd))
            if not (st.is_regular and read_if(st)):
                self._read_op(2)
                return st, None
            self._read_op(3)
            return st, os.pread(fd, st.size, 0)
        finally:
            os.close(fd)

    def stat(self, path: str) -> FileStat:
        self._read_op()
        return _file_stat(os.stat(path, follow_symlinks=False))

    def stat_if_exists(self, path: str) -> FileStat | None:
        try:
            return self.stat(path)
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except FileNotFoundError:
            return False
        return True

    def read_prefix(self, path: str, size: int) -> tuple[bytes, FileStat]:
        """The first `size` bytes of a file (fewer only if it shrank) and its attributes."""
        self._read_op(2)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = _file_stat(os.fstat(fd))
            chunks = []
            remaining = size
            while remaining > 0:
                chunk = os.pread(fd, remaining, size - remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return data, st
        finally:
            os.close(fd)

    def read_all(self, path: str) -> bytes:
        self._read_op(2)
        with open(path, "rb") as handle:
            return handle.read()

    # --- writes and metadata changes -------------------------------------------------------
    def rename(self, source: str, target: str) -> None:
        self._write_op()
        os.rename(source, target)

    def link(self, source: str, target: str) -> None:
        self._write_op()
        os.link(source, target, follow_symlinks=False)

    def unlink(self, path: str) -> None:
        self._write_op()
        os.unlink(path)

    def mkdir(self, path: str, *, exist_ok: bool = False) -> None:
        self._write_op()
        try:
            os.mkdir(path)
        except FileExistsError:
            if not exist_ok:
                raise

    def makedirs(self, path: str) -> None:
        if os.path.isdir(path):
            return
        self._write_op()
        os.makedirs(path, exist_ok=True)

    def rmdir(self, path: str) -> None:
        self._write_op()
        os.rmdir(path)

    def utime(self, path: str, mtime_ns: int) -> None:
        self._write_op()
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def write_new(self, path: str, data: bytes) -> None:
        """Create `path` exclusively, write, fsync: three write operations on EFS."""
        self._write_op(3)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_once(self, path: str, data: bytes) -> bool:
        """Publish `data` at `path` write-once: temporary name, fsync, link into place.

        Returns True when this call published it, False when `path` already existed (the
        caller reads the existing one and follows it). Readers never see a partial file.
        """
        # The temporary name does not repeat the final one: it fits however long that is.
        temporary = os.path.join(os.path.dirname(path), f"{_TMP_PREFIX}{secrets.token_hex(8)}")
        self.write_new(temporary, data)
        try:
            self.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            self.unlink(temporary)
        return True


def is_temporary_name(name: str) -> bool:
    """Names the writer or sluice use while writing: dotfiles and `*.tmp`."""
    return name.startswith(".") or name.endswith(".tmp")
