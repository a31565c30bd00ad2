"""The Redis fast path: envelope leases and short-lived done markers, one key per envelope
in flight (`{sluice:router}:e:<envelope id>`), two Lua calls per batch.

A key holds either the owner token of the worker that leases the envelope (expiring after
the lease, which outlives the function timeout) or `D`, the done marker (expiring after a few
minutes). Neither is needed for correctness — the ledger is — so losing every key costs only
repeated work: a redelivery then reads the ledger instead of being skipped here. Nothing is
kept per record and nothing outlives the done-marker TTL, so Redis memory grows with work in
flight, never with the number of transitions.

**Redis down is slow, not stopped.** The client has bounded connect/read timeouts and retries
(`runtime.clients.make_redis` with the pipeline's settings); the first call that still fails
marks Redis unavailable for the rest of the invocation (`Leases.unavailable`): every envelope
counts as leased to us (the ledger keeps exactly-once), finishing is skipped, and FIFO attempt
counts fall back to the delivery's `ApproximateReceiveCount`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from redis.exceptions import RedisError

from runtime.observability import logger

T = TypeVar("T")

KEY_PREFIX = "{sluice:router}:e:"
ATTEMPTS_PREFIX = "{sluice:router}:a:"  # FIFO: failed runs per envelope (losing it only allows more)
DONE_VALUE = "D"

# Per key: -2 = done marker present, -1 = leased to us now, n >= 0 = leased elsewhere for n ms.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value == 'D' then
    out[i] = -2
  elseif (not value) or value == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = -1
  else
    out[i] = math.max(redis.call('PTTL', key), 1)
  end
end
return out
"""

# ARGV[3 + i - 1] is '1' to turn key i into a done marker, '0' to release it. Only our own
# lease (or a key that is gone, e.g. after a flush) is touched: another owner's lease stays.
_FINISH = """
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if ARGV[2 + i] == '1' then
    if (not value) or value == ARGV[1] then
      redis.call('SET', key, 'D', 'PX', ARGV[2])
    end
  elseif value == ARGV[1] then
    redis.call('DEL', key)
  end
end
return #KEYS
"""


class ClaimStatus(Enum):
    ACQUIRED = "acquired"
    DONE = "done"
    LEASED_ELSEWHERE = "leased_elsewhere"


@dataclass(frozen=True, slots=True)
class Claim:
    status: ClaimStatus
    remaining_ms: int = 0


class Leases:
    """Envelope leases for one invocation (one owner token)."""

    def __init__(self, redis_client: Any, *, lease_ms: int, done_ttl_ms: int) -> None:
        self._redis = redis_client
        self._lease_ms = lease_ms
        self._done_ttl_ms = done_ttl_ms
        self._token = uuid.uuid4().hex
        self._claim = redis_client.register_script(_CLAIM)
        self._finish = redis_client.register_script(_FINISH)
        self.unavailable = False

    def _call(self, what: str, call: Callable[[], T], fallback: T) -> T:
        """`call()` unless Redis failed earlier in this invocation; a failure (after the
        client's own bounded retries) skips Redis from here on and answers `fallback`."""
        if self.unavailable:
            return fallback
        try:
            return call()
        except RedisError as exc:
            self.unavailable = True
            logger.warning(
                "Redis unavailable: going on with the ledger alone for this invocation",
                extra={"call": what, "error": repr(exc)},
            )
            return fallback

    @staticmethod
    def key(envelope_id: str) -> str:
        return KEY_PREFIX + envelope_id

    def claim(self, envelope_ids: Sequence[str]) -> list[Claim]:
        """Lease every envelope not done and not leased elsewhere (one round trip)."""
        if not envelope_ids:
            return []
        keys = [self.key(e) for e in envelope_ids]
        raw = self._call("claim", lambda: self._claim(keys=keys, args=[self._token, self._lease_ms]), None)
        if raw is None:  # no Redis: every envelope is ours to run, the ledger decides the rest
            return [Claim(ClaimStatus.ACQUIRED)] * len(envelope_ids)
        return [_claim_of(int(value)) for value in raw]

    def finish(self, done: Sequence[str], released: Sequence[str], *, forget_attempts: bool = False) -> None:
        """Mark `done` envelopes done and release the leases of the rest (one round trip);
        `forget_attempts` also drops the FIFO attempt counts of the done envelopes."""
        if not done and not released:
            return
        keys = [self.key(e) for e in done] + [self.key(e) for e in released]
        flags = ["1"] * len(done) + ["0"] * len(released)
        pipe = self._redis.pipeline(transaction=False)
        self._finish(keys=keys, args=[self._token, self._done_ttl_ms, *flags], client=pipe)
        if forget_attempts and done:
            pipe.delete(*(ATTEMPTS_PREFIX + e for e in done))
        self._call("finish", pipe.execute, None)

    def count_attempt(self, envelope_id: str, *, ttl_ms: int, fallback: int) -> int:
        """Count one more failed run of `envelope_id` and return the count (one round trip);
        without Redis, `fallback` (the delivery's ApproximateReceiveCount)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(ATTEMPTS_PREFIX + envelope_id)
        pipe.pexpire(ATTEMPTS_PREFIX + envelope_id, ttl_ms)
        counted = self._call("count_attempt", pipe.execute, None)
        return fallback if counted is None else int(counted[0])


def _claim_of(value: int) -> Claim:
    if value == -2:
        return Claim(ClaimStatus.DONE)
    if value == -1:
        return Claim(ClaimStatus.ACQUIRED)
    return Claim(ClaimStatus.LEASED_ELSEWHERE, remaining_ms=value)
