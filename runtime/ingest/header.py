"""The header (docs/ingest.md#2-claim, #4-commit): a batch's membership, read from its
directory after the claim and published write-once; members that changed since their settle
check, and strays the header does not name, go back to the inbox."""

from __future__ import annotations

from collections.abc import Iterable

from runtime.ingest.fs import FileStat
from runtime.ingest.model import Header, Ingest, Member
from runtime.ingest.moves import rename_checked
from runtime.ingest.parallel import WorkerPool, parallel_map
from runtime.kill import kill_point


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
    looked_up = parallel_map(pool, lambda n: fs.stat_if_exists(layout.claimed_file(batch, n)), unknown)
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
