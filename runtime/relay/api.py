"""The third-party API call: one pooled urllib3 client with connect/read timeouts, no automatic
retries or redirects (the drain decides what a failure means), and the classification of what
came back.

The API key travels only in its header; nothing here logs requests or headers.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass

import urllib3

from runtime.config import RelaySettings

# Not the message's fault: the request may succeed later unchanged.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
# Our credentials, not the message: the key may have been rotated (re-read it) or revoked.
AUTH_FAILURES = frozenset({401, 403})


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # 429, 5xx, timeout, connection failure, auth failure, anything unexpected
    REJECTED = "rejected"  # any other 4xx: the API will never accept this message


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int | None  # None: no response (timeout, connection refused)
    retry_after_s: float | None = None
    body_excerpt: str = ""
    error: str | None = None

    @property
    def verdict(self) -> Verdict:
        status = self.status
        if status is None:
            return Verdict.RETRY
        if 200 <= status < 300:
            return Verdict.DELIVERED
        if 400 <= status < 500 and status not in RETRYABLE_4XX and status not in AUTH_FAILURES:
            return Verdict.REJECTED
        return Verdict.RETRY

    @property
    def auth_failed(self) -> bool:
        return self.status in AUTH_FAILURES

    @property
    def throttled(self) -> bool:
        return self.status == 429


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


class ApiClient:
    """POSTs one JSON body per call to the configured URL over a pooled connection."""

    def __init__(self, settings: RelaySettings, pool: urllib3.PoolManager | None = None) -> None:
        self._url = settings.api_url
        self._key_header = settings.api_key_header
        self._idempotency_header = settings.idempotency_header
        self._excerpt_bytes = settings.response_excerpt_bytes
        self._timeout = urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s)
        self._pool = pool or urllib3.PoolManager(num_pools=2, maxsize=4)

    def post(self, body: bytes, *, api_key: str, idempotency_key: str) -> ApiResponse:
        headers = {
            "Content-Type": "application/json",
            self._key_header: api_key,
            self._idempotency_header: idempotency_key,
        }
        try:
            response = self._pool.request(
                "POST",
                self._url,
                body=body,
                headers=headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            # Timeouts, refused connections, TLS and protocol errors: the API did not answer.
            return ApiResponse(status=None, error=type(exc).__name__)
        try:
            excerpt = response.read(self._excerpt_bytes) if self._excerpt_bytes else b""
            response.drain_conn()
        except urllib3.exceptions.HTTPError as exc:
            return ApiResponse(status=None, error=type(exc).__name__)
        finally:
            response.release_conn()
        return ApiResponse(
            status=response.status,
            retry_after_s=parse_retry_after(_header(response.headers, "Retry-After")),
            body_excerpt=excerpt.decode("utf-8", errors="replace"),
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value if isinstance(value, str) else None
