"""The bots' shared state in Redis: the per-user rate limit, the chat state and the answers waiting
for a right/wrong tap, across replicas.

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

Pending answers are the exception: a tap handled by another replica needs the answer this one sent,
so there is no local stand-in. While Redis is down, answers go out without buttons and a tap is
answered "try again in a minute" (bots.feedback.PendingUnavailable); nothing is recorded wrongly.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis.asyncio as redis
from redis.exceptions import RedisError

from bots.chatstate import MemoryChatState
from bots.feedback import PENDING_TTL, Pending, PendingUnavailable, new_token
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

    async def get_text(self, key: str) -> str | None:
        if self.health.usable():
            try:
                value = await self._client.get(self._prefix + "text:" + key)
            except _FAILURES as exc:
                self.health.failed(exc)
            else:
                self.health.ok()
                return value.decode() if value is not None else await self.fallback.get_text(key)
        return await self.fallback.get_text(key)

    async def set_text(self, key: str, value: str, seconds: float) -> None:
        await self.fallback.set_text(key, value, seconds)  # kept here too: read back while Redis is down
        if not self.health.usable():
            return
        try:
            await self._client.set(self._prefix + "text:" + key, value, px=max(1, round(seconds * 1000)))
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


# KEYS[1]: one pending answer; ARGV[1]: the label. Sets it only if the answer still exists and has none.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'label', ARGV[1])
"""


class RedisPending:
    """bots.feedback.PendingAnswers in Redis: one hash per answer, and one set of tokens per owner (for
    /forget), both expiring PENDING_TTL (7 days) after the answer, as the SQLite store keeps them.

    "Recorded once" holds across replicas: the label is set with HSETNX (in a script that first checks the
    answer still exists), so of two taps racing through two replicas exactly one claims it."""

    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX, ttl: float = PENDING_TTL) -> None:
        self._client = client
        self._prefix = f"{prefix}pending:"
        self._owners = f"{prefix}pending-owner:"
        self._ttl_ms = max(1, round(ttl * 1000))
        self._claim = client.register_script(CLAIM)
        self.health = RedisHealth("the right/wrong buttons (pending answers)")

    async def _run(self, call):
        if not self.health.usable():
            call.close()  # never awaited: spare Redis (and the user) the wait while it is down
            raise PendingUnavailable("Redis is down")
        try:
            result = await call
        except _FAILURES as exc:
            self.health.failed(exc)
            raise PendingUnavailable(repr(exc)) from exc
        self.health.ok()
        return result

    async def add(self, owner: str, pixels: bytes, predicted: int, model_version: str, source: str) -> str:
        token = new_token()
        key = self._prefix + token
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key, mapping={"owner": owner, "pixels": pixels, "predicted": predicted,
                                "model_version": model_version, "source": source, "created": repr(time.time())})
        pipe.pexpire(key, self._ttl_ms)
        pipe.sadd(self._owners + owner, token)
        pipe.pexpire(self._owners + owner, self._ttl_ms)
        await self._run(pipe.execute())
        return token

    async def get(self, token: str) -> Pending | None:
        fields = await self._run(self._client.hgetall(self._prefix + token))
        if not fields or b"owner" not in fields:
            return None
        label = fields.get(b"label")
        return Pending(token=token, owner=fields[b"owner"].decode(), pixels=fields[b"pixels"],
                       predicted=int(fields[b"predicted"]), model_version=fields[b"model_version"].decode(),
                       source=fields[b"source"].decode(), created=float(fields[b"created"]),
                       label=None if label is None else int(label))

    async def claim(self, token: str, label: int) -> bool:
        return bool(await self._run(self._claim(keys=[self._prefix + token], args=[label])))

    async def release(self, token: str) -> None:
        await self._run(self._client.hdel(self._prefix + token, "label"))

    async def forget(self, owner: str) -> int:
        tokens = await self._run(self._client.smembers(self._owners + owner))
        keys = [self._prefix + t.decode() for t in tokens]
        deleted = await self._run(self._client.delete(*keys)) if keys else 0
        await self._run(self._client.delete(self._owners + owner))
        return int(deleted)

    async def close(self) -> None:
        await self._client.aclose()
