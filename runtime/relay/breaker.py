"""Coordination state of the drain in Redis, under the `{sluice:relay}` hash tag: the circuit
breaker and the calls-per-minute budget. Every clock reading is Redis `TIME`, so concurrent
drains agree on it.

Neither is a ledger. Losing the breaker closes it: the next run receives normally and re-opens it
after `failure_threshold` failed calls (a run stops as soon as it opens). Losing the budget
counter allows up to one extra minute's worth of calls; a 429 then re-opens the breaker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "{sluice:relay}"
BREAKER_KEY = f"{KEY_PREFIX}:breaker"
PROBE_KEY = f"{KEY_PREFIX}:probe"
BUDGET_KEY_PREFIX = f"{KEY_PREFIX}:calls:"

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

# KEYS: this minute's counter. ARGV: limit. Takes one call: 1 if granted, 0 if spent.
_TAKE_CALL = """
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], 120) end
if used > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
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


class CallBudget:
    """At most `calls_per_minute` API calls in each minute of Redis's clock, across drains."""

    def __init__(self, redis_client: Any, calls_per_minute: int) -> None:
        self._redis = redis_client
        self._limit = calls_per_minute
        self._take = redis_client.register_script(_TAKE_CALL)

    def _window_key(self) -> str:
        seconds, _ = self._redis.time()
        return f"{BUDGET_KEY_PREFIX}{int(seconds) // 60}"

    def take(self) -> bool:
        return bool(self._take(keys=[self._window_key()], args=[self._limit]))

    def remaining(self) -> int:
        used = self._redis.get(self._window_key())
        return max(0, self._limit - int(used or 0))
