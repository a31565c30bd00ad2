"""`sluice ingest rejected replay` and `halted resume --choice resend-parts` through the real
loader and the real router to the S3 sink (moto server, redis-server): a file quarantined
whole, a late write's unsent tail and a batch halted after some of its parts were sent each
reach the sink exactly once per record — nothing duplicated, nothing lost."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

from local.servers import MotoServer, RedisServer
from runtime.ingest import SqsPartSender, run_loader
from runtime.ingest.archiver import Archiver
from runtime.ingest.fs import Fs
from runtime.operations import Operations
from tests.support.ingest import (
    SETTLE_S,
    drain,
    forever,
    ingest_settings,
    make_ingest,
    write_corpus,
    write_file,
)
from tests.support.pipeline import Harness

SMALL_FILE_LIMIT = 1024


def sink_everything(state: dict[str, Any]) -> None:
    return None  # every record's last step: the router writes it to the S3 sink


def _ndjson(prefix: str, count: int) -> bytes:
    return b"".join(orjson.dumps({"src": prefix, "n": n, "pad": "y" * 60}) + b"\n" for n in range(count))


def _load(root: Path, client: redis.Redis, h: Harness, **settings: Any) -> None:
    result = run_loader(make_ingest(root, client, SqsPartSender(h.sqs, h.state_url), **settings), forever)
    assert result.counters["batches_committed"] >= 1, result.counters


def _halt_after_part(root: Path, batch: str, sent_upto: int, bodies: list[bytes], h: Harness) -> None:
    """Leave `batch` as a loader halted part-way leaves it: parts 0..sent_upto recorded and
    sent (here: delivered to the queue), the rest neither."""
    os.rename(root / "processed" / batch, root / "halted" / batch)
    (root / "halted" / batch / ".committed").unlink()
    for record in (root / "halted" / batch / ".parts").iterdir():
        if int(record.stem) > sent_upto:
            record.unlink()
    (root / "halted" / batch / ".halted.json").write_bytes(orjson.dumps({"reason": "past_resend_horizon"}))
    for body in bodies:
        if int(orjson.loads(body)["id"].rsplit("/", 1)[1]) <= sent_upto:
            h.sqs.send_message(QueueUrl=h.state_url, MessageBody=body.decode())


def test_replayed_files_and_resent_parts_reach_the_sink_exactly_once(
    tmp_path: Path, aws: Any, redis_client: redis.Redis, redis_server: RedisServer, moto: MotoServer
) -> None:
    h = Harness.create(aws, redis_client, redis_server.url, lease_s=2)
    root = tmp_path / "share"
    expected: Counter[str] = Counter()

    # 1. A file over ingest.max_file_bytes is quarantined whole, nothing of it sent.
    write_file(root, "big.ndjson", _ndjson("big", 20))
    _load(root, redis_client, h, max_file_bytes=SMALL_FILE_LIMIT)
    expected.update(f"big.ndjson#{n}" for n in range(20))  # once the operator replays it

    # 2. A file that grows after its batch was sent: the archiver copies it aside as late_write.
    expected.update(write_corpus(root, files=5, records_per_file=4, prefix="a"))
    write_file(root, "grow.ndjson", _ndjson("grow", 3))
    expected.update(f"grow.ndjson#{n}" for n in range(3))
    _load(root, redis_client, h)
    (grown,) = root.glob("processed/*/grow.ndjson")
    sent_bytes = grown.stat().st_size
    with open(grown, "ab") as more:
        more.write(_ndjson("grow-tail", 2))
    archived = Archiver(settings=ingest_settings(root, archive_after_s=0), fs=Fs(), redis=redis_client).run(
        forever
    )
    assert archived.late_writes == 1
    expected.update(f"grow.ndjson.tail-{sent_bytes}#{n}" for n in range(2))
    h.run(sink_everything)

    # 3. A batch halted after its first two parts were sent (and reached the sink).
    expected.update(write_corpus(root, files=12, records_per_file=30, prefix="h"))
    _load(root, redis_client, h)
    bodies = [message["body"] for message in drain(h.sqs, h.state_url)]
    assert len(bodies) >= 4, "an 8 KiB limit splits 360 records into several parts"
    (halted,) = {orjson.loads(body)["id"].rsplit("/", 1)[0] for body in bodies}
    _halt_after_part(root, halted, 1, bodies, h)
    h.run(sink_everything)

    # The operator, through the same core the operations function runs.
    operations = Operations(root, SqsPartSender(h.sqs, h.state_url), dedup_horizon_s=86_400)
    rejected = {
        row["file"].split("/", 1)[1]: row["file"] for row in operations.perform({"action": "rejected.ls"})
    }
    for name in ("big.ndjson", "grow.ndjson"):
        done = operations.perform({"action": "rejected.replay", "file": rejected[name], "apply": True})
        assert done["applied"]
    resend = {"action": "halted.resume", "batch": halted, "choice": "resend-parts", "apply": True}
    resent = operations.perform(resend)
    assert resent["resent"] == [f"{halted}/0", f"{halted}/1"] and resent["new"]
    time.sleep(2 * SETTLE_S)  # a replayed file and a tail are new files: the loader takes them once settled
    _load(root, redis_client, h)  # the replayed file and tail, the limit back at its default
    h.run(sink_everything)

    sunk = Counter(item["id"] for item in h.sunk_items())
    assert sunk == expected, {
        "lost": sorted(set(expected) - set(sunk))[:5],
        "duplicated": sorted(i for i, n in sunk.items() if n > 1)[:5],
        "unexpected": sorted(set(sunk) - set(expected))[:5],
    }
    assert h.drain(h.dlq_url) == []
    assert (root / "processed" / halted).is_dir() and not (root / "halted" / halted).exists()
