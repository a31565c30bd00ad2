"""`python -m local --inbox DIR --report PATH`: the user's own files through the real loader,
checker and router; every file gets exactly the fate this corpus expects, DIR is never
modified, and a symlink's target outside DIR is never read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime.ingest.layout import printable_name

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE_BYTES = 65_536
MAX_FILE_BYTES = 600_000  # large.json (~0.4 MB) loads, huge.json (~0.8 MB) is file_too_large
JUNK = b"# exported by a user's tool\n// another comment\n\n"


def _records(count: int, width: int = 20) -> bytes:
    return orjson.dumps([{"n": i, "pad": "p" * width} for i in range(count)])


def make_corpus(root: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A directory covering every row of the bad-input table (docs/bad-input.md#files-ingest)
    that a user's directory can hold, and what each entry must become."""
    inbox = root / "mine"
    outside = root / "outside"
    inbox.mkdir()
    outside.mkdir()
    expect: dict[str, dict[str, Any]] = {}

    def file(name: str, data: bytes, fate: str, records: int = 0, codes: set[str] | None = None) -> None:
        (inbox / name).write_bytes(data)
        expect[name] = {"fate": fate, "records": records, "codes": codes}

    file("plain.json", JUNK + _records(3), "delivered", 3)
    file("lines.ndjson", b"\n".join(orjson.dumps({"n": i}) for i in range(5)) + b"\n", "delivered", 5)
    file("single.json", JUNK + b'{"just": "one"}', "delivered", 1)
    file("name with spaces é ü 日本.json", _records(4), "delivered", 4)
    file("large.json", JUNK + _records(10_000), "delivered", 10_000)
    file("empty.json", b"", "rejected", codes={"empty"})
    file("comments.json", JUNK, "rejected", codes={"empty", "no_json"})
    file("truncated.json", JUNK + _records(3)[:-5], "rejected", codes={"invalid_json"})
    file("latin1.json", b'[{"city": "S\xe3o Paulo"}]', "rejected", codes={"invalid_encoding"})
    file("numbers.json", b"[1, 2, 3]", "rejected", codes={"not_records"})
    file(
        "too-large.json",
        orjson.dumps([{"blob": "b" * (MAX_MESSAGE_BYTES + 100)}]),
        "rejected",
        codes={"record_too_large"},
    )
    file(".hidden.json", _records(2), "skipped")
    file("partial.json.tmp", _records(2), "skipped")
    (inbox / "a directory").mkdir()
    (inbox / "a directory" / "inner.json").write_bytes(_records(2))
    expect["a directory"] = {"fate": "skipped", "records": 0, "codes": None}
    # Valid records outside DIR: if anything followed the link, they would be delivered under
    # the link's name and its fate would not be `rejected`.
    (outside / "secret.json").write_bytes(_records(7))
    os.symlink(outside / "secret.json", inbox / "link-outside.json")
    expect["link-outside.json"] = {"fate": "rejected", "records": 0, "codes": {"not_regular_file"}}
    os.mkfifo(inbox / "a-fifo.json")
    expect["a-fifo.json"] = {"fate": "rejected", "records": 0, "codes": {"not_regular_file"}}
    # Issue 22's triggers: none may stop the rest, each gets its fate.
    bad_name = os.fsdecode(b"bad-name-\xff.json")
    (inbox / bad_name).write_bytes(_records(2))
    expect[printable_name(bad_name)] = {"fate": "rejected", "records": 0, "codes": {"invalid_name"}}
    file("l" * 250 + ".json", b'{"a": tru}', "rejected", codes={"invalid_json"})
    file("g" * 250 + ".json", _records(2), "delivered", 2)
    file("bigint.json", b'{"id": 123456789012345678901234567890}', "rejected", codes={"number_out_of_range"})
    file("overflow.json", b'[{"x": 1e400}]', "rejected", codes={"number_out_of_range"})
    file("junk-only.json", b"2026-11-25 12:00:00 [INFO] tick {n}\n" * 10_000, "rejected", codes={"no_json"})
    file("huge.json", _records(20_000), "rejected", codes={"file_too_large"})
    file("future.json", _records(2), "rejected", codes={"future_mtime"})
    ahead = time.time() + 86_400
    os.utime(inbox / "future.json", (ahead, ahead))
    return inbox, expect


def _snapshot(directory: Path) -> dict[str, tuple[Any, ...]]:
    state = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        link = os.readlink(path) if path.is_symlink() else None
        state[str(path.relative_to(directory))] = (st.st_mode, st.st_size, st.st_mtime_ns, link)
    return state


def _run(tmp_path: Path, inbox: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report.json"
    finished = subprocess.run(
        [
            sys.executable, "-m", "local", "--no-live",
            "--inbox", str(inbox), "--report", str(report), "--log", str(tmp_path / "functions.log"),
            "--set", f"queues.max_message_bytes={MAX_MESSAGE_BYTES}",
            "--set", f"ingest.max_file_bytes={MAX_FILE_BYTES}",
            "--schedule", "loader=300ms", "--schedule", "checker=500ms",
            *args,
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    output = finished.stdout + finished.stderr
    assert report.exists(), output
    return finished.returncode, orjson.loads(report.read_bytes()), output


def test_every_file_of_a_users_directory_meets_its_fate(tmp_path: Path) -> None:
    inbox, expect = make_corpus(tmp_path)
    before = _snapshot(inbox)
    returncode, report, output = _run(tmp_path, inbox, "--timeout", "90")
    assert _snapshot(inbox) == before, "the user's directory was modified"

    fates = {entry["file"]: entry for entry in report["files"]}
    assert set(fates) == set(expect), output
    for name, wanted in expect.items():
        got = fates[name]
        assert got["fate"] == wanted["fate"], (name, got, output)
        assert got["records_delivered"] == wanted["records"], (name, got)
        assert got["lost"] == 0 and got["duplicates"] == 0, (name, got)
        if wanted["fate"] == "delivered":
            assert got["item_ids"] == [f"{name}#{i}" for i in range(wanted["records"])]
            assert got["reason"] is None
        if wanted["codes"]:
            assert got["reason"] in wanted["codes"], (name, got)
            assert got["rejected_path"].startswith("rejected/") and got["rejected_path"].endswith(name)
    delivered = sum(w["records"] for w in expect.values())
    assert report["records_delivered"] == report["records_written"] == delivered
    assert report["lost"] == 0 and report["duplicates"] == 0 and report["unexpected_records"] == 0
    assert report["pending_files"] == [] and report["ok"] is True
    assert returncode == 0, output


def test_files_without_a_fate_by_the_timeout_are_named_and_fail_the_run(tmp_path: Path) -> None:
    inbox = tmp_path / "mine"
    inbox.mkdir()
    (inbox / "waiting.json").write_bytes(_records(2))
    # No ingest system: nothing loads the file, so it can only stay pending.
    returncode, report, output = _run(tmp_path, inbox, "--systems", "pipeline", "--timeout", "2")
    assert returncode == 1, output
    assert report["pending_files"] == ["waiting.json"]
    assert report["timed_out"] is True and report["ok"] is False
    (entry,) = report["files"]
    assert entry["fate"] == "pending" and entry["problem"] == "no fate yet"
