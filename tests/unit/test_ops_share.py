"""`sluice ingest rejected|halted` on a local share: dry run by default, refusals when a
record could be duplicated, and the moves when it cannot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from local.environment import make_share
from ops.cli import main


@pytest.fixture
def share(tmp_path: Path) -> tuple[Path, Path]:
    root = make_share(tmp_path / "share")
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "env": "dev",
                "aws_endpoint_url": "http://127.0.0.1:1",
                "redis_url": "redis://127.0.0.1:1",
                "share": str(root),
                "queue_urls": {},
            }
        )
    )
    return root, state


def _reject(root: Path, batch: str, name: str, code: str, bytes_sent: int) -> None:
    directory = root / "rejected" / batch
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text('[{"a": 1}]')
    reason = {"code": code, "detail": "made on purpose", "batch": batch, "bytes_sent": bytes_sent, "at": 0}
    (directory / f"{name}.reason.json").write_text(json.dumps(reason))


def _run(state: Path, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(main, [*args, "--local", "--state", str(state), "--json"])
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:
        return result.exit_code, result.output


def test_replay_is_a_dry_run_unless_applied_and_refuses_what_could_duplicate(
    share: tuple[Path, Path],
) -> None:
    root, state = share
    _reject(root, "b1", "ok.json", "invalid_json", 0)
    _reject(root, "b1", "late.json", "late_write", 120)
    _reject(root, "b2", "parted.json", "crash", 0)
    (root / "processed" / "b2" / ".parts").mkdir(parents=True)
    (root / "processed" / "b2" / ".parts" / "0.json").write_text("{}")
    code, listed = _run(state, "ingest", "rejected", "ls")
    assert code == 0 and {r["file"] for r in listed} == {"b1/ok.json", "b1/late.json", "b2/parted.json"}
    code, dry = _run(state, "ingest", "rejected", "replay", "b1/ok.json")
    assert code == 0 and dry["applied"] is False and not (root / "inbox" / "ok.json").exists()
    code, _done = _run(state, "ingest", "rejected", "replay", "b1/ok.json", "--apply")
    assert code == 0 and (root / "inbox" / "ok.json").read_text() == '[{"a": 1}]'
    assert (root / "rejected" / "b1" / "ok.json").exists()  # the quarantined copy stays
    code, again = _run(state, "ingest", "rejected", "replay", "b1/ok.json", "--apply")
    assert code != 0 and "already replayed" in again
    code, late = _run(state, "ingest", "rejected", "replay", "b1/late.json", "--apply")
    assert code != 0 and "120 bytes" in late and not (root / "inbox" / "late.json").exists()
    code, parted = _run(state, "ingest", "rejected", "replay", "b2/parted.json", "--apply")
    assert code != 0 and ".parts/" in parted


def test_halted_resume_offers_only_the_safe_choice(share: tuple[Path, Path]) -> None:
    root, state = share
    for batch, parts in (("h1", False), ("h2", True)):
        directory = root / "halted" / batch
        directory.mkdir()
        (directory / ".header.json").write_text(json.dumps({"files": [{"name": f"{batch}-a.json"}]}))
        (directory / f"{batch}-a.json").write_text("[]")
        if parts:
            (directory / ".parts").mkdir()
            (directory / ".parts" / "0.json").write_text(json.dumps({"first": 0}))
    code, listed = _run(state, "ingest", "halted", "ls")
    choices = {row["batch"]: row["choices"] for row in listed}
    assert choices["h1"]["members"] == "ok" and choices["h2"]["members"].startswith("refused")
    code, shown = _run(state, "ingest", "halted", "show", "h2")
    assert shown["parts"] == [{"first": 0}] and shown["member_names"] == ["h2-a.json"]
    code, refused = _run(state, "ingest", "halted", "resume", "h2", "--choice", "members", "--apply")
    assert code != 0 and "refused" in refused and (root / "halted" / "h2" / "h2-a.json").exists()
    code, resend = _run(state, "ingest", "halted", "resume", "h2", "--choice", "resend-parts", "--apply")
    assert code != 0 and "cannot be read" in resend
    code, dry = _run(state, "ingest", "halted", "resume", "h1", "--choice", "members")
    assert code == 0 and dry["applied"] is False and (root / "halted" / "h1" / "h1-a.json").exists()
    code, _done = _run(state, "ingest", "halted", "resume", "h1", "--choice", "members", "--apply")
    assert (
        code == 0
        and (root / "inbox" / "h1-a.json").exists()
        and not (root / "halted" / "h1" / "h1-a.json").exists()
    )


def test_the_deployed_share_is_out_of_reach() -> None:
    result = CliRunner().invoke(main, ["ingest", "rejected", "ls", "--env", "nope"])
    assert result.exit_code != 0


def test_a_late_write_gives_back_only_its_unsent_tail_and_only_when_that_is_records(
    share: tuple[Path, Path],
) -> None:
    root, state = share
    directory = root / "rejected" / "b3"
    directory.mkdir(parents=True)
    bodies = {
        "grew.ndjson": b'{"a": 1}\n{"a": 2}\n{"a": 3}\n',  # 9 bytes sent, two whole lines after
        "array.json": b'[{"a": 1}, {"a": 2}]',  # an array rewritten longer: its tail is no records
        "same.ndjson": b'{"a": 1}\n',  # touched, not grown: nothing unsent
    }
    for name, body in bodies.items():
        (directory / name).write_bytes(body)
        reason = {"code": "late_write", "detail": "on purpose", "batch": "b3", "bytes_sent": 9, "at": 0}
        (directory / f"{name}.reason.json").write_text(json.dumps(reason))
    code, shown = _run(state, "ingest", "rejected", "show", "b3/grew.ndjson")
    assert code == 0 and shown["replay"] == "ok: bytes 9.. to inbox/grew.ndjson.tail-9"
    code, dry = _run(state, "ingest", "rejected", "replay", "b3/grew.ndjson")
    assert code == 0 and dry == {
        "file": "b3/grew.ndjson",
        "to": "inbox/grew.ndjson.tail-9",
        "from_byte": 9,
        "applied": False,
    }
    assert not list((root / "inbox").iterdir())
    code, _done = _run(state, "ingest", "rejected", "replay", "b3/grew.ndjson", "--apply")
    assert code == 0 and (root / "inbox" / "grew.ndjson.tail-9").read_bytes() == b'{"a": 2}\n{"a": 3}\n'
    code, array = _run(state, "ingest", "rejected", "replay", "b3/array.json", "--apply")
    assert code != 0 and "is not records on its own" in array
    code, same = _run(state, "ingest", "rejected", "replay", "b3/same.ndjson", "--apply")
    assert code != 0 and "nothing after the 9 bytes" in same
    assert sorted(p.name for p in (root / "inbox").iterdir()) == ["grew.ndjson.tail-9"]
