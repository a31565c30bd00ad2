"""Coordination state of the drain in Redis, under the `{sluice:relay}` hash tag: the circuit
breaker, the calls-per-minute token bucket and each message's count of API attempts. Every
clock reading is Redis `TIME`, so concurrent drains agree on it.

Neither is a ledger. Losing the breaker closes it: the next run receives normally and re-opens it
after `failure_threshold` failed calls (a run stops as soon as it opens). Losing the token
bucket allows one burst more; a 429 then re-opens the breaker. Losing an attempt count allows
more attempts, never past the message's `max_age_s`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "{sluice:relay}"
BREAKER_KEY = f"{KEY_PREFIX}:breaker"
PROBE_KEY = f"{KEY_PREFIX}:probe"
SWEEP_KEY = f"{KEY_PREFIX}:sweep"
RATE_KEY = f"{KEY_PREFIX}:rate"
ATTEMPTS_KEY_PREFIX = f"{KEY_PREFIX}:attempts:"

# KEYS: breaker. ARGV: threshold, base_s, cap_s, retry_after_s (-1: none).
# Counts a consecutive failure; opens (or, after a failed probe, re-opens) the breaker with a
# doubled backoff, never over the cap, and never sooner than Retry-After allows (up to the cap).
# Returns the seconds until the next probe, or -1 when the breaker stays closed.
_RECORD_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local backoff = tonumber(redis.call('HGET', KEYS[1], 'backoff_s') or '0')
local threshold, base, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local retry_after = tonumber(ARGV[4])
if failures < threshold and retry_after < 0 and backoff == 0 then
  return '-1'
end
if backoff == 0 then backoff = base else backoff = math.min(cap, backoff * 2) end
local wait = math.min(cap, math.max(backoff, retry_after))
local now = redis.call('TIME')
local open_until = tonumber(now[1]) + tonumber(now[2]) / 1000000 + wait
redis.call('HSET', KEYS[1], 'backoff_s', tostring(backoff), 'open_until', tostring(open_until))
return tostring(wait)
"""

# KEYS: breaker, probe. ARGV: probe lease in ms. Returns 'closed', 'open' or 'probe'.
_ADMIT = """
local open_until = redis.call('HGET', KEYS[1], 'open_until')
if not open_until then return 'closed' end
local now = redis.call('TIME')
if tonumber(now[1]) + tonumber(now[2]) / 1000000 < tonumber(open_until) then return 'open' end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 'probe' end
return 'open'
"""

# KEYS: the rate limit's key. ARGV: interval_s (one call per), burst (calls back to back),
# max_wait_s. A token bucket kept as its theoretical arrival time (GCRA): a call may start at
# `tat - (burst - 1) * interval`; reserving it moves `tat` one interval on. Returns the seconds
# the caller must wait before its call (0: now), or -1 when that is past max_wait_s (nothing
# reserved).
_RESERVE_CALL = """
local interval, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < t then tat = t end
local wait = tat - (burst - 1) * interval - t
if wait < 0 then wait = 0 end
if wait > max_wait then return '-1' end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - t) * 1000) + 1000)
return string.format('%.6f', wait)
"""


class Admission(enum.Enum):
    CLOSED = "closed"  # receive normally
    OPEN = "open"  # outage: do not receive at all
    PROBE = "probe"  # this run alone tries one message


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int
    backoff_base_s: float
    backoff_cap_s: float


class CircuitBreaker:
    def __init__(self, redis_client: Any, policy: BreakerPolicy) -> None:
        self._redis = redis_client
        self._policy = policy
        self._admit = redis_client.register_script(_ADMIT)
        self._record_failure = redis_client.register_script(_RECORD_FAILURE)

    def admit(self, probe_lease_s: float) -> Admission:
        """Whether this run may receive; at most one run at a time gets the probe."""
        answer = self._admit(keys=[BREAKER_KEY, PROBE_KEY], args=[max(1, int(probe_lease_s * 1000))])
        return Admission(answer.decode() if isinstance(answer, bytes) else answer)

    def record_failure(self, retry_after_s: float | None = None) -> float | None:
        """Count a retryable failure; the seconds until the next probe if the breaker is open."""
        policy = self._policy
        wait = self._record_failure(
            keys=[BREAKER_KEY],
            args=[
                policy.failure_threshold,
                policy.backoff_base_s,
                policy.backoff_cap_s,
                -1 if retry_after_s is None else retry_after_s,
            ],
        )
        seconds = float(wait)
        self._redis.delete(PROBE_KEY)
        return None if seconds < 0 else seconds

    def record_success(self) -> None:
        """The API answered: close the breaker and forget the failure streak."""
        self._redis.delete(BREAKER_KEY, PROBE_KEY)

    def is_open(self) -> bool:
        return bool(self._redis.hexists(BREAKER_KEY, "open_until"))

    def sweep_due(self, interval_s: int) -> bool:
        """While the breaker is open: whether this run is the one (of every `interval_s`) that
        looks for messages too old to wait any longer."""
        return bool(self._redis.set(SWEEP_KEY, "1", nx=True, ex=interval_s))


class CallBudget:
    """A token bucket shared by every drain: `calls_per_minute` calls, evenly spaced, with at
    most `burst` back to back. A caller reserves its call's start, then waits for it."""

    def __init__(self, redis_client: Any, calls_per_minute: int, burst: int = 1) -> None:
        self._interval_s = 60.0 / calls_per_minute
        self._burst = burst
        self._reserve = redis_client.register_script(_RESERVE_CALL)

    def reserve(self, max_wait_s: float) -> float | None:
        """Reserve the next call: the seconds to wait before making it, or None when it could
        not start within `max_wait_s` (nothing is reserved then)."""
        wait = float(
            self._reserve(keys=[RATE_KEY], args=[self._interval_s, self._burst, max(0.0, max_wait_s)])
        )
        return None if wait < 0 else wait


class AttemptCounter:
    """API attempts per relay message (by event id), kept for `ttl_s` (the message's max age)."""

    def __init__(self, redis_client: Any, ttl_s: int) -> None:
        self._redis = redis_client
        self._ttl_s = ttl_s

    def count_failure(self, event_id: str) -> int:
        """One more failed attempt; the number so far."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(f"{ATTEMPTS_KEY_PREFIX}{event_id}")
        pipe.expire(f"{ATTEMPTS_KEY_PREFIX}{event_id}", self._ttl_s)
        count, _ = pipe.execute()
        return int(count)

    def forget(self, event_id: str) -> None:
        self._redis.delete(f"{ATTEMPTS_KEY_PREFIX}{event_id}")
