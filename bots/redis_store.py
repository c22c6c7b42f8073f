"""The bots' shared state in Redis: the per-user rate limit and the chat state, across replicas.

Why: several bot processes (webhook replicas, Discord shards in separate pods) must count a user's
requests together, or each lets the user through `rate` times. The sliding window is one Lua script
on a sorted set, so check-and-add is atomic however many replicas ask at once, and it uses Redis's
own clock, so replicas whose clocks disagree still share one window.

When Redis cannot be reached, the bots keep serving: each replica falls back to its own in-memory
window (and chat state) and logs that once, then logs once more when Redis is back. Falling back
rather than failing closed means a Redis outage costs no user an answer; the cost is that, for the
outage, a user may get up to `rate` answers per replica instead of `rate` in all, which the digits
server's own overload protection (the BUSY answer) bounds anyway. Failing open with no limit at all
would drop the protection entirely, so the local window is the middle ground.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis.asyncio as redis
from redis.exceptions import RedisError

from bots.chatstate import MemoryChatState
from bots.ratelimit import InMemoryRateLimiter

log = logging.getLogger(__name__)

PREFIX = "digits:"
RETRY_AFTER_FAILURE = 5.0  # seconds: while Redis is down, try it again at most this often

# KEYS[1]: the user's sorted set; ARGV: window (microseconds), rate, a unique member.
# Returns 0 when the request is allowed (and counted), else the microseconds until it would be.
SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= rate then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, window - (now - tonumber(oldest[2])))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return 0
"""

_FAILURES = (RedisError, OSError, TimeoutError)


def connect(url: str, *, timeout: float = 0.5) -> redis.Redis:
    """A client for `url` with short timeouts: a slow Redis must not hold a reply for long."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                health_check_interval=30)


class RedisHealth:
    """Tracks whether Redis answers; logs once when it stops and once when it is back."""

    def __init__(self, what: str, *, retry_after: float = RETRY_AFTER_FAILURE, clock=time.monotonic) -> None:
        self.what = what
        self.retry_after = retry_after
        self.down_since: float | None = None
        self._clock = clock

    def usable(self) -> bool:
        """False while Redis failed less than `retry_after` seconds ago (spare it, and the user, the wait)."""
        return self.down_since is None or self._clock() - self.down_since >= self.retry_after

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            log.warning("Redis unreachable (%s); %s falls back to this process until it is back: %r",
                        type(exc).__name__, self.what, exc)
        self.down_since = self._clock()

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning("Redis is back; %s is shared across replicas again", self.what)
            self.down_since = None


class RedisRateLimiter:
    """The RateLimiter interface over Redis: one window per key shared by every replica."""

    def __init__(self, client: redis.Redis, rate: int, per_seconds: float, *, prefix: str = PREFIX) -> None:
        if rate < 1 or per_seconds <= 0:
            raise ValueError(f"rate must be >= 1 and per_seconds > 0, got {rate}, {per_seconds}")
        self.rate = rate
        self.per_seconds = per_seconds
        self._client = client
        self._prefix = f"{prefix}ratelimit:"
        self._script = client.register_script(SLIDING_WINDOW)
        self._window_us = max(1, round(per_seconds * 1_000_000))
        self.fallback = InMemoryRateLimiter(rate, per_seconds)
        self.health = RedisHealth("the per-user rate limit")

    async def check(self, key: str) -> float:
        if self.health.usable():
            try:
                wait_us = await self._script(keys=[self._prefix + key],
                                             args=[self._window_us, self.rate, uuid.uuid4().hex])
            except _FAILURES as exc:
                self.health.failed(exc)
            else:
                self.health.ok()
                return int(wait_us) / 1_000_000
        return await self.fallback.check(key)

    async def close(self) -> None:
        await self._client.aclose()


class RedisChatState:
    """The ChatState interface over Redis (flags as keys, `first_in` as SET NX PX)."""

    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX) -> None:
        self._client = client
        self._prefix = f"{prefix}chat:"
        self.fallback = MemoryChatState()
        self.health = RedisHealth("the chat state (/seen, flood notices)")

    async def get_flag(self, key: str) -> bool:
        if self.health.usable():
            try:
                value = await self._client.exists(self._prefix + "flag:" + key)
            except _FAILURES as exc:
                self.health.failed(exc)
            else:
                self.health.ok()
                return bool(value)
        return await self.fallback.get_flag(key)

    async def set_flag(self, key: str, value: bool) -> None:
        await self.fallback.set_flag(key, value)
        if not self.health.usable():
            return
        name = self._prefix + "flag:" + key
        try:
            if value:
                await self._client.set(name, 1)
            else:
                await self._client.delete(name)
        except _FAILURES as exc:
            self.health.failed(exc)
        else:
            self.health.ok()

    async def first_in(self, key: str, seconds: float) -> bool:
        if self.health.usable():
            try:
                first = await self._client.set(self._prefix + "once:" + key, 1, nx=True,
                                               px=max(1, round(seconds * 1000)))
            except _FAILURES as exc:
                self.health.failed(exc)
            else:
                self.health.ok()
                return bool(first)
        return await self.fallback.first_in(key, seconds)

    async def close(self) -> None:
        await self._client.aclose()
