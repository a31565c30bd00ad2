"""Operations on the share: the core of `sluice ingest rejected|halted …`, run by the CLI on a
local share and by the operations function (in the VPC, the share mounted) for a deployed one.
Anything that moves data is a dry run unless `apply` (docs/ingest.md#the-protocol).

Replay puts a rejected file back in `inbox/` only when that cannot duplicate a record:
- nothing of it was sent (`bytes_sent` 0) and no `.parts/` record of its batch exists anywhere
  on the share: the whole file goes back under its own name;
- a `late_write` (the archiver's copy of a file that grew after its claim): only the bytes after
  the `bytes_sent` its batch sent go back, as a new file `<name>.tail-<bytes_sent>` (its records
  get new ids), and only when that tail is records on its own.
Files are written to a temporary name, fsynced, then renamed; the quarantined copy stays, and a
`.<name>.replayed.json` marker beside it (a dotfile, so the checker does not count it) stops a
second replay.

Resume of a halted batch offers exactly two choices, each checked before it is offered:
- `members`: give the members back to `inbox/` as new files — only when the batch has no
  `.parts/` record (nothing of it was ever published, so nothing of it can have been sent);
- `resend-parts`: recompute the batch's parts from its header and the first `size` bytes of
  each member (as the loader does) and, only when every recorded part reproduces byte for byte
  (range, count, size, sha256), send every part under its id `<batch>/<k>` — the recorded ones
  again (downstream's ledger recognises the ids), the rest after publishing their records
  write-once, as the loader would — then commit the batch into `processed/` for the archiver.
Everything else is refused with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import codec
from runtime.clients import aws_client
from runtime.config import Settings
from runtime.ingest.archiver import LATE_WRITE
from runtime.ingest.batch import LARGEST_PART_NUMBER
from runtime.ingest.errors import RejectedFile
from runtime.ingest.fs import Fs
from runtime.ingest.layout import (
    COMMITTED_NAME,
    HEADER_NAME,
    PARTS_DIR,
    REASON_SUFFIX,
    batch_time,
    fitted_name,
)
from runtime.ingest.model import Header, PartRecord
from runtime.ingest.moves import quarantined_as, was_quarantined
from runtime.ingest.parse import compile_projection, file_items, parse_records
from runtime.ingest.sender import PartSender
from runtime.ingest.wiring import part_sender_for

REPLAYED_SUFFIX = ".replayed.json"
BATCH_PLACES = ("claimed", "processed", "halted")
MEMBERS, RESEND_PARTS = "members", "resend-parts"
CHOICES = (MEMBERS, RESEND_PARTS)
# Time left for the routers to process re-sent parts before the ledger forgets them (at most).
RESEND_MARGIN_S = 3600
OK = "ok"


class Refused(RuntimeError):
    """The action could duplicate or lose a record; the message says why."""


# -- writing on the share ----------------------------------------------------------------------


def _write_new(target: Path, data: bytes) -> None:
    """`data` at `target`, which must not exist: temporary name, fsync, then link (EEXIST
    raises: the name was taken meanwhile)."""
    # Unique and created exclusively: two operations (two sandboxes) never share a temporary file.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(temporary, target)
    finally:
        temporary.unlink()


def _write_once_matching(target: Path, data: bytes) -> None:
    """A write-once file: written, or already there with the same bytes (else refused)."""
    try:
        _write_new(target, data)
    except FileExistsError:
        if target.read_bytes() != data:
            raise Refused(f"{target.name} exists with other content") from None


def _dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _parts_records(share: Path, batch: str) -> list[Path]:
    found: list[Path] = []
    for place in BATCH_PLACES:
        found += sorted((share / place / batch / PARTS_DIR).glob("*.json"))
    found += sorted(share.glob(f"archive/*/*/*/*/{batch}/{PARTS_DIR}/*.json"))
    return found


# -- rejected files ----------------------------------------------------------------------------


def rejected_list(share: Path) -> list[dict[str, Any]]:
    rows = []
    for batch in _dirs(share / "rejected"):
        for reason_file in sorted(batch.glob(f"*{REASON_SUFFIX}")):
            name = reason_file.name.removesuffix(REASON_SUFFIX)
            if name.startswith("."):
                continue
            reason = json.loads(reason_file.read_text())
            rows.append(
                {
                    "file": f"{batch.name}/{name}",
                    "code": reason.get("code"),
                    "detail": reason.get("detail"),
                    "bytes_sent": reason.get("bytes_sent"),
                    "size": (batch / name).lstat().st_size if (batch / name).exists() else None,
                    "replayed": (batch / f".{name}{REPLAYED_SUFFIX}").exists(),
                }
            )
    return rows


def rejected_show(share: Path, file: str) -> dict[str, Any]:
    row = next((r for r in rejected_list(share) if r["file"] == file), None)
    if row is None:
        raise Refused(f"no rejected file {file} (BATCH/NAME; see `sluice ingest rejected ls`)")
    path = share / "rejected" / file
    head = path.read_bytes()[:512].decode("utf-8", "replace") if path.is_file() else None
    plan = _replay_plan(share, row)
    return {
        **row,
        "reason": json.loads((share / "rejected" / f"{file}{REASON_SUFFIX}").read_text()),
        "head": head,
        "replay": plan if isinstance(plan, str) else f"ok: bytes {plan[1]}.. to inbox/{plan[0]}",
    }


def _replay_plan(share: Path, row: dict[str, Any]) -> tuple[str, int] | str:
    """(inbox name, first byte to replay), or why a replay could duplicate a record."""
    batch, name = row["file"].split("/", 1)
    path = share / "rejected" / row["file"]
    sent = row["bytes_sent"]
    if row["replayed"]:
        return "refused: already replayed"
    if row["size"] is None or not path.is_file() or path.is_symlink():
        return "refused: not a regular file (its entry was moved aside, its target never opened)"
    if row["code"] == LATE_WRITE and isinstance(sent, int) and sent > 0:
        target, start = fitted_name(name, f".tail-{sent}"), sent
        refusal = _tail_refusal(path.read_bytes(), sent)
    elif sent != 0:
        return f"refused: {sent} bytes of it were sent and it is not a late_write (no tail to replay)"
    elif _parts_records(share, batch):
        return f"refused: batch {batch} has .parts/ records: one of them may hold its records"
    else:
        target, start, refusal = name, 0, None
    if refusal is None and (share / "inbox" / target).exists():
        refusal = f"inbox/{target} exists"
    return (target, start) if refusal is None else f"refused: {refusal}"


def _tail_refusal(data: bytes, sent: int) -> str | None:
    if len(data) <= sent:
        return f"nothing after the {sent} bytes that were sent (the file has {len(data)})"
    try:
        parse_records(data[sent:])
    except RejectedFile as exc:
        return f"the unsent tail (bytes {sent}..{len(data)}) is not records on its own ({exc})"
    return None


def rejected_replay(share: Path, file: str, apply: bool) -> dict[str, Any]:
    row = rejected_show(share, file)
    plan = _replay_plan(share, row)
    if isinstance(plan, str):
        raise Refused(f"refusing to replay {file}: {plan.removeprefix('refused: ')}")
    target, start = plan
    batch, name = file.split("/", 1)
    if apply:
        data = (share / "rejected" / file).read_bytes()[start:]
        # The marker first, created exclusively: a replay that dies after it never runs twice (a
        # retry is refused as already replayed; the operator checks inbox/ for the file), where
        # an inbox file first and a marker after could be loaded, then replayed again.
        marker = {"replayed_to": f"inbox/{target}", "from_byte": start, "at": time.time()}
        marker_path = share / "rejected" / batch / f".{name}{REPLAYED_SUFFIX}"
        try:
            _write_new(marker_path, json.dumps(marker).encode())
        except FileExistsError:
            raise Refused(f"refusing to replay {file}: already replayed") from None
        try:
            _write_new(share / "inbox" / target, data)
        except FileExistsError:
            marker_path.unlink()  # nothing was written: the file may be replayed once the name is free
            raise Refused(f"refusing to replay {file}: inbox/{target} appeared meanwhile") from None
    return {"file": file, "to": f"inbox/{target}", "from_byte": start, "applied": apply}


# -- halted batches ----------------------------------------------------------------------------


def _members(batch_dir: Path) -> list[Path]:
    return sorted(p for p in batch_dir.iterdir() if not p.name.startswith(".") and not p.is_dir())


def _recorded(batch_dir: Path) -> dict[int, PartRecord]:
    records = (PartRecord.from_json(p.read_bytes()) for p in (batch_dir / PARTS_DIR).glob("*.json"))
    return {record.k: record for record in records}


def halted_list(share: Path, dedup_horizon_s: float | None = None) -> list[dict[str, Any]]:
    rows = []
    for batch in _dirs(share / "halted"):
        note = batch / ".halted.json"
        rows.append(
            {
                "batch": batch.name,
                "halted_for": json.loads(note.read_text()).get("reason") if note.is_file() else None,
                "members": len(_members(batch)),
                "header": (batch / HEADER_NAME).is_file(),
                "parts_recorded": len(list((batch / PARTS_DIR).glob("*.json"))),
                "choices": halted_choices(share, batch.name, dedup_horizon_s),
            }
        )
    return rows


def _resend_window_refusal(batch: str, dedup_horizon_s: float | None, now: float) -> str | None:
    """Why re-sent parts might not be recognised any more, if so. The router's ledger remembers a
    part's plan for the dedup horizon after it processed the part, which was after the claim: a
    re-send within that window (less a margin for the routers to process it) is deduplicated;
    later, a part the routers did process would be processed a second time."""
    if dedup_horizon_s is None:
        return "the router ledger's dedup horizon is not known here (SLUICE_PIPELINE__DEDUP_HORIZON_S)"
    claimed = batch_time(batch)
    if claimed is None:
        return f"{batch} is not a batch id sluice made: its claim time is unknown"
    age_s = now - claimed.timestamp()
    margin_s = min(RESEND_MARGIN_S, dedup_horizon_s / 10)
    if age_s + margin_s >= dedup_horizon_s:
        return (
            f"claimed {age_s / 3600:.1f} h ago; the ledger recognises its parts for "
            f"{dedup_horizon_s / 3600:.1f} h after the claim (less {margin_s / 60:.0f} min to process them): "
            "a re-send could be processed twice — hand its records to downstream yourself"
        )
    return None


def halted_choices(share: Path, batch: str, dedup_horizon_s: float | None = None) -> dict[str, str]:
    """Each resume choice with 'ok' (and what it would do) or why it is refused."""
    parts = _parts_records(share, batch)
    members = f"refused: {len(parts)} .parts/ record(s) exist; members may have been sent" if parts else OK
    try:
        recomputed = _resend_plan(share, batch)
        window = _resend_window_refusal(batch, dedup_horizon_s, time.time())
        if window is not None:
            raise Refused(window)
    except Refused as exc:
        resend = f"refused: {exc}"
    else:
        again = sum(1 for _part, record in recomputed if record is None)
        resend = f"{OK}: {again} recorded part(s) sent again, {len(recomputed) - again} new"
    return {MEMBERS: members, RESEND_PARTS: resend}


def halted_show(share: Path, batch: str, dedup_horizon_s: float | None = None) -> dict[str, Any]:
    row = next((r for r in halted_list(share, dedup_horizon_s) if r["batch"] == batch), None)
    if row is None:
        raise Refused(f"no halted batch {batch}")
    batch_dir = share / "halted" / batch
    header = json.loads((batch_dir / HEADER_NAME).read_text()) if row["header"] else None
    parts = [json.loads(p.read_text()) for p in sorted((batch_dir / PARTS_DIR).glob("*.json"))]
    note = batch_dir / ".halted.json"
    return {
        **row,
        "halted": json.loads(note.read_text()) if note.is_file() else None,
        "member_names": [p.name for p in _members(batch_dir)],
        "header": header,
        "parts": parts,
    }


def halted_resume(
    share: Path,
    batch: str,
    choice: str,
    apply: bool,
    *,
    sender: PartSender | None = None,
    dedup_horizon_s: float | None = None,
) -> dict[str, Any]:
    shown = halted_show(share, batch, dedup_horizon_s)
    verdict = shown["choices"].get(choice)
    if verdict is None:
        raise Refused(f"unknown choice {choice}; choices: {', '.join(shown['choices'])}")
    if not verdict.startswith(OK):
        raise Refused(f"{choice} for {batch}: {verdict}")
    if choice == RESEND_PARTS:
        return _resend_parts(share, batch, apply, sender)
    returned = _members_to_return(share, batch, shown["member_names"])
    clashes = [name for name in returned if (share / "inbox" / name).exists()]
    if clashes:
        raise Refused(f"inbox already has {', '.join(clashes)}")
    if apply:
        for name in returned:
            # link + unlink, not rename: a same-named file that reached inbox/ meanwhile is refused,
            # never replaced.
            try:
                os.link(share / "halted" / batch / name, share / "inbox" / name)
            except FileExistsError:
                raise Refused(f"inbox/{name} appeared meanwhile; {name} stays in halted/{batch}") from None
            os.unlink(share / "halted" / batch / name)
    return {"batch": batch, "choice": choice, "returned": returned, "applied": apply}


def _members_to_return(share: Path, batch: str, names: list[str]) -> list[str]:
    """The members to give back: not one whose quarantine was interrupted between its link into
    rejected/ and its unlink here (the rejected copy is the same file, and replaying it would
    load it a second time)."""
    fs, rejected = Fs(), share / "rejected" / batch
    returned = []
    for name in names:
        st = os.lstat(share / "halted" / batch / name)
        if st.st_nlink > 1 and quarantined_as(fs, st.st_ino, str(rejected), name) is not None:
            continue
        returned.append(name)
    return returned


# -- re-sending a halted batch's parts ---------------------------------------------------------


def _member_bytes(share: Path, batch: str) -> Callable[[int, str, int], bytes | None]:
    """Reads a member's first `size` bytes; None for a member its batch quarantined (gone, with
    its reason in rejected/, or a second link that is the quarantined copy), as the loader skips."""
    fs, batch_dir, rejected = Fs(), share / "halted" / batch, share / "rejected" / batch
    quarantined = set(os.listdir(rejected)) if rejected.is_dir() else set()

    def read(index: int, name: str, size: int) -> bytes | None:
        try:
            data, st = fs.read_prefix(str(batch_dir / name), size)
        except FileNotFoundError:
            if was_quarantined(quarantined, name):
                return None
            raise Refused(f"member {index} ({name}) is in the header but gone") from None
        if st.nlink > 1 and quarantined_as(fs, st.ino, str(rejected), name) is not None:
            return None
        if len(data) < size:
            raise Refused(f"member {name} has {len(data)} of the {size} bytes its header records")
        return data

    return read


def recompute_parts(header: Header, read: Callable[[int, str, int], bytes | None]) -> list[codec.PackedPart]:
    """The batch's parts as the loader computes them (runtime/ingest/batch.py `BatchRun.run`):
    records in header order, each member parsed whole, packed greedily under the header's
    maximum message size with its projection; `first`/`last` tagged (index, name, record)."""
    packing = header.packing

    def part_id(k: int) -> str:
        return f"{header.batch}/{k}"

    packer = codec.EnvelopePacker(max_bytes=packing.max_message_bytes, make_id=part_id)
    project = compile_projection(packing.projection)
    encoder = codec.ItemEncoder()
    item_limit = packing.max_message_bytes - codec.envelope_overhead(part_id(LARGEST_PART_NUMBER))
    located: list[tuple[int, str, int]] = []  # global record number -> (index, name, record)
    parts: list[codec.PackedPart] = []
    for index, member in enumerate(header.members):
        data = read(index, member.name, member.size)
        if data is None:
            continue
        try:
            items = file_items(member.name, data, project, encoder, item_limit)
        except RejectedFile as exc:
            raise Refused(f"member {member.name} would now be rejected ({exc}), not quarantined") from None
        parts += packer.add_many(items, len(located))
        located += [(index, member.name, n) for n in range(len(items))]
    final = packer.flush()
    parts += [final] if final is not None else []
    return [dataclasses.replace(p, first=located[p.first], last=located[p.last]) for p in parts]


def part_record(part: codec.PackedPart) -> PartRecord:
    """The record the loader writes for a part `recompute_parts` made (first/last already located)."""
    return PartRecord.of(part, part.first, part.last)


def _resend_plan(share: Path, batch: str) -> list[tuple[codec.PackedPart, PartRecord | None]]:
    """Every part of the batch with the record to publish first (None: recorded already), or
    Refused: no header, no record, or a recorded part that does not reproduce byte for byte."""
    batch_dir = share / "halted" / batch
    if not (batch_dir / HEADER_NAME).is_file():
        raise Refused("no header: nothing of the batch was published (use members)")
    try:
        recorded = _recorded(batch_dir)
        header = Header.from_json((batch_dir / HEADER_NAME).read_bytes())
    except (KeyError, TypeError, ValueError) as exc:
        raise Refused(f"its header or a .parts/ record cannot be read ({exc!r})") from None
    if not recorded:
        raise Refused("no .parts/ record: nothing of the batch was sent (use members)")
    parts = recompute_parts(header, _member_bytes(share, batch))
    extra = sorted(set(recorded) - {p.index for p in parts})
    if extra:
        raise Refused(f"recorded parts {extra} are not recomputed: other rules built them")
    plan: list[tuple[codec.PackedPart, PartRecord | None]] = []
    for part in parts:
        record = part_record(part)
        existing = recorded.get(part.index)
        if existing is not None and existing != record:
            raise Refused(f"part {part.index} does not reproduce its record (range or body hash differ)")
        plan.append((part, None if existing is not None else record))
    return plan


def _resend_parts(share: Path, batch: str, apply: bool, sender: PartSender | None) -> dict[str, Any]:
    plan = _resend_plan(share, batch)
    document = {
        "batch": batch,
        "choice": RESEND_PARTS,
        "resent": [part.id for part, record in plan if record is None],
        "new": [part.id for part, record in plan if record is not None],
        "applied": apply,
    }
    if not apply:
        return document
    if sender is None:
        raise Refused("no queue to send to (the loader's queue is needed to re-send parts)")
    batch_dir = share / "halted" / batch
    for part, record in plan:  # a part is never sent before its record is on the share
        if record is not None:
            _write_once_matching(batch_dir / PARTS_DIR / f"{part.index}.json", record.to_json())
    sender.send([part for part, _record in plan])  # the sender groups them into SendMessageBatch calls
    with contextlib.suppress(FileExistsError):  # an earlier apply that stopped before the rename
        _write_new(batch_dir / COMMITTED_NAME, str(time.time()).encode())
    os.rename(batch_dir, share / "processed" / batch)
    return document


# -- what the share holds, for `sluice status` ---------------------------------------------------


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def share_status(share: Path, now: float | None = None) -> dict[str, Any]:
    """Counts read from the share's layout (docs/ingest.md#the-efs-layout): the inbox's backlog and
    its oldest file's age, batches claimed, processed (not archived yet) and halted, files rejected."""
    now = time.time() if now is None else now
    inbox = [e for e in _entries(share / "inbox") if e.is_file(follow_symlinks=False)]
    oldest = min((e.stat(follow_symlinks=False).st_mtime for e in inbox), default=None)
    rejected = [
        f.name
        for batch in _entries(share / "rejected")
        if batch.is_dir()
        for f in _entries(Path(batch.path))
        if f.name.endswith(REASON_SUFFIX)
    ]
    return {
        "inbox_files": len(inbox),
        "oldest_inbox_file_age_s": None if oldest is None else round(now - oldest, 1),
        "claimed_batches": sum(1 for e in _entries(share / "claimed") if e.is_dir()),
        "processed_batches": sum(1 for e in _entries(share / "processed") if e.is_dir()),
        "halted_batches": sum(1 for e in _entries(share / "halted") if e.is_dir()),
        "rejected_files": len(rejected),
    }


# -- one request, as the CLI (local) and the operations function (deployed) make it ------------


class BadRequest(ValueError):
    """The request names no known action or lacks an argument (not a refusal: a caller's bug)."""


@dataclass(frozen=True)
class Operations:
    """The share and the loader's queue (None: re-sending parts is refused for want of it)."""

    share: Path
    sender: PartSender | None = None
    # How long the router's ledger recognises a part (the environment's dedup horizon): bounds
    # when `resend-parts` is safe. None: unknown, and re-sending is refused.
    dedup_horizon_s: float | None = None

    def perform(self, request: dict[str, Any]) -> Any:
        """`{"action": "halted.resume", "batch": …, "choice": …, "apply": false}` → its answer;
        raises Refused (unsafe, with the reason) or BadRequest."""
        action, apply = request.get("action"), request.get("apply") is True
        share, horizon = self.share, self.dedup_horizon_s
        answers: dict[str, Callable[[], Any]] = {
            "share.status": lambda: share_status(share),
            "rejected.ls": lambda: rejected_list(share),
            "rejected.show": lambda: rejected_show(share, str(request["file"])),
            "rejected.replay": lambda: rejected_replay(share, str(request["file"]), apply),
            "halted.ls": lambda: halted_list(share, horizon),
            "halted.show": lambda: halted_show(share, str(request["batch"]), horizon),
            "halted.resume": lambda: halted_resume(
                share,
                str(request["batch"]),
                str(request["choice"]),
                apply,
                sender=self.sender,
                dedup_horizon_s=horizon,
            ),
        }
        if not isinstance(action, str) or action not in answers:
            raise BadRequest(f"unknown action {action!r}; actions: {', '.join(answers)}")
        try:
            return answers[action]()
        except KeyError as missing:
            raise BadRequest(f"{action} needs {missing}") from None


def build_operations(settings: Settings) -> Operations:
    """The operations function's wiring: the mounted share (ingest.root) and the loader's own
    queue (`runtime.ingest.wiring.part_sender_for`), so a re-sent part goes where the loader sends."""
    return Operations(
        Path(settings.require_ingest().root),
        part_sender_for(settings, aws_client("sqs")),
        dedup_horizon_s=settings.pipeline.dedup_horizon_s if settings.pipeline is not None else None,
    )
