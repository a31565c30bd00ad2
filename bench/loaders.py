"""Loader scenarios: baseline vs sluice through the moto server, and the sluice loader core
alone (discarding part sender; warm page cache, and with the EFS latency model:
docs/ingest.md#the-efs-latency-model)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.baseline import load_inbox
from bench.inbox import write_inbox
from bench.measure import Measurement, SqsMeter, Stopwatch
from runtime.clients import AWS_CLIENT_CONFIG, new_session
from runtime.config import IngestSettings
from runtime.ingest.coord import Coordinator
from runtime.ingest.fs import Fs
from runtime.ingest.layout import Layout
from runtime.ingest.loader import LoaderResult, run_loader
from runtime.ingest.model import Ingest
from runtime.ingest.sender import DiscardingPartSender, PartSender, SqsPartSender

LAMBDA_MAX_S = 900.0  # a benchmark invocation has Lambda's longest timeout
# docs/ingest.md#the-efs-latency-model: the EFS latency model.
EFS_READ_LATENCY_S = 0.001
EFS_WRITE_LATENCY_S = 0.0027


class LatencyFs(Fs):
    """`Fs` with EFS's latency: every modelled operation sleeps like a round trip would."""

    def _read_op(self, count: int = 1) -> None:
        super()._read_op(count)
        time.sleep(EFS_READ_LATENCY_S * count)

    def _write_op(self, count: int = 1) -> None:
        super()._write_op(count)
        time.sleep(EFS_WRITE_LATENCY_S * count)


@dataclass(frozen=True)
class Shape:
    key: str
    files: int
    records_per_file: int
    record_bytes: int = 400


@dataclass
class Servers:
    redis_url: str
    aws_endpoint_url: str

    def redis(self) -> redis.Redis:
        client = redis.Redis.from_url(self.redis_url)
        client.flushall()
        return client

    def fresh_redis_url(self) -> str:
        """The Redis URL, emptied first (every scenario starts from nothing)."""
        self.redis()
        return self.redis_url

    def sqs(self, meter: SqsMeter) -> Any:
        client = new_session().client(
            "sqs", endpoint_url=self.aws_endpoint_url, region_name="us-east-1", config=AWS_CLIENT_CONFIG
        )
        return meter.attach(client)

    def fresh_queue(self, sqs: Any, name: str) -> str:
        url: str = sqs.create_queue(QueueName=f"bench-{name}-{time.monotonic_ns()}")["QueueUrl"]
        return url


@dataclass(frozen=True)
class LoaderIngest:
    """Builds a benchmark loader's `Ingest`; pickles, so helper processes build theirs with it."""

    root: str
    redis_url: str
    threads: int
    processes: int = 1
    latency: bool = False  # the EFS latency model (docs/ingest.md#the-efs-latency-model)
    max_message_bytes: int = 1_048_576

    def __call__(self, sender: PartSender | None = None) -> Ingest:
        settings = IngestSettings(
            root=self.root,
            settle_s=1.0,
            lease_s=600,
            deadline_margin_s=1.0,
            read_threads=self.threads,
            processes=self.processes,
        )
        return Ingest(
            settings=settings,
            max_message_bytes=self.max_message_bytes,
            fs=LatencyFs() if self.latency else Fs(),
            coord=Coordinator(redis.Redis.from_url(self.redis_url)),
            sender=sender or DiscardingPartSender(),
            layout=Layout(self.root),
        )


def _run_sluice(build: LoaderIngest, sender: PartSender | None = None) -> LoaderResult:
    """One loader invocation; helper processes (if any) build their `Ingest` with `build` and
    discard what they pack."""
    deadline = time.monotonic() + LAMBDA_MAX_S
    return run_loader(build(sender), lambda: deadline - time.monotonic(), helper_ingest=build)


def _fresh_share(shape: Shape) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"sluice-bench-{shape.key}-"))
    write_inbox(
        root, files=shape.files, records_per_file=shape.records_per_file, record_bytes=shape.record_bytes
    )
    os.sync()  # the inbox's write-back happens now, not during the measurement
    return root


def baseline_through_moto(servers: Servers, shape: Shape) -> Measurement:
    root = _fresh_share(shape)
    meter = SqsMeter()
    sqs = servers.sqs(meter)
    queue = servers.fresh_queue(sqs, "baseline")
    try:
        with Stopwatch() as watch:
            result = load_inbox(root / "inbox", sqs, queue, servers.redis())
    finally:
        shutil.rmtree(root)
    return Measurement(
        name=f"baseline:{shape.key}",
        seconds=watch.seconds,
        files=result.files,
        records=result.records,
        sqs_calls=meter.total_calls,
        billed_units=meter.billed_units,
        bytes_sent=meter.bytes_sent,
        messages=meter.messages_sent,
        peak_rss_mb=watch.peak_rss_mb,
    )


def sluice_through_moto(servers: Servers, shape: Shape, threads: int = 16) -> Measurement:
    root = _fresh_share(shape)
    meter = SqsMeter()
    sqs = servers.sqs(meter)
    queue = servers.fresh_queue(sqs, "sluice")
    try:
        with Stopwatch() as watch:
            build = LoaderIngest(str(root), servers.fresh_redis_url(), threads)
            result = _run_sluice(build, SqsPartSender(sqs, queue))
    finally:
        shutil.rmtree(root)
    return _from_loader(f"sluice:{shape.key}", watch, result, meter)


def sluice_core(
    servers: Servers,
    shape: Shape,
    *,
    latency: bool = False,
    threads: int = 16,
    processes: int = 1,
    name: str = "",
) -> Measurement:
    """The loader core alone: a discarding part sender, so only parsing, packing, EFS and Redis count.
    With `processes` above 1, one invocation's processes together (start-up included)."""
    root = _fresh_share(shape)
    build = LoaderIngest(str(root), servers.fresh_redis_url(), threads, processes, latency)
    try:
        with Stopwatch() as watch:
            result = _run_sluice(build)
    finally:
        shutil.rmtree(root)
    return _from_loader(name or f"core:{shape.key}", watch, result, None)


def syscall_floor(shape: Shape) -> Measurement:
    """What this file system allows at best: the operations the ingest protocol
    (docs/ingest.md#the-efs-latency-model) requires per file (open + fstat + read + close to
    settle, one rename to claim, a stat after it) in a tight loop with nothing else. A
    loader core on the same disk can approach this, never pass it."""
    root = _fresh_share(shape)
    inbox, claimed = root / "inbox", root / "claimed"
    claimed.mkdir()
    names = sorted(os.listdir(inbox))
    try:
        with Stopwatch() as watch:
            for name in names:
                fd = os.open(f"{inbox}/{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    os.pread(fd, os.fstat(fd).st_size, 0)
                finally:
                    os.close(fd)
                os.rename(f"{inbox}/{name}", f"{claimed}/{name}")
                os.stat(f"{claimed}/{name}", follow_symlinks=False)
    finally:
        shutil.rmtree(root)
    files = len(names)
    return Measurement(
        f"floor:{shape.key}",
        watch.seconds,
        files,
        files * shape.records_per_file,
        peak_rss_mb=watch.peak_rss_mb,
    )


def _from_loader(name: str, watch: Stopwatch, result: LoaderResult, meter: SqsMeter | None) -> Measurement:
    counters = result.counters
    files = counters["files"]
    return Measurement(
        name=name,
        seconds=watch.seconds,
        files=files,
        records=counters["records"],
        sqs_calls=meter.total_calls if meter else result.sqs_calls,
        billed_units=meter.billed_units if meter else result.billing_units,
        bytes_sent=meter.bytes_sent if meter else counters["bytes"],
        messages=meter.messages_sent if meter else counters["parts"],
        peak_rss_mb=watch.peak_rss_mb,
        extra={
            "efs_ops_per_file": round(result.efs_ops / files, 2) if files else 0.0,
            "efs_read_ops": result.efs_read_ops,
            "efs_write_ops": result.efs_write_ops,
            "processes": len(result.files_per_process),
        },
    )
