"""The archiver on real files and a real redis-server: archive, late writes, strays,
retention, the processed set, and a kill at every step followed by a clean re-run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from runtime.ingest.archiver import ARCHIVER_LOCK, Archiver
from runtime.ingest.coord import PROCESSED
from runtime.ingest.fs import Fs
from runtime.ingest.loader import run_loader
from runtime.ingest.sender import DiscardingPartSender
from tests.support.ingest import (
    REPO_ROOT,
    forever,
    handler_environment,
    make_ingest,
    write_corpus,
)


def _load(root: Path, client: redis.Redis, files: int = 6) -> str:
    """Load a small corpus into one committed batch; returns the batch id."""
    write_corpus(root, files, 3)
    result = run_loader(make_ingest(root, client, DiscardingPartSender()), forever)
    assert result.counters["batches_committed"] == 1
    (batch,) = os.listdir(root / "processed")
    return batch


def _archiver(root: Path, client: redis.Redis, **overrides: Any) -> Archiver:
    values = {"archive_after_s": 0, **overrides}
    return Archiver.for_ingest(make_ingest(root, client, DiscardingPartSender(), **values), threads=4)


def _archived(root: Path, batch: str) -> list[Path]:
    return list((root / "archive").glob(f"*/*/*/*/{batch}"))


def test_committed_batch_moves_under_its_commit_hour_and_leaves_the_processed_set(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    batch = _load(tmp_path, redis_client)
    assert redis_client.zscore(PROCESSED, batch) is not None
    result = _archiver(tmp_path, redis_client).run(forever)
    assert result.batches_archived == 1 and result.files_archived == 6
    (archived,) = _archived(tmp_path, batch)
    committed = float((archived / ".committed").read_text())
    assert archived.parent.relative_to(tmp_path / "archive").as_posix() == time.strftime(
        "%Y/%m/%d/%H", time.gmtime(committed)
    )
    assert not (tmp_path / "processed" / batch).exists()
    assert redis_client.zscore(PROCESSED, batch) is None


def test_a_batch_waits_until_past_the_lease_and_timeout(tmp_path: Path, redis_client: redis.Redis) -> None:
    batch = _load(tmp_path, redis_client)
    result = _archiver(tmp_path, redis_client, archive_after_s=3600).run(forever)
    assert result.batches_archived == 0 and result.batches_waiting == 1
    assert (tmp_path / "processed" / batch).is_dir()


def _written_late(root: Path, client: redis.Redis, extra: bytes) -> tuple[str, Path, int]:
    """A committed batch whose first member grew by `extra` after the claim: (batch, member,
    bytes sent)."""
    batch = _load(root, client)
    victim = sorted(p for p in (root / "processed" / batch).iterdir() if not p.name.startswith("."))[0]
    sent = victim.stat().st_size
    with victim.open("ab") as handle:
        handle.write(extra)
    return batch, victim, sent


def test_late_write_is_copied_to_rejected_with_the_bytes_sent(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    batch, victim, sent = _written_late(tmp_path, redis_client, b'\n{"late": true}\n')
    result = _archiver(tmp_path, redis_client).run(forever)
    assert result.late_writes == 1
    copy = tmp_path / "rejected" / batch / victim.name
    reason = orjson.loads((tmp_path / "rejected" / batch / f"{victim.name}.reason.json").read_bytes())
    assert reason["code"] == "late_write" and reason["bytes_sent"] == sent and reason["batch"] == batch
    assert copy.read_bytes().endswith(b'{"late": true}\n')
    (archived,) = _archived(tmp_path, batch)
    assert (archived / victim.name).read_bytes() == copy.read_bytes()  # the original stays with its batch


def test_a_late_write_above_max_file_bytes_is_linked_not_read(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Issue 22: the late-write check read the whole file into memory whatever its size."""
    batch, victim, sent = _written_late(tmp_path, redis_client, b"x" * 4096)

    class NoReads(Fs):
        def read_all(self, path: str) -> bytes:
            assert not path.endswith(victim.name), "a file above max_file_bytes was read"
            return super().read_all(path)

    archiver = _archiver(tmp_path, redis_client, max_file_bytes=2048)
    archiver.fs = NoReads()
    assert archiver.run(forever).late_writes == 1
    copy = tmp_path / "rejected" / batch / victim.name
    reason = orjson.loads((tmp_path / "rejected" / batch / f"{victim.name}.reason.json").read_bytes())
    assert reason["code"] == "file_too_large" and reason["bytes_sent"] == sent
    (archived,) = _archived(tmp_path, batch)
    assert (archived / victim.name).stat().st_ino == copy.stat().st_ino


def test_stray_claim_goes_back_to_the_inbox(tmp_path: Path, redis_client: redis.Redis) -> None:
    batch = _load(tmp_path, redis_client)
    stray = tmp_path / "processed" / batch / "2026-11-25T14-stray.json"
    stray.write_bytes(b'{"a": 1}')
    result = _archiver(tmp_path, redis_client).run(forever)
    assert result.strays_returned == 1
    assert (tmp_path / "inbox" / stray.name).read_bytes() == b'{"a": 1}'
    (archived,) = _archived(tmp_path, batch)
    assert not (archived / stray.name).exists()


def test_retention_deletes_old_hours_only(tmp_path: Path, redis_client: redis.Redis) -> None:
    batch = _load(tmp_path, redis_client)
    _archiver(tmp_path, redis_client).run(forever)
    keep = _archiver(tmp_path, redis_client, archive_retention_days=1).run(forever)
    assert keep.batches_deleted == 0 and _archived(tmp_path, batch)
    later = _archiver(tmp_path, redis_client, archive_retention_days=1)
    later.clock = lambda: time.time() + 2 * 86_400
    result = later.run(forever)
    assert result.batches_deleted == 1 and result.files_deleted >= 6
    assert not _archived(tmp_path, batch)
    assert list((tmp_path / "archive").iterdir()) == []


def test_one_archiver_at_a_time(tmp_path: Path, redis_client: redis.Redis) -> None:
    _load(tmp_path, redis_client)
    redis_client.set(ARCHIVER_LOCK, "someone-else", px=10_000)
    assert _archiver(tmp_path, redis_client).run(forever).locked_out


KILL_POINTS = [
    "archiver.after_late_reason",
    "archiver.after_late_writes",
    "archiver.after_strays",
    "archiver.after_move",
]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_killed_at_any_step_a_rerun_finishes_the_same_way(
    tmp_path: Path, redis_client: redis.Redis, redis_server: Any, kill_at: str
) -> None:
    batch = _load(tmp_path, redis_client)
    directory = tmp_path / "processed" / batch
    victim = sorted(p for p in directory.iterdir() if not p.name.startswith("."))[0]
    with victim.open("ab") as handle:
        handle.write(b"\n# appended later\n")
    (directory / "2026-11-25T14-stray.json").write_bytes(b"{}")
    env = handler_environment(tmp_path, redis_server.url, "http://127.0.0.1:9", "unused", archive_after_s=0)
    command = [sys.executable, "-m", "tests.support.run_archiver"]
    killed = subprocess.run(
        command, env={**env, "SLUICE_KILL_AT": kill_at}, cwd=REPO_ROOT, capture_output=True, check=False
    )
    assert killed.returncode == 137, killed.stderr
    redis_client.delete(ARCHIVER_LOCK)  # a killed run's lock would only delay the next one by its TTL
    finished = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    (archived,) = _archived(tmp_path, batch)
    rejected = sorted(p.name for p in (tmp_path / "rejected" / batch).iterdir())
    assert rejected == [victim.name, f"{victim.name}.reason.json"]
    assert (tmp_path / "inbox" / "2026-11-25T14-stray.json").exists()
    assert not (archived / "2026-11-25T14-stray.json").exists()
    assert redis_client.zscore(PROCESSED, batch) is None
    assert not list(archived.glob(".late-*")) and not list((tmp_path / "rejected" / batch).glob(".tmp-*"))
