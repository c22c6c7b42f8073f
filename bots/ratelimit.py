"""Per-user rate limiting for the bots: one small async interface, kept in memory or shared through Redis.

Why an interface: a single bot process can count requests in a dict, but replicas behind one webhook
URL (or several Discord shards in separate processes) must share the count, or each replica lets a
user through `rate` times. Both implementations answer the same question, "may `key` go now?".
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class RateLimiter(Protocol):
    """At most `rate` accepted requests per key in any `per_seconds` window (a sliding window)."""

    rate: int
    per_seconds: float

    async def check(self, key: str) -> float:
        """Count one request for `key`: 0 when it is allowed, else the seconds until the next one is.

        Refused requests are not counted, so a user who floods is let back in as soon as the window
        allows rather than being locked out for as long as they keep trying."""
        ...

    async def close(self) -> None:
        """Release connections, if any."""
        ...


class InMemoryRateLimiter:
    """The sliding window kept in this process: exact for one bot process, and what runs without Redis."""

    def __init__(self, rate: int, per_seconds: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        if rate < 1 or per_seconds <= 0:
            raise ValueError(f"rate must be >= 1 and per_seconds > 0, got {rate}, {per_seconds}")
        self.rate = rate
        self.per_seconds = per_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    async def check(self, key: str) -> float:
        return self.check_now(key)

    def check_now(self, key: str) -> float:
        """`check` without the await (the in-memory window never waits on anything)."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.per_seconds:
            hits.popleft()
        if len(hits) >= self.rate:
            return max(0.0, self.per_seconds - (now - hits[0]))
        hits.append(now)
        if len(self._hits) > self._max_keys:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        """Forget users with no request in the window so memory stays bounded."""
        stale = [k for k, h in self._hits.items() if not h or now - h[-1] >= self.per_seconds]
        for k in stale:
            del self._hits[k]

    async def close(self) -> None:
        return None
