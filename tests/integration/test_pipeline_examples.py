"""The example routers, end to end through the router pipeline (in-process moto, real Redis)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import orjson
import pytest
import redis
from moto import mock_aws

from local.servers import RedisServer
from runtime.codec import ATTR_REASON
from runtime.examples import enrich
from runtime.examples.stock_image import Greymap, StockImageRouter, decode_pgm, thumbnail
from tests.support.aws import mock_client
from tests.support.pipeline import BUCKET, Harness, envelope


@pytest.fixture
def harness(redis_client: redis.Redis, redis_server: RedisServer) -> Iterator[Harness]:
    with mock_aws():
        yield Harness.create(mock_client, redis_client, redis_server.url)


def gradient(width: int, height: int) -> Greymap:
    return Greymap(width, height, bytes((x + y) % 256 for y in range(height) for x in range(width)))


def test_thumbnail_keeps_aspect_and_samples_the_source() -> None:
    image = gradient(640, 480)
    small = thumbnail(image, 100)
    assert (small.width, small.height) == (100, 75)
    assert small.pixels[0] == image.pixels[0]
    assert small.pixels[-1] == image.pixels[int(74 * 6.4) * 640 + int(99 * 6.4)]
    assert decode_pgm(small.encode()) == small
    assert thumbnail(gradient(50, 20), 100) == gradient(50, 20)  # never enlarged


def test_stock_image_machine_against_s3_objects(harness: Harness) -> None:
    h = harness
    source = gradient(640, 480).encode()
    h.s3.put_object(Bucket=BUCKET, Key="stock/source/A17.pgm", Body=source)
    h.send(envelope("stock-1", [{"stock_no": "A17"}]))
    router = StockImageRouter(h.s3, BUCKET)
    h.run(router)

    [item] = h.sunk_items()
    state = item["state"]
    assert state["has_raw"]["sha256"] == hashlib.sha256(source).hexdigest()
    assert (state["size_100"]["width"], state["size_100"]["height"]) == (100, 75)
    assert (state["size_200"]["width"], state["size_200"]["height"]) == (200, 150)
    for size in (100, 200):
        stored = h.s3.get_object(Bucket=BUCKET, Key=f"stock/thumbs/{size}/A17.pgm")["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == state[f"size_{size}"]["sha256"]
    steps = [step for r in h.results for (step, _status) in r.steps]
    assert steps == ["with_raw", "with_size_100", "with_size_200", "done"]


def test_stock_image_that_is_not_an_image_is_poisoned_with_its_reason(harness: Harness) -> None:
    h = harness
    h.s3.put_object(Bucket=BUCKET, Key="stock/source/B2.pgm", Body=b"GIF89a...")
    h.send(envelope("stock-2", [{"stock_no": "B2"}]))
    h.run(StockImageRouter(h.s3, BUCKET))
    [dead] = h.drain(h.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "not_an_image"


def test_enrich_and_store_adds_derived_fields_then_stores(harness: Harness) -> None:
    h = harness
    records = [{"id": i, "name": f"n{i}"} for i in range(20)] + ["not a record"]
    h.send(envelope("batch-7/0", records, prefix="2026-01-01T00.json"))
    h.run(enrich.router)

    sunk = h.sunk_items()
    assert len(sunk) == 20 and len(h.sink_objects()) == 1  # one object per envelope
    for item in sunk:
        record = {k: v for k, v in item["state"].items() if k != enrich.ENRICHED}
        digest = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
        assert item["state"][enrich.ENRICHED] == {"sha256": digest, "fields": 2, "keys": ["id", "name"]}
    [dead] = h.drain(h.dlq_url)
    assert dead["MessageAttributes"][ATTR_REASON]["StringValue"] == "not_a_record"
