"""`sluice ingest rejected|halted …` on the share itself (`--local`: the directory the local
runtime uses as EFS; DESIGN's layout). Anything that moves data is a dry run unless `--apply`.

Replay copies a rejected file back into `inbox/` under its own name (tmp name, fsync, rename),
and only when that cannot duplicate a record: its reason says nothing of it was sent
(`bytes_sent` 0) and no `.parts/` record of its batch exists anywhere on the share. The
quarantined copy stays where it is; a `.<name>.replayed.json` marker beside it (a dotfile, so
the checker does not count it) stops a second replay.

Resume of a halted batch offers `members`: give the members back to `inbox/` as files to load
again — only when the batch has no `.parts/` record (nothing of it was ever published, so
nothing of it can have been sent). Re-sending what the parts record, byte for byte under their
ids, needs the loader's own part computation and is refused here with that reason.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from runtime.ingest.layout import HEADER_NAME, PARTS_DIR, REASON_SUFFIX

REPLAYED_SUFFIX = ".replayed.json"
BATCH_PLACES = ("claimed", "processed", "halted")


class Refused(RuntimeError):
    """The action could duplicate or lose a record; the message says why."""


def _dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _parts_records(share: Path, batch: str) -> list[Path]:
    found: list[Path] = []
    for place in BATCH_PLACES:
        found += sorted((share / place / batch / PARTS_DIR).glob("*.json"))
    found += sorted(share.glob(f"archive/*/*/*/*/{batch}/{PARTS_DIR}/*.json"))
    return found


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
    return {
        **row,
        "reason": json.loads((share / "rejected" / f"{file}{REASON_SUFFIX}").read_text()),
        "head": head,
    }


def replay_refusal(share: Path, row: dict[str, Any]) -> str | None:
    batch, name = row["file"].split("/", 1)
    if row["replayed"]:
        return "already replayed"
    if row["bytes_sent"] != 0:
        return f"{row['bytes_sent']} bytes of it were sent (replaying only the rest is not implemented here)"
    if row["size"] is None or not (share / "rejected" / row["file"]).is_file():
        return "not a regular file (its entry was moved aside, its target never opened)"
    if _parts_records(share, batch):
        return f"batch {batch} has .parts/ records: one of them may hold its records"
    if (share / "inbox" / name).exists():
        return f"inbox/{name} exists"
    return None


def rejected_replay(share: Path, file: str, apply: bool) -> dict[str, Any]:
    row = rejected_show(share, file)
    refusal = replay_refusal(share, row)
    if refusal is not None:
        raise Refused(f"refusing to replay {file}: {refusal}")
    batch, name = file.split("/", 1)
    if apply:
        source, target = share / "rejected" / file, share / "inbox" / name
        temporary = share / "inbox" / f".{name}.replay.tmp"
        with open(temporary, "wb") as out:
            out.write(source.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, target)
        marker = {"replayed_to": f"inbox/{name}", "at": time.time()}
        (share / "rejected" / batch / f".{name}{REPLAYED_SUFFIX}").write_text(json.dumps(marker))
    return {"file": file, "to": f"inbox/{name}", "applied": apply}


def _members(batch_dir: Path) -> list[Path]:
    return sorted(p for p in batch_dir.iterdir() if not p.name.startswith(".") and not p.is_dir())


def halted_list(share: Path) -> list[dict[str, Any]]:
    return [
        {
            "batch": batch.name,
            "members": len(_members(batch)),
            "header": (batch / HEADER_NAME).is_file(),
            "parts_recorded": len(sorted((batch / PARTS_DIR).glob("*.json"))),
            "choices": halted_choices(share, batch.name),
        }
        for batch in _dirs(share / "halted")
    ]


def halted_choices(share: Path, batch: str) -> dict[str, str]:
    """Each resume choice with 'ok' or why it is refused."""
    parts = _parts_records(share, batch)
    members = (
        "ok" if not parts else f"refused: {len(parts)} .parts/ record(s) exist; members may have been sent"
    )
    resend = "refused: re-sending recorded parts byte for byte needs the loader (not implemented here)"
    return {"members": members, "resend-parts": resend}


def halted_show(share: Path, batch: str) -> dict[str, Any]:
    row = next((r for r in halted_list(share) if r["batch"] == batch), None)
    if row is None:
        raise Refused(f"no halted batch {batch}")
    batch_dir = share / "halted" / batch
    header = json.loads((batch_dir / HEADER_NAME).read_text()) if row["header"] else None
    parts = [json.loads(p.read_text()) for p in sorted((batch_dir / PARTS_DIR).glob("*.json"))]
    return {**row, "member_names": [p.name for p in _members(batch_dir)], "header": header, "parts": parts}


def halted_resume(share: Path, batch: str, choice: str, apply: bool) -> dict[str, Any]:
    shown = halted_show(share, batch)
    verdict = shown["choices"].get(choice)
    if verdict is None:
        raise Refused(f"unknown choice {choice}; choices: {', '.join(shown['choices'])}")
    if verdict != "ok":
        raise Refused(f"{choice} for {batch}: {verdict}")
    clashes = [name for name in shown["member_names"] if (share / "inbox" / name).exists()]
    if clashes:
        raise Refused(f"inbox already has {', '.join(clashes)}")
    if apply:
        for name in shown["member_names"]:
            os.rename(share / "halted" / batch / name, share / "inbox" / name)
    return {"batch": batch, "choice": choice, "returned": shown["member_names"], "applied": apply}
