"""The archiver against the EFS latency model (docs/ingest.md#the-efs-latency-model) (1 ms
reads, 2.7 ms writes), compared with the arrival rate it must keep up with."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import redis

from bench.inbox import write_inbox
from bench.loaders import LatencyFs
from bench.measure import Measurement, Stopwatch
from runtime.config import IngestSettings
from runtime.ingest.archiver import Archiver
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.loader import run_loader
from runtime.ingest.model import Ingest
from runtime.ingest.sender import DiscardingPartSender


def archiver_with_latency(redis_url: str, files: int, threads: int = 64) -> Measurement:
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-archiver-"))
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        write_inbox(root, files=files, records_per_file=1)
        settings = IngestSettings(
            root=str(root), settle_s=1.0, lease_s=600, deadline_margin_s=1.0, archive_after_s=0
        )
        ingest = Ingest(
            settings=settings,
            max_message_bytes=1_048_576,
            fs=Fs(),
            coord=Coordinator(client),
            sender=DiscardingPartSender(),
            layout=Layout(str(root)),
        )
        run_loader(ingest, lambda: 1e9)
        fs = LatencyFs()
        archiver = Archiver(settings=settings, fs=fs, redis=client, threads=threads)
        with Stopwatch() as watch:
            result = archiver.run(lambda: 1e9)
    finally:
        shutil.rmtree(root)
    return Measurement(
        name="archiver:efs_latency",
        seconds=watch.seconds,
        files=result.files_archived,
        records=result.files_archived,
        peak_rss_mb=watch.peak_rss_mb,
        extra={
            "batches": result.batches_archived,
            "efs_ops_per_file": round(fs.ops.total / max(1, result.files_archived), 2),
        },
    )
