"""The drain function's core: take the oldest FIFO messages, call the API once per message,
delete only after a 2xx, keep per-group order, and stay inside the API's rate limit, the
function's deadline and the circuit breaker.

Per message, in group order:

1. a delivery record exists (ledger) -> delete, no call (a redelivery after a crash);
2. older than `max_age_s` -> to the DLQ (reason `max_age`), no call;
3. reserve a call from the shared token bucket (calls spaced evenly, `calls_per_minute`) and
   wait for it, unless it could not start before the deadline: then stop the run;
4. POST the item's state with the API key and an idempotency key (the stream eventID);
5. 2xx -> create the delivery record, then delete;
   429 / 5xx / timeout / 401 / 403 / anything else unexpected -> count the attempt; at
   `max_attempts` (or past `max_age_s`) to the DLQ with the last answer, and the group goes on;
   otherwise leave it, invisible for `Retry-After` or a backoff, and stop its group: every later
   group-mate in hand is handed back untouched (visible again at once; FIFO returns none of the
   group while the failed one is in flight, and then it first); the breaker counts the failure
   and, once open, ends the run;
   any other 4xx -> to the DLQ with the response (status, body excerpt), then delete.

Nothing expires unseen: every dead letter is the drain's own, with the dead-letter
attributes (docs/bad-input.md#dead-letter-attributes) (`sluice-reason`, `-detail`,
`-source`, `-attempts`, `-status`, `-response`), and synth checks that `max_age_s`
plus the longest wait between two receives stays inside the queue's retention. A
receive long-polls (`receive_wait_s`) before the run ends on an empty answer.

The one window left: a crash after the API's 2xx and before the delivery record is written.
The message comes back and is sent again, with the same idempotency key, which is what lets the
API drop the second call.

The breaker turns an outage into one probe per backoff (doubling, capped at 15 minutes) instead
of a receive per message per tick, so hours of outage never burn the queue's `maxReceiveCount`.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from runtime import codec
from runtime.config import RelaySettings
from runtime.errors import ConfigError, EnvelopeError
from runtime.kill import kill_point
from runtime.observability import logger
from runtime.relay.api import ApiClient, ApiResponse, Verdict
from runtime.relay.breaker import Admission, AttemptCounter, CallBudget, CircuitBreaker
from runtime.relay.ledger import DeliveryLedger

RECEIVE_MAX_MESSAGES = 10
# In-flight messages stay invisible until this long past the run's own deadline (Lambda ends
# the run there), so no other drain receives a message this one may still be calling the API for.
IN_FLIGHT_MARGIN_S = 2
SQS_MAX_VISIBILITY_S = 43_200
REASON_REJECTED = "api_rejected"
REASON_INVALID = "invalid_envelope"
REASON_MAX_ATTEMPTS = "max_attempts"
REASON_MAX_AGE = "max_age"
SOURCE_SYSTEM = "relay"


class KeySource(Protocol):
    def get(self) -> str: ...

    def refresh_next_time(self) -> None: ...


@dataclass
class DrainReport:
    admission: str = Admission.CLOSED.value
    received: int = 0
    delivered: int = 0
    already_delivered: int = 0
    retried: int = 0
    rejected: int = 0
    released: int = 0
    held: int = 0
    api_calls: int = 0
    api_errors: int = 0
    breaker_opened: bool = False
    stopped: str = "empty"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Stop(Exception):
    """Ends the run early; `reason` goes into the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Outcome(enum.Enum):
    DONE = "done"  # deleted: delivered, recorded before, or dead-lettered
    RETRY = "retry"  # left invisible for a while; its group stops for this run
    RETRY_BREAKER_OPENED = "retry_breaker_opened"  # ... and the breaker opened: the run ends
    DEAD_BREAKER_OPENED = "dead_breaker_opened"  # dead-lettered, and the breaker opened: the run ends


@dataclass(frozen=True, slots=True)
class _Message:
    receipt_handle: str
    group_id: str
    receive_count: int
    body: str
    sent_at: float  # epoch seconds (SQS's SentTimestamp)

    @classmethod
    def from_sqs(cls, raw: Mapping[str, Any]) -> _Message:
        attributes = raw.get("Attributes", {})
        return cls(
            receipt_handle=raw["ReceiptHandle"],
            group_id=attributes.get("MessageGroupId", ""),
            receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
            body=raw["Body"],
            sent_at=int(attributes.get("SentTimestamp", "0")) / 1000 or time.time(),
        )

    def age_s(self) -> float:
        return time.time() - self.sent_at


REQUIRED_SETTINGS = ("fifo_url", "dlq_url", "ledger_table", "api_url", "api_key_parameter")


def check_drain_settings(settings: RelaySettings) -> RelaySettings:
    """Fail loudly, naming the variable, when the drain has nowhere to read, call or record."""
    missing = [name for name in REQUIRED_SETTINGS if not getattr(settings, name)]
    if missing:
        names = ", ".join(f"SLUICE_RELAY__{name.upper()}" for name in missing)
        raise ConfigError(f"the drain needs {names}")
    return settings


def retry_visibility_s(settings: RelaySettings, response: ApiResponse, attempts: int) -> int:
    """How long a retryable message stays invisible: the API's `Retry-After` when it gave one,
    else exponential backoff by attempts made with equal jitter, both capped."""
    cap = settings.retry_backoff_cap_s
    if response.retry_after_s is not None:
        return min(cap, SQS_MAX_VISIBILITY_S, math.ceil(response.retry_after_s))
    doublings = min(max(0, attempts - 1), 30)  # past 30 the cap has long taken over
    backoff = min(cap, settings.retry_backoff_base_s * 2**doublings)
    return min(SQS_MAX_VISIBILITY_S, math.ceil(backoff / 2 + random.uniform(0, backoff / 2)))


class Drain:
    def __init__(
        self,
        *,
        sqs: Any,
        ledger: DeliveryLedger,
        api: ApiClient,
        api_key: KeySource,
        breaker: CircuitBreaker,
        budget: CallBudget,
        settings: RelaySettings,
        attempts: AttemptCounter,
    ) -> None:
        self._sqs = sqs
        self._attempts = attempts
        self._source = f"{SOURCE_SYSTEM}/{settings.fifo_url.rsplit('/', 1)[-1]}"
        self._ledger = ledger
        self._api = api
        self._api_key = api_key
        self._breaker = breaker
        self._budget = budget
        self._settings = settings

    # -- the run ------------------------------------------------------------------------------

    def run(self, remaining_s: Callable[[], float]) -> DrainReport:
        """Drain until the queue is empty, the budget or the deadline is spent, or the breaker
        opens. `remaining_s` is the invocation's remaining time."""
        report = DrainReport()
        admission = self._breaker.admit(probe_lease_s=remaining_s())
        report.admission = admission.value
        if admission is Admission.OPEN:
            report.stopped = "breaker_open"
            if self._breaker.sweep_due(self._settings.sweep_interval_s):
                self._sweep(report, remaining_s)
            return report
        probing = admission is Admission.PROBE
        try:
            while True:
                self._require_time(remaining_s)
                wanted = 1 if probing else RECEIVE_MAX_MESSAGES
                messages = self._receive(wanted, remaining_s)
                if not messages:
                    break
                report.received += len(messages)
                self._process(messages, report, remaining_s)
                # A probe the API answered closed the breaker: drain normally from here. (One
                # answered from the ledger tested nothing: the next message is the probe.)
                probing = probing and self._breaker.is_open()
        except _Stop as stop:
            report.stopped = stop.reason
        return report

    def _sweep(self, report: DrainReport, remaining_s: Callable[[], float]) -> None:
        """The breaker is open, so nothing is received for the API: dead-letter every message
        past `max_age_s` (FIFO hands out the oldest of each group first), hand back the rest.
        Once per `sweep_interval_s`, so an outage of days cannot let a message expire unseen."""
        held: list[_Message] = []
        try:
            while remaining_s() >= self._settings.deadline_margin_s:
                messages = self._receive(RECEIVE_MAX_MESSAGES, remaining_s, wait=False)
                if not messages:
                    break
                report.received += len(messages)
                for message in messages:
                    if message.age_s() < self._settings.max_age_s:
                        held.append(message)
                        continue
                    detail = f"{message.age_s():.0f} s old, over relay.max_age_s ({self._settings.max_age_s})"
                    self._dead_letter(message, REASON_MAX_AGE, detail=detail)
                    report.rejected += 1
        finally:
            self._release(held, report)

    def _require_time(self, remaining_s: Callable[[], float]) -> None:
        if remaining_s() < self._settings.deadline_margin_s:
            raise _Stop("deadline")

    def _receive(self, wanted: int, remaining_s: Callable[[], float], *, wait: bool = True) -> list[_Message]:
        # Long polling, never past the margin: a FIFO short poll may answer empty while a
        # backlog exists, and an empty answer ends the run.
        spare_s = remaining_s() - self._settings.deadline_margin_s
        wait_s = max(0, min(self._settings.receive_wait_s, math.floor(spare_s))) if wait else 0
        visibility = min(SQS_MAX_VISIBILITY_S, math.ceil(remaining_s()) + IN_FLIGHT_MARGIN_S)
        response = self._sqs.receive_message(
            QueueUrl=self._settings.fifo_url,
            MaxNumberOfMessages=wanted,
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["MessageGroupId", "ApproximateReceiveCount", "SentTimestamp"],
        )
        return [_Message.from_sqs(raw) for raw in response.get("Messages", [])]

    def _process(
        self, messages: list[_Message], report: DrainReport, remaining_s: Callable[[], float]
    ) -> None:
        stopped_groups: set[str] = set()
        unhandled: list[_Message] = []
        try:
            for index, message in enumerate(messages):
                if message.group_id in stopped_groups:
                    unhandled.append(message)
                    report.held += 1
                    continue
                try:
                    outcome = self._handle(message, report, remaining_s)
                except _Stop:
                    unhandled.extend(messages[index:])
                    raise
                if outcome in (_Outcome.RETRY, _Outcome.RETRY_BREAKER_OPENED):
                    stopped_groups.add(message.group_id)
                if outcome in (_Outcome.RETRY_BREAKER_OPENED, _Outcome.DEAD_BREAKER_OPENED):
                    unhandled.extend(messages[index + 1 :])
                    raise _Stop("breaker_opened")
        finally:
            self._release(unhandled, report)

    def _release(self, messages: list[_Message], report: DrainReport) -> None:
        """Hand back what this run did not handle: visible again at once. A group whose message
        failed stays blocked by that message (in flight, invisible) until it comes back first."""
        for start in range(0, len(messages), RECEIVE_MAX_MESSAGES):
            chunk = messages[start : start + RECEIVE_MAX_MESSAGES]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self._settings.fifo_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )
        report.released += len(messages)

    # -- one message --------------------------------------------------------------------------

    def _handle(self, message: _Message, report: DrainReport, remaining_s: Callable[[], float]) -> _Outcome:
        """Resolve one message: done with it (deleted), or left to retry later."""
        try:
            event_id, body = self._request_of(message)
        except EnvelopeError as exc:
            self._dead_letter(message, REASON_INVALID, detail=str(exc))
            report.rejected += 1
            return _Outcome.DONE
        if self._ledger.delivered(event_id):
            self._delete(message)
            report.already_delivered += 1
            return _Outcome.DONE
        if message.age_s() >= self._settings.max_age_s:
            detail = f"{message.age_s():.0f} s old, over relay.max_age_s ({self._settings.max_age_s})"
            self._dead_letter(message, REASON_MAX_AGE, event_id=event_id, detail=detail)
            report.rejected += 1
            return _Outcome.DONE
        self._wait_for_a_call(remaining_s)
        response = self._api.post(body, api_key=self._api_key.get(), idempotency_key=event_id)
        report.api_calls += 1
        verdict = response.verdict
        if verdict is Verdict.DELIVERED:
            kill_point("relay.delivered")  # the one window: the API has it, the ledger not yet
            self._ledger.record_delivery(event_id, response.status or 0)
            kill_point("relay.recorded")
            self._delete(message)
            self._breaker.record_success()
            self._forget_attempts(event_id)
            report.delivered += 1
            return _Outcome.DONE
        if verdict is Verdict.REJECTED:
            self._dead_letter(message, REASON_REJECTED, response=response, event_id=event_id)
            self._breaker.record_success()
            report.rejected += 1
            return _Outcome.DONE
        return self._retry_later(message, response, report, event_id)

    def _wait_for_a_call(self, remaining_s: Callable[[], float]) -> None:
        """Reserve the next call from the shared token bucket and wait for it; stop the run
        when it could not start before the deadline margin."""
        self._require_time(remaining_s)
        wait_s = self._budget.reserve(max_wait_s=remaining_s() - self._settings.deadline_margin_s)
        if wait_s is None:
            raise _Stop("budget")
        if wait_s > 0:
            time.sleep(wait_s)

    def _count_attempt(self, message: _Message, event_id: str) -> int:
        """Failed API attempts so far, this one included; without Redis, the receive count."""
        try:
            return self._attempts.count_failure(event_id)
        except RedisError as exc:
            logger.warning(
                "relay attempt count unavailable", extra={"event_id": event_id, "error": repr(exc)}
            )
            return message.receive_count

    def _forget_attempts(self, event_id: str) -> None:
        with contextlib.suppress(RedisError):  # else it expires with the message's max age
            self._attempts.forget(event_id)

    def _exhausted(self, message: _Message, attempts: int) -> tuple[str, str] | None:
        """The reason code and detail when a failed message must not be retried again."""
        settings = self._settings
        if attempts >= settings.max_attempts:
            return REASON_MAX_ATTEMPTS, f"{attempts} attempts, relay.max_attempts is {settings.max_attempts}"
        age = message.age_s()
        if age >= settings.max_age_s:
            return REASON_MAX_AGE, f"{age:.0f} s old, over relay.max_age_s ({settings.max_age_s})"
        return None

    def _request_of(self, message: _Message) -> tuple[str, bytes]:
        """The idempotency key and HTTP body of a relay envelope (exactly one item)."""
        envelope = codec.decode(message.body)
        if len(envelope.items) != 1:
            raise EnvelopeError(f"a relay envelope holds one item, this one {len(envelope.items)}")
        return envelope.id, codec.dumps(envelope.items[0].state)

    def _retry_later(
        self, message: _Message, response: ApiResponse, report: DrainReport, event_id: str
    ) -> _Outcome:
        report.api_errors += 1
        if response.auth_failed:
            self._api_key.refresh_next_time()
        attempts = self._count_attempt(message, event_id)
        probe_in = self._breaker.record_failure(response.retry_after_s if response.throttled else None)
        if probe_in is not None:
            report.breaker_opened = True
        exhausted = self._exhausted(message, attempts)
        if exhausted is not None:
            reason, detail = exhausted
            self._dead_letter(
                message, reason, response=response, event_id=event_id, detail=detail, attempts=attempts
            )
            self._forget_attempts(event_id)
            report.rejected += 1
            return _Outcome.DONE if probe_in is None else _Outcome.DEAD_BREAKER_OPENED
        report.retried += 1
        visibility = retry_visibility_s(self._settings, response, attempts)
        self._set_visibility(message, visibility)
        logger.warning(
            "relay API call failed; message kept",
            extra={
                "event_id": event_id,
                "status": response.status,
                "error": response.error,
                "attempts": attempts,
                "visible_in_s": visibility,
                "breaker_probe_in_s": probe_in,
            },
        )
        return _Outcome.RETRY if probe_in is None else _Outcome.RETRY_BREAKER_OPENED

    # -- SQS ----------------------------------------------------------------------------------

    def _delete(self, message: _Message) -> None:
        self._sqs.delete_message(QueueUrl=self._settings.fifo_url, ReceiptHandle=message.receipt_handle)

    def _set_visibility(self, message: _Message, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._settings.fifo_url,
            ReceiptHandle=message.receipt_handle,
            VisibilityTimeout=seconds,
        )

    def _dead_letter(
        self,
        message: _Message,
        reason: str,
        *,
        response: ApiResponse | None = None,
        event_id: str | None = None,
        detail: str = "",
        attempts: int | None = None,
    ) -> None:
        """Move a message to the DLQ with why (the dead-letter attributes:
        docs/bad-input.md#dead-letter-attributes), then delete it. Only the drain does this: the
        queue's own redrive (maxReceiveCount) is a backstop."""
        attributes = {
            codec.ATTR_REASON: codec.string_attribute(reason),
            codec.ATTR_SOURCE: codec.string_attribute(self._source),
        }
        if detail:
            attributes[codec.ATTR_DETAIL] = codec.string_attribute(
                codec.sqs_safe_text(detail)[: codec.MAX_DETAIL_CHARS]
            )
        if attempts is not None:
            attributes[codec.ATTR_ATTEMPTS] = codec.number_attribute(attempts)
        if response is not None and response.status is not None:
            attributes[codec.ATTR_STATUS] = codec.number_attribute(response.status)
        if response is not None and response.error is not None:
            attributes[codec.ATTR_ERROR] = codec.string_attribute(response.error)
        excerpt = codec.sqs_safe_text(response.body_excerpt) if response is not None else ""
        if excerpt:
            attributes[codec.ATTR_RESPONSE] = codec.string_attribute(excerpt)
        request: dict[str, Any] = {
            "QueueUrl": self._settings.dlq_url,
            "MessageBody": message.body,
            "MessageAttributes": attributes,
        }
        if self._settings.dlq_url.endswith(".fifo"):
            request["MessageGroupId"] = message.group_id or "relay"
            request["MessageDeduplicationId"] = event_id or codec.derived_id("relay-dlq", message.body)
        self._sqs.send_message(**request)
        logger.warning(
            "relay message moved to the DLQ",
            extra={"reason": reason, "event_id": event_id, "status": response and response.status},
        )
        self._delete(message)
