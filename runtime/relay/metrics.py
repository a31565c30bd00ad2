"""Metric names the drain emits and the stack alarms on (namespace `sluice`)."""

from __future__ import annotations

API_CALLS = "RelayApiCalls"
API_ERRORS = "RelayApiErrors"  # 5xx, 429, timeouts and connection failures
API_REJECTED = "RelayApiRejected"  # non-retryable 4xx, moved to the DLQ
DELIVERED = "RelayDelivered"
BREAKER_OPEN = "RelayBreakerOpen"
RELAY_SENT = "RelaySent"  # stream records put on the FIFO queue
RELAY_FAILED_RECORDS = "RelayFailedRecords"  # stream batches stopped at a record (Lambda retries it)
