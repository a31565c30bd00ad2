"""Redis coordination for ingest: leases, acknowledgments, run counts, the seed's sets.

Redis only coordinates (docs/architecture.md#where-state-lives): losing all of it costs re-sent parts
under their own ids, never a lost record. Every write a loader makes is one Lua script that
first checks the caller's owner token and the lease deadline against Redis `TIME` (the
fence); renewal never re-creates a lease that is gone. All keys share the `{sluice:ingest}`
hash tag so every script runs on a cluster.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import redis

from runtime.errors import LeaseLost

TAG = "{sluice:ingest}"
PROCESSING = f"{TAG}:json_files_processing"  # batch -> lease deadline (Redis time, seconds)
PROCESSED = f"{TAG}:json_files_processed"  # batch -> commit time
RESUMABLE = f"{TAG}:resumable"  # batch -> when it may be resumed (later after a failure: backoff)
HALTED = f"{TAG}:halted"  # batch -> when it was halted
OWNERS = f"{TAG}:owners"  # batch -> owner token
RUNS = f"{TAG}:runs"  # batch -> runs started minus runs released uncharged (out of time, transient)
CURSORS = f"{TAG}:cursors"  # batch -> header index of the file a crash-isolation run is on
ACKS_PREFIX = f"{TAG}:acks:"  # + batch -> set of acknowledged part numbers

_KEYS = [PROCESSING, PROCESSED, RESUMABLE, HALTED, OWNERS, RUNS, CURSORS]

# Shared prologue: KEYS as above (+ the batch's ack set), ARGV[1] batch, ARGV[2] token.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
_FENCE = (
    _NOW
    + """
local batch, token = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[5], batch) ~= token then return -1 end
local deadline = tonumber(redis.call('ZSCORE', KEYS[1], batch))
if deadline == nil or deadline <= now then return -1 end
"""
)
_RENEW = "redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), batch)\n"

_CLAIM = (
    _NOW
    + """
local batch, token, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('ZADD', KEYS[1], 'NX', now + lease, batch) == 0 then return -1 end
redis.call('HSET', KEYS[5], batch, token)
redis.call('HSET', KEYS[6], batch, 1)
return tostring(now)
"""
)

# Take the oldest resumable batch that nobody holds a live lease on.
_TAKE_RESUMABLE = (
    _NOW
    + """
local token, lease = ARGV[1], tonumber(ARGV[2])
local wanted = ARGV[3]
local candidates
if wanted ~= '' then
  if redis.call('ZSCORE', KEYS[3], wanted) == false then return false end
  candidates = {wanted}
else
  candidates = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 50)
end
for _, batch in ipairs(candidates) do
  redis.call('ZREM', KEYS[3], batch)
  local deadline = tonumber(redis.call('ZSCORE', KEYS[1], batch))
  if deadline == nil or deadline <= now then
    redis.call('ZADD', KEYS[1], now + lease, batch)
    redis.call('HSET', KEYS[5], batch, token)
    local runs = redis.call('HINCRBY', KEYS[6], batch, 1)
    local cursor = redis.call('HGET', KEYS[7], batch)
    return {batch, runs, cursor or ''}
  end
end
return false
"""
)

_RENEW_SCRIPT = _FENCE + _RENEW + "return 1\n"

_ACK = (
    _FENCE
    + _RENEW
    + """
for i = 4, #ARGV do redis.call('SADD', KEYS[8], ARGV[i]) end
return 1
"""
)

_SET_CURSOR = _FENCE + _RENEW + "redis.call('HSET', KEYS[7], batch, ARGV[4])\nreturn 1\n"

_FORGET = """
redis.call('ZREM', KEYS[1], batch)
redis.call('ZREM', KEYS[3], batch)
redis.call('HDEL', KEYS[5], batch)
redis.call('HDEL', KEYS[6], batch)
redis.call('HDEL', KEYS[7], batch)
redis.call('DEL', KEYS[8])
"""

_COMMIT = _FENCE + _FORGET + "redis.call('ZADD', KEYS[2], now, batch)\nreturn 1\n"
_HALT = _FENCE + _FORGET + "redis.call('ZADD', KEYS[4], now, batch)\nreturn 1\n"
_DROP = _FENCE + _FORGET + "return 1\n"

# Handing a batch back: no lease, no owner, no crash-isolation cursor.
_HAND_BACK = """
redis.call('ZREM', KEYS[1], batch)
redis.call('HDEL', KEYS[5], batch)
redis.call('HDEL', KEYS[7], batch)
"""

# A run that stops at its deadline hands the batch straight back (it did not die).
_RELEASE = (
    _FENCE
    + _HAND_BACK
    + """
if tonumber(redis.call('HGET', KEYS[6], batch) or '0') > 0 then redis.call('HINCRBY', KEYS[6], batch, -1) end
redis.call('ZADD', KEYS[3], 'NX', now, batch)
return 1
"""
)

# A run that failed non-transiently hands the batch back charged (its run counts) and not
# before `ARGV[3]` seconds: the loader claims new files meanwhile.
_FAIL = (
    _FENCE
    + _HAND_BACK
    + """
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), batch)
return 1
"""
)

# The checker: expired leases become resumable (their owners' fences fail from now on).
_REQUEUE_EXPIRED = (
    _NOW
    + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, batch in ipairs(expired) do
  redis.call('ZREM', KEYS[1], batch)
  redis.call('HDEL', KEYS[5], batch)
  redis.call('ZADD', KEYS[3], 'NX', now, batch)
end
return expired
"""
)

_MAKE_RESUMABLE = _NOW + "return redis.call('ZADD', KEYS[3], 'NX', now, ARGV[1])\n"


@dataclass(frozen=True)
class Taken:
    """A batch taken over from `resumable`: which run this is and a crash-isolation cursor."""

    batch: str
    runs: int
    cursor: int | None


def new_owner_token() -> str:
    return secrets.token_hex(16)


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Coordinator:
    """The ingest Redis protocol. Methods that write under a lease raise LeaseLost when the
    fence fails; nothing is written in that case."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        register = client.register_script
        self._claim = register(_CLAIM)
        self._take = register(_TAKE_RESUMABLE)
        self._renew = register(_RENEW_SCRIPT)
        self._ack = register(_ACK)
        self._cursor = register(_SET_CURSOR)
        self._commit = register(_COMMIT)
        self._halt = register(_HALT)
        self._drop = register(_DROP)
        self._release = register(_RELEASE)
        self._fail = register(_FAIL)
        self._requeue = register(_REQUEUE_EXPIRED)
        self._make_resumable = register(_MAKE_RESUMABLE)

    @staticmethod
    def _keys(batch: str = "") -> list[str]:
        return [*_KEYS, ACKS_PREFIX + batch]

    def _fenced(self, script: Any, batch: str, token: str, *args: Any) -> None:
        if script(keys=self._keys(batch), args=[batch, token, *args]) == -1:
            raise LeaseLost(f"batch {batch}: lease lost or owned by another loader")

    # --- leases ----------------------------------------------------------------------------
    def claim(self, batch: str, token: str, lease_s: float) -> float:
        """Lease a new batch; returns Redis time (seconds)."""
        result = self._claim(keys=self._keys(batch), args=[batch, token, lease_s])
        if result == -1:
            raise LeaseLost(f"batch {batch} is already leased")
        return float(_decode(result))

    def take_resumable(self, token: str, lease_s: float, batch: str = "") -> Taken | None:
        result = self._take(keys=self._keys(), args=[token, lease_s, batch])
        if not result:
            return None
        cursor = _decode(result[2])
        return Taken(batch=_decode(result[0]), runs=int(result[1]), cursor=int(cursor) if cursor else None)

    def renew(self, batch: str, token: str, lease_s: float) -> None:
        """The fenced check: still ours and unexpired (and extended)."""
        self._fenced(self._renew, batch, token, lease_s)

    def ack(self, batch: str, token: str, lease_s: float, parts: list[int]) -> None:
        self._fenced(self._ack, batch, token, lease_s, *parts)

    def set_cursor(self, batch: str, token: str, lease_s: float, file_index: int) -> None:
        self._fenced(self._cursor, batch, token, lease_s, file_index)

    def commit(self, batch: str, token: str) -> None:
        self._fenced(self._commit, batch, token)

    def halt(self, batch: str, token: str) -> None:
        self._fenced(self._halt, batch, token)

    def drop(self, batch: str, token: str) -> None:
        """Forget a batch that EFS no longer has in claimed/ (finished elsewhere)."""
        self._fenced(self._drop, batch, token)

    def release(self, batch: str, token: str) -> None:
        """Hand the batch back uncharged (out of time, a transient or environment failure)."""
        self._fenced(self._release, batch, token)

    def fail(self, batch: str, token: str, backoff_s: float) -> None:
        """Hand the batch back charged with this run, resumable after `backoff_s`."""
        self._fenced(self._fail, batch, token, backoff_s)

    # --- reads and the checker ---------------------------------------------------------------
    def acked(self, batch: str) -> set[int]:
        return {int(m) for m in self.redis.smembers(ACKS_PREFIX + batch)}

    def requeue_expired(self, limit: int = 1000) -> list[str]:
        return [_decode(b) for b in self._requeue(keys=self._keys(), args=[limit])]

    def make_resumable(self, batch: str) -> bool:
        return bool(self._make_resumable(keys=self._keys(), args=[batch]))

    def known(self, batches: list[str]) -> set[str]:
        """Which of `batches` Redis has in processing, resumable or processed."""
        if not batches:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for batch in batches:
            pipe.zscore(PROCESSING, batch)
            pipe.zscore(RESUMABLE, batch)
            pipe.zscore(PROCESSED, batch)
        scores = pipe.execute()
        return {b for i, b in enumerate(batches) if any(s is not None for s in scores[3 * i : 3 * i + 3])}

    def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for key in (PROCESSING, RESUMABLE, HALTED):
            pipe.zcard(key)
        in_flight, resumable, halted = pipe.execute()
        return {"in_flight": in_flight, "resumable": resumable, "halted": halted}
