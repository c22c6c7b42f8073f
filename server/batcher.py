"""Dynamic batching: gather concurrent requests into one model call, like Triton's dynamic batcher.

A batch leaves when it is full (`max_batch_size`) or when its oldest request has waited
`max_delay_s`; a lone request after a batch of one (one-at-a-time traffic) leaves at once. While
the model runs, new requests pile up, so under load batches fill without waiting. The queue is
bounded: a full queue fails at once instead of growing memory. Requests whose caller is gone
(cancelled) or whose deadline passed are dropped before inference.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")


class QueueFull(Exception):
    """The batcher already holds `max_queue` requests."""


class DeadlineExpired(Exception):
    """The request's deadline passed while it waited; it never reached the model."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work."""


@dataclass(slots=True)
class _Item:
    pixels: bytes
    future: asyncio.Future
    arrival: float
    deadline: float | None


class Batcher(Generic[R]):
    """Feeds `run_batch(joined_bytes, n) -> list[R]` on one inference thread, off the event loop."""

    def __init__(
        self,
        run_batch: Callable[[bytes, int], list[R]],
        *,
        max_batch_size: int = 64,
        max_delay_s: float = 0.002,
        max_queue: int = 1024,
        eager_when_idle: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.eager_when_idle = eager_when_idle
        self.on_batch = on_batch
        self.on_drop = on_drop
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._want = 1
        self._last_size = 0
        self._closed = False
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def submit(self, pixels: bytes, timeout: float | None = None) -> R:
        """Queue one 784-byte image; `timeout` is the caller's remaining deadline in seconds."""
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the server is busy ({self.max_queue} requests waiting); try again shortly")
        loop = asyncio.get_running_loop()
        now = loop.time()
        future = loop.create_future()
        self._queue.append(_Item(pixels, future, now, None if timeout is None else now + timeout))
        if len(self._queue) >= self._want:
            self._wake.set()
        return await future

    async def _next_batch(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while not queue:
            self._want = 1
            self._wake.clear()
            await self._wake.wait()
        # One request waiting right after a batch of one: traffic is one-at-a-time, and waiting
        # for company that is not coming would only add the delay to every request at idle.
        lone = self.eager_when_idle and len(queue) == 1 and self._last_size <= 1
        if self.max_delay_s > 0 and len(queue) < self.max_batch_size and not lone:
            wait = queue[0].arrival + self.max_delay_s - loop.time()
            if wait > 0:
                self._want = self.max_batch_size
                self._wake.clear()
                timer = loop.call_later(wait, self._wake.set)
                await self._wake.wait()
                timer.cancel()
        self._want = 1
        now = loop.time()
        batch: list[_Item] = []
        while queue and len(batch) < self.max_batch_size:
            item = queue.popleft()
            if item.future.done():  # cancelled by the caller (or gRPC, when the RPC ended)
                self._dropped("cancelled")
            elif item.deadline is not None and item.deadline <= now:
                item.future.set_exception(DeadlineExpired("the deadline passed before inference"))
                self._dropped("deadline")
            else:
                batch.append(item)
        self._last_size = len(batch)
        return batch

    def _dropped(self, reason: str) -> None:
        if self.on_drop is not None:
            self.on_drop(reason)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            joined = b"".join(item.pixels for item in batch)
            self._busy = True
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, joined, len(batch))
            except Exception as exc:  # the model failed: every request in the batch learns why
                log.exception("inference failed for a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                self._busy = False
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    async def close(self) -> None:
        """Refuse new work, let queued work finish, then stop the loop and the inference thread."""
        self._closed = True
        while self._queue or self._busy:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)
