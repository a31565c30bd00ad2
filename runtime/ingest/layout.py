"""The EFS layout (docs/ingest.md#the-efs-layout) and batch ids.

```
inbox/<name>                        claimed/<batch>/<name>, .header.json, .parts/<k>.json, .committed
processed/<batch>/                  archive/YYYY/MM/DD/HH/<batch>/
halted/<batch>/                     rejected/<batch>/<name> + <name>.reason.json
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass

HEADER_NAME = ".header.json"
PARTS_DIR = ".parts"
COMMITTED_NAME = ".committed"
REASON_SUFFIX = ".reason.json"
_BATCH_TIME_FORMAT = "%Y%m%dT%H%M%S"
# The longest name a directory entry may have, in bytes (Linux, NFS/EFS).
NAME_MAX = 255
_DIGEST_CHARS = 16


def fitted_name(name: str, suffix: str = "") -> str:
    """`name + suffix`, or, when that is longer than NAME_MAX bytes, `name` cut short + `~` +
    a digest of the whole name + `suffix`: every name sluice derives from a member's name
    (`<name>.reason.json`, `<name>~N`) fits whatever the member's name. Deterministic, so a
    later run derives the same name; works on the bytes (a name need not be UTF-8)."""
    raw, tail = os.fsencode(name), os.fsencode(suffix)
    if len(raw) + len(tail) <= NAME_MAX:
        return name + suffix
    digest = hashlib.sha256(raw).hexdigest()[:_DIGEST_CHARS]
    keep = NAME_MAX - len(tail) - 1 - _DIGEST_CHARS
    return f"{os.fsdecode(raw[:keep])}~{digest}{suffix}"


def reason_name(name: str) -> str:
    """The reason file beside a quarantined entry called `name`."""
    return fitted_name(name, REASON_SUFFIX)


def alternate_name(name: str, attempt: int) -> str:
    """`name`, then `name~2`, `name~3`...: where a move goes when the place is taken."""
    return name if attempt == 1 else fitted_name(name, f"~{attempt}")


def printable_name(name: str) -> str:
    """A name for logs and JSON: bytes that are not UTF-8 shown as escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_valid_name(name: str) -> bool:
    """Is the name UTF-8 (item ids `<file>#<index>` travel as JSON)? os.listdir hands bytes
    that are not as surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def new_batch_id(now: dt.datetime | None = None) -> str:
    """Time-sortable and unique: `20261125T130955.123Z-1a2b3c4d`."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime(_BATCH_TIME_FORMAT)}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def batch_time(batch: str) -> dt.datetime | None:
    """When a batch was claimed, from its id (None for a name sluice did not make)."""
    try:
        stamp = dt.datetime.strptime(batch[:15], _BATCH_TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return stamp + dt.timedelta(milliseconds=int(batch[16:19]) if batch[16:19].isdigit() else 0)


@dataclass(frozen=True)
class Layout:
    """Paths under the ingest root. f-strings, not os.path.join: these are built several
    times per file on the loader's hot path, and the root is an absolute POSIX path."""

    root: str

    @property
    def inbox(self) -> str:
        return f"{self.root}/inbox"

    @property
    def claimed_root(self) -> str:
        return f"{self.root}/claimed"

    @property
    def processed_root(self) -> str:
        return f"{self.root}/processed"

    @property
    def halted_root(self) -> str:
        return f"{self.root}/halted"

    @property
    def rejected_root(self) -> str:
        return f"{self.root}/rejected"

    def inbox_file(self, name: str) -> str:
        return f"{self.root}/inbox/{name}"

    def claimed(self, batch: str) -> str:
        return f"{self.root}/claimed/{batch}"

    def claimed_file(self, batch: str, name: str) -> str:
        return f"{self.root}/claimed/{batch}/{name}"

    def header(self, batch: str) -> str:
        return f"{self.root}/claimed/{batch}/{HEADER_NAME}"

    def parts(self, batch: str) -> str:
        return f"{self.root}/claimed/{batch}/{PARTS_DIR}"

    def part(self, batch: str, index: int) -> str:
        return f"{self.root}/claimed/{batch}/{PARTS_DIR}/{index}.json"

    def committed_marker(self, batch: str) -> str:
        return f"{self.root}/claimed/{batch}/{COMMITTED_NAME}"

    def processed(self, batch: str) -> str:
        return f"{self.root}/processed/{batch}"

    def halted(self, batch: str) -> str:
        return f"{self.root}/halted/{batch}"

    def rejected(self, batch: str) -> str:
        return f"{self.root}/rejected/{batch}"

    def top_level_dirs(self) -> tuple[str, ...]:
        return (self.inbox, self.claimed_root, self.processed_root, self.halted_root, self.rejected_root)
