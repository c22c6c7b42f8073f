"""Small per-chat and per-user state the bots keep between messages, behind one interface.

Why not python-telegram-bot's chat_data/user_data: those live in one process. Telegram in webhook
mode runs as several replicas behind one URL, and each update may land on any of them, so `/seen on`
set through one replica must hold on the next, and "one flood notice per 10 s" must hold across all.
With DIGITS_REDIS_URL the state lives in Redis (bots.redis_store); without it, in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class ChatState(Protocol):
    async def get_flag(self, key: str) -> bool:
        """A per-chat switch (such as /seen); False when never set."""
        ...

    async def set_flag(self, key: str, value: bool) -> None:
        ...

    async def first_in(self, key: str, seconds: float) -> bool:
        """True for the first call per `key` in any `seconds`, False for the others (e.g. one notice per flood)."""
        ...

    async def get_text(self, key: str) -> str | None:
        """A short text kept for a while (such as the correction tokens of a number answer); None when unset
        or expired."""
        ...

    async def set_text(self, key: str, value: str, seconds: float) -> None:
        """Keep `value` under `key` for `seconds`."""
        ...

    async def close(self) -> None:
        ...


class MemoryChatState:
    """ChatState in this process: exact for one bot process."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._flags: dict[str, bool] = {}
        self._last: dict[str, float] = {}
        self._texts: dict[str, tuple[float, str]] = {}  # key -> (expires at, value), oldest first
        self._max_keys = max_keys

    async def get_flag(self, key: str) -> bool:
        return self._flags.get(key, False)

    async def set_flag(self, key: str, value: bool) -> None:
        if value:
            self._flags[key] = True
        else:
            self._flags.pop(key, None)

    async def first_in(self, key: str, seconds: float) -> bool:
        now = self._clock()
        if now - self._last.get(key, -float("inf")) < seconds:
            return False
        self._last[key] = now
        if len(self._last) > self._max_keys:  # forget the oldest half: memory stays bounded
            for stale in sorted(self._last, key=self._last.__getitem__)[: self._max_keys // 2]:
                del self._last[stale]
        return True

    async def get_text(self, key: str) -> str | None:
        entry = self._texts.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    async def set_text(self, key: str, value: str, seconds: float) -> None:
        self._texts.pop(key, None)  # re-inserted last: dict order is the age order
        self._texts[key] = (self._clock() + seconds, value)
        while len(self._texts) > self._max_keys:  # bounded: the oldest go first
            del self._texts[next(iter(self._texts))]

    async def close(self) -> None:
        return None
