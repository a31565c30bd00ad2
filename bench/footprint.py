"""Memory footprints: the loader's peak RSS with a huge inbox (docs/ingest.md#1-settle: 1,000,000 files), and
what Redis holds per batch in flight or committed, from which the steady state at the target
arrival rate follows (6,000 files/s, the archiver on its schedule)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson
import redis

from bench.inbox import JUNK_HEADER, make_record
from bench.measure import Measurement, Stopwatch
from runtime.config import IngestSettings
from runtime.ingest.coord import PROCESSED, Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.loader import run_loader
from runtime.ingest.model import Ingest
from runtime.ingest.sender import DiscardingPartSender

ARRIVAL_FILES_PER_S = 6000


def _fast_inbox(root: Path, files: int) -> None:
    """Many small settled files, quickly: one body, many names (contents do not matter here)."""
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    body = JUNK_HEADER + orjson.dumps(make_record(0, 0, 400))
    settled = time.time() - 600
    for index in range(files):
        path = inbox / f"2026-11-25T13-00-00.{index:09d}.json"
        path.write_bytes(body)
        os.utime(path, (settled, settled))


def _ingest(root: Path, client: redis.Redis, **overrides: object) -> Ingest:
    settings = IngestSettings(root=str(root), settle_s=1.0, lease_s=600, deadline_margin_s=1.0, **overrides)  # type: ignore[arg-type]
    return Ingest(
        settings=settings,
        max_message_bytes=1_048_576,
        fs=Fs(),
        coord=Coordinator(client),
        sender=DiscardingPartSender(),
        layout=Layout(str(root)),
    )


def loader_rss_with_inbox(redis_url: str, files: int, run_s: float = 10.0) -> Measurement:
    """Peak RSS of a loader run (for `run_s` seconds) over an inbox of `files` files, in a fresh
    interpreter of its own: this process's peak already holds every earlier scenario's."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_loader_rss_with_inbox, (redis_url, files, run_s))


def _loader_rss_with_inbox(redis_url: str, files: int, run_s: float) -> Measurement:
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-rss-"))
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        _fast_inbox(root, files)
        deadline = time.monotonic() + run_s
        with Stopwatch() as watch:
            result = run_loader(_ingest(root, client), lambda: deadline - time.monotonic() + 1.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return Measurement(
        name=f"loader:rss_{files}_files",
        seconds=watch.seconds,
        files=result.counters["files"],
        records=result.counters["records"],
        peak_rss_mb=watch.peak_rss_mb,
        extra={"inbox_files": files},
    )


def redis_bytes_per_batch(redis_url: str, batches: int = 60, batch_files: int = 50) -> dict[str, float]:
    """Redis bytes per committed batch (what stays until the archiver trims it) and the steady
    state that implies at the arrival rate, with batches waiting `archive_after_s` plus one
    archiver period before they are trimmed. A first batch is loaded before measuring, so
    fixed costs (the Lua script cache, client buffers) do not count as per-batch bytes."""
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-redis-"))
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        _fast_inbox(root, batch_files)
        run_loader(_ingest(root, client, batch_max_files=batch_files), lambda: 1e9)
        shutil.rmtree(root / "inbox")
        _fast_inbox(root, batches * batch_files)
        before = int(client.info("memory")["used_memory"])
        run_loader(_ingest(root, client, batch_max_files=batch_files), lambda: 1e9)
        after = int(client.info("memory")["used_memory"])
        committed = int(client.zcard(PROCESSED))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_batch = max(0, after - before) / max(1, committed - 1)
    defaults = IngestSettings(root="/")
    waiting_s = defaults.archive_after_s + 300  # committed, then up to one archiver period (5 min)
    steady_batches = ARRIVAL_FILES_PER_S / defaults.batch_max_files * waiting_s
    return {
        "bytes_per_committed_batch": round(per_batch, 1),
        "steady_state_batches": round(steady_batches),
        "used_memory_mb_steady": round((before + per_batch * steady_batches) / 2**20, 2),
        "baseline_used_memory_mb": round(before / 2**20, 2),
    }
