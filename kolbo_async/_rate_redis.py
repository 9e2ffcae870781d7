"""A rate budget shared by processes on any number of machines through Redis.

Each admission is one run of our own Lua script, atomic on the server: per bucket a sorted
set of admission times (pruned, counted, and added to in every bucket or in none) and a
cooldown key, all timed by the server's ``TIME``, so the clocks of the machines never meet.
The keys are named by a hash of the API key and share one hash tag (``{...}``), so a Redis
Cluster keeps a budget in one slot.

redis-py's blocking client is used (from a worker thread): its async client runs on asyncio
only, and the SDK runs on trio too.

A Redis that restarts without persistence forgets the windows. Each budget carries an
*epoch* (when the server first saw it); a process that finds the epoch changed since its
last call knows the server forgot what was admitted before, and holds every bucket of the
budget until one window after the new epoch began, so nothing forgotten can be exceeded.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._rate_store import Buckets, StoreUnavailable, redact_store

__all__ = ["RedisStore"]

#: Seconds to connect, and to wait for an answer, before a call counts as unavailable.
SOCKET_TIMEOUT = 1.0

# KEYS[1]: the budget's meta hash (epoch, seq); per bucket i: KEYS[2i] its events (a sorted
# set of admission times in µs), KEYS[2i+1] its cooldown (µs when it ends).
# ARGV[1]: "admit" or "cool"; ARGV[2]: window (µs); ARGV[3]: the epoch the caller last saw.
# admit: ARGV[3+i]: bucket i's limit.  -> {0 (admitted into every bucket) or µs to wait, epoch}
# cool: one bucket; ARGV[4]: Retry-After in µs or "".  -> {µs of cooldown, epoch}
# Numbers go to Redis through num(): Lua would print 16-digit µs with 14 significant digits.
_SCRIPT = """
local function num(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local n = (#KEYS - 1) / 2
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = num(now)
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
if ARGV[3] ~= '' and ARGV[3] ~= epoch then
  local hold = tonumber(epoch) + window
  if hold > now then
    for i = 1, n do
      local cool = KEYS[2 * i + 1]
      if hold > tonumber(redis.call('GET', cool) or '0') then
        redis.call('SET', cool, num(hold), 'PX', num(math.ceil((hold - now) / 1000) + 1000))
      end
    end
  end
end
if ARGV[1] == 'cool' then
  local events, cool = KEYS[2], KEYS[3]
  redis.call('ZREMRANGEBYSCORE', events, '-inf', num(now - window))
  local seconds = tonumber(ARGV[4])
  if not seconds then
    seconds = 1000000
    local oldest = redis.call('ZRANGE', events, 0, 0, 'WITHSCORES')
    if oldest[2] then seconds = math.max(seconds, tonumber(oldest[2]) + window - now) end
  end
  if now + seconds > tonumber(redis.call('GET', cool) or '0') then
    redis.call('SET', cool, num(now + seconds), 'PX', num(math.ceil(seconds / 1000) + 1000))
  end
  return {math.ceil(seconds), epoch}
end
local wait = 0
for i = 1, n do
  local events, cool, limit = KEYS[2 * i], KEYS[2 * i + 1], tonumber(ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', events, '-inf', num(now - window))
  local held = tonumber(redis.call('GET', cool) or '0') - now
  if held > wait then wait = held end
  local count = redis.call('ZCARD', events)
  if count >= limit then
    local nth = redis.call('ZRANGE', events, count - limit, count - limit, 'WITHSCORES')
    local free = tonumber(nth[2]) + window - now
    if free > wait then wait = free end
  end
end
if wait > 0 then return {math.ceil(wait), epoch} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i], num(now), num(now) .. ':' .. num(seq))
  redis.call('PEXPIRE', KEYS[2 * i], num(math.ceil(window / 1000) + 1000))
end
return {0, epoch}
"""


class RedisStore:
    """`RateStore` on a Redis server (``redis://HOST:PORT/DB`` or ``rediss://``)."""

    blocking = True

    def __init__(self, url: str) -> None:
        self.name = str(redact_store(url))
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=SOCKET_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            # One retry on a fresh connection (a pooled one dies when the server restarts);
            # beyond that the pacer's own backoff, with its warning, takes over.
            retry=Retry(NoBackoff(), 1),
        )
        self._script = self._client.register_script(_SCRIPT)
        self._epochs: dict[str, str] = {}
        self._lock = threading.Lock()

    def _run(self, budget: str, buckets: list[str], args: list[Any]) -> int:
        prefix = f"kolbo:rate:{{{budget}}}:"
        keys = [prefix + "meta"]
        for bucket in buckets:
            keys += [prefix + bucket, prefix + bucket + ":cool"]
        with self._lock:
            seen = self._epochs.get(budget, "")
        try:
            micros, epoch = self._script(keys=keys, args=[args[0], args[1], seen, *args[2:]])
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            self._epochs[budget] = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        return int(micros)

    def admit(self, budget: str, buckets: Buckets, window: float) -> float:
        limits = [limit for _, limit in buckets]
        micros = self._run(budget, [name for name, _ in buckets], ["admit", _us(window), *limits])
        return micros / 1e6

    def cool_down(
        self, budget: str, bucket: str, window: float, retry_after: float | None
    ) -> float:
        after = "" if retry_after is None else _us(retry_after)
        return self._run(budget, [bucket], ["cool", _us(window), after]) / 1e6

    def close(self) -> None:
        self._client.close()


def _us(seconds: float) -> int:
    return round(seconds * 1e6)
