"""The original's stock-image machine, against S3 objects instead of a third-party site.

States: `{stock_no}` → `has_raw` (the raw image was fetched and checked) → `size_100` →
`size_200` (thumbnails made) → done. Images are binary PGM (`P5`) greyscale files, so a
thumbnail is a plain, deterministic nearest-neighbour resize and no image library is needed.

Objects: `<prefix>source/<stock_no>.pgm` (input) and `<prefix>thumbs/<size>/<stock_no>.pgm`
(output). Thumbnails are written create-only: the same state always makes the same bytes, so
a re-run's write answers 412 and changes nothing, which keeps the router deterministic.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from runtime.pipeline import PoisonItem, mutation

THUMBNAIL_SIZES = (100, 200)
_PGM_HEADER = re.compile(rb"^P5\s+(\d+)\s+(\d+)\s+(\d+)\s")


@dataclass(frozen=True, slots=True)
class Greymap:
    width: int
    height: int
    pixels: bytes  # one byte per pixel, row by row

    def encode(self) -> bytes:
        return b"P5\n%d %d\n255\n" % (self.width, self.height) + self.pixels


def decode_pgm(data: bytes) -> Greymap:
    match = _PGM_HEADER.match(data)
    if match is None:
        raise PoisonItem("not_an_image", "not a binary PGM (P5) file")
    width, height, maxval = (int(g) for g in match.groups())
    pixels = data[match.end() : match.end() + width * height]
    if maxval > 255 or width == 0 or height == 0 or len(pixels) != width * height:
        raise PoisonItem("not_an_image", f"bad PGM: {width}x{height}, maxval {maxval}, {len(pixels)} bytes")
    return Greymap(width, height, pixels)


def thumbnail(image: Greymap, size: int) -> Greymap:
    """Fit within `size` x `size`, aspect kept, nearest neighbour; never enlarges."""
    scale = min(1.0, size / max(image.width, image.height))
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    columns = [min(image.width - 1, int(x / scale)) for x in range(width)]
    rows = bytearray()
    for y in range(height):
        start = min(image.height - 1, int(y / scale)) * image.width
        source_row = image.pixels[start : start + image.width]
        rows.extend(source_row[x] for x in columns)
    return Greymap(width, height, bytes(rows))


def _describe(key: str, data: bytes, image: Greymap) -> dict[str, Any]:
    return {
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": image.width,
        "height": image.height,
    }


@mutation
def with_raw(state: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    state["has_raw"] = raw
    return state


def _thumbnail_mutation(size: int) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    def record(state: dict[str, Any], made: dict[str, Any]) -> dict[str, Any]:
        state[f"size_{size}"] = made
        return state

    record.__name__ = record.__qualname__ = f"with_size_{size}"
    return mutation(record)


THUMBNAIL_MUTATIONS = {size: _thumbnail_mutation(size) for size in THUMBNAIL_SIZES}


class StockImageRouter:
    """`router(state)` for the stock-image machine; S3 client and bucket injected or resolved
    from the settings (`SLUICE_PIPELINE__RESULTS_BUCKET`) on first use."""

    def __init__(self, s3: Any = None, bucket: str | None = None, *, prefix: str = "stock/") -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def _client(self) -> tuple[Any, str]:
        if self._s3 is None or self._bucket is None:
            from runtime.clients import aws_client
            from runtime.config import get_settings

            self._s3 = self._s3 or aws_client("s3")
            self._bucket = self._bucket or get_settings().require_pipeline().results_bucket
        return self._s3, self._bucket

    def __call__(self, state: dict[str, Any]) -> dict[str, Any] | None:
        stock_no = state.get("stock_no") if isinstance(state, dict) else None
        if not isinstance(stock_no, str | int):
            raise PoisonItem("no_stock_no", "a stock-image state needs a stock_no")
        if "has_raw" not in state:
            key = f"{self._prefix}source/{stock_no}.pgm"
            data = self._get(key)
            return with_raw(state, _describe(key, data, decode_pgm(data)))
        for size in THUMBNAIL_SIZES:
            if f"size_{size}" not in state:
                return THUMBNAIL_MUTATIONS[size](state, self._make_thumbnail(state, stock_no, size))
        return None

    def _make_thumbnail(self, state: dict[str, Any], stock_no: str | int, size: int) -> dict[str, Any]:
        raw = self._get(state["has_raw"]["key"])
        if hashlib.sha256(raw).hexdigest() != state["has_raw"]["sha256"]:
            raise PoisonItem("raw_changed", "the source image changed after it was fetched")
        small = thumbnail(decode_pgm(raw), size)
        data = small.encode()
        key = f"{self._prefix}thumbs/{size}/{stock_no}.pgm"
        self._put_once(key, data)
        return _describe(key, data, small)

    def _get(self, key: str) -> bytes:
        # A missing object is an ordinary failure: retried with backoff, then poisoned.
        s3, bucket = self._client()
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]

    def _put_once(self, key: str, data: bytes) -> None:
        s3, bucket = self._client()
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 412:
                raise


router = StockImageRouter()
