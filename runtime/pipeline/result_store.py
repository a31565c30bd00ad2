"""The result store, where the sink step puts done items: one create-only object per incoming
envelope, never one per record."""

from __future__ import annotations

import time
from typing import Any, Protocol

from botocore.exceptions import ClientError

from runtime.errors import TransientError

_ALREADY_THERE = 412  # If-None-Match: * found an object: a previous run wrote these bytes
_CONCURRENT_WRITE = 409  # another conditional write to the key is in flight: try again
CONFLICT_RETRIES = 5


class ResultStore(Protocol):
    def write(self, envelope_id: str, body: bytes) -> None:
        """Store `body` under `envelope_id` exactly once; writing the same again is a no-op."""


class S3ResultStore:
    """`PutObject` with `If-None-Match: *`: the first writer wins, a re-run's write answers 412.

    The body of a key is fixed by the envelope's plan (its sha256 is recorded there), so an
    object that is already there holds exactly the bytes this run would write.
    """

    def __init__(self, s3: Any, bucket: str, *, prefix: str = "results/") -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def key(self, envelope_id: str) -> str:
        return f"{self._prefix}{envelope_id}.json"

    def write(self, envelope_id: str, body: bytes) -> None:
        for attempt in range(CONFLICT_RETRIES):
            try:
                self._s3.put_object(
                    Bucket=self._bucket,
                    Key=self.key(envelope_id),
                    Body=body,
                    IfNoneMatch="*",
                    ContentType="application/json",
                )
                return
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == _ALREADY_THERE:
                    return
                if status != _CONCURRENT_WRITE:
                    raise
            time.sleep(0.05 * (2**attempt))
        raise TransientError(f"conditional write of {self.key(envelope_id)} kept conflicting")

    def read(self, envelope_id: str) -> bytes:
        """The object written under `envelope_id`."""
        response = self._s3.get_object(Bucket=self._bucket, Key=self.key(envelope_id))
        return response["Body"].read()  # type: ignore[no-any-return]


class DiscardingResultStore:
    """Counts and drops: for benchmarks that measure the router, not the store."""

    def __init__(self) -> None:
        self.objects = 0
        self.bytes = 0

    def write(self, envelope_id: str, body: bytes) -> None:
        self.objects += 1
        self.bytes += len(body)
