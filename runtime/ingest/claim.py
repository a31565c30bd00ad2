"""The claim (docs/ingest.md#2-claim): lease a new batch, rename the selected files into its
directory and move the entries set aside to rejected/. The header that fixes the batch's
membership is published next (`header.py`)."""

from __future__ import annotations

from runtime.ingest.fs import FileStat
from runtime.ingest.model import Ingest
from runtime.ingest.moves import quarantine, rename_checked
from runtime.ingest.parallel import WorkerPool, parallel_map
from runtime.ingest.selection import Selection
from runtime.kill import kill_point

# The claimed files' stats, taken right after their renames: the header checks them against the
# stats that settled them without a second round trip.
ClaimedStats = dict[str, FileStat]


def claim_selected(
    ingest: Ingest,
    batch: str,
    token: str,
    pool: WorkerPool | None,
    selection: Selection,
) -> ClaimedStats:
    """Lease `batch`, move the selected files into it (one rename each) and the entries set
    aside to rejected/."""
    fs, layout = ingest.fs, ingest.layout
    ingest.coord.claim(batch, token, ingest.settings.lease_s)
    fs.mkdir(layout.claimed(batch))
    ingest.counters.add("batches_claimed")
    names = sorted(selection.settled)
    after_claim: ClaimedStats = {}
    for index, (name, st) in enumerate(parallel_map(pool, lambda n: _claim_one(ingest, batch, n), names)):
        if index == 0:
            kill_point("claim.mid")
        if st is None:
            ingest.counters.add("vanished_files")
        else:
            after_claim[name] = st
    for name, fate in selection.aside.items():
        _move_aside(ingest, batch, token, name, fate)
    return after_claim


def _claim_one(ingest: Ingest, batch: str, name: str) -> tuple[str, FileStat | None]:
    """rename into the batch, then stat it there (in the same task: one pass over EFS)."""
    layout = ingest.layout
    if not rename_checked(ingest.fs, layout.inbox_file(name), layout.claimed_file(batch, name)):
        return name, None
    return name, ingest.fs.stat_if_exists(layout.claimed_file(batch, name))


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
