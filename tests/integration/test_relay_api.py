"""What an API answer means (pure), and the breaker/budget state in a real redis-server."""

from __future__ import annotations

import email.utils

import pytest
import redis

from runtime.relay.api import ApiResponse, Verdict, parse_retry_after
from runtime.relay.breaker import BREAKER_KEY, Admission, BreakerPolicy, CallBudget, CircuitBreaker


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (400, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (413, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (401, Verdict.RETRY),  # our key, not the message
        (403, Verdict.RETRY),
        (408, Verdict.RETRY),
        (409, Verdict.RETRY),  # an idempotent API may say "this key is in progress"
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (300, Verdict.RETRY),  # not a 2xx: never deleted as delivered
        (302, Verdict.RETRY),  # redirects are not followed: a misconfiguration, not bad data
        (None, Verdict.RETRY),  # no answer: timeout or refused connection
    ],
)
def test_verdicts(status: int | None, verdict: Verdict) -> None:
    assert ApiResponse(status=status).verdict is verdict


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    now = 1_800_000_000.0
    in_90_s = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(in_90_s, now=now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_the_breaker_opens_at_the_threshold_doubles_to_the_cap_and_closes_on_success(
    redis_client: redis.Redis,
) -> None:
    breaker = CircuitBreaker(
        redis_client, BreakerPolicy(failure_threshold=2, backoff_base_s=10, backoff_cap_s=900)
    )
    assert breaker.admit(probe_lease_s=5) is Admission.CLOSED
    assert breaker.record_failure() is None  # one failure: still closed
    assert breaker.record_failure() == 10  # the threshold: open for the base backoff
    assert breaker.admit(probe_lease_s=5) is Admission.OPEN
    waits = []
    for _ in range(8):
        redis_client.hset(BREAKER_KEY, "open_until", "0")  # the probe is due
        assert breaker.admit(probe_lease_s=5) is Admission.PROBE
        assert breaker.admit(probe_lease_s=5) is Admission.OPEN  # one probe at a time
        waits.append(breaker.record_failure())
    assert waits == [20, 40, 80, 160, 320, 640, 900, 900]  # capped at 15 minutes
    breaker.record_success()
    assert breaker.admit(probe_lease_s=5) is Admission.CLOSED


def test_a_429_opens_the_breaker_at_once_for_retry_after_within_the_cap(redis_client: redis.Redis) -> None:
    breaker = CircuitBreaker(
        redis_client, BreakerPolicy(failure_threshold=5, backoff_base_s=1, backoff_cap_s=900)
    )
    assert breaker.record_failure(retry_after_s=30) == 30
    redis_client.delete(BREAKER_KEY)
    assert breaker.record_failure(retry_after_s=7200) == 900


def test_losing_redis_closes_the_breaker(redis_client: redis.Redis) -> None:
    breaker = CircuitBreaker(
        redis_client, BreakerPolicy(failure_threshold=1, backoff_base_s=60, backoff_cap_s=900)
    )
    breaker.record_failure()
    assert breaker.admit(probe_lease_s=5) is Admission.OPEN
    redis_client.flushall()  # an empty restart
    assert breaker.admit(probe_lease_s=5) is Admission.CLOSED  # costs calls, never a message


def test_the_token_bucket_is_shared_spaces_calls_and_reserves_nothing_it_refuses(
    redis_client: redis.Redis,
) -> None:
    first, second = CallBudget(redis_client, 60, burst=2), CallBudget(redis_client, 60, burst=2)
    assert first.reserve(max_wait_s=0) == 0 and second.reserve(max_wait_s=0) == 0  # the burst
    assert first.reserve(max_wait_s=0.5) is None  # the next token is ~1 s away: refused...
    wait = second.reserve(max_wait_s=5)  # ...and not reserved: the next caller gets it
    assert wait is not None and 0.5 < wait <= 1.0
    later = first.reserve(max_wait_s=5)  # one interval (1 s) after that
    assert later is not None and 1.5 < later <= 2.0
