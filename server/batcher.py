"""Dynamic batching: gather concurrent requests into one model call, like Triton's dynamic batcher.

A batch leaves when it is full (`max_batch_size`) or when its oldest request has waited
`max_delay_s`; a lone request after a batch of one (one-at-a-time traffic) leaves at once. While
the model runs, new requests pile up, so under load batches fill without waiting. The queue is
bounded: a full queue fails at once instead of growing memory. Requests whose caller is gone
(cancelled) or whose deadline passed are dropped before inference.

Two policies decide how long a batch waits under load (`policy`):
- "eager": the rule above: the model takes whatever is queued the moment it is free, since the oldest
  request has usually waited `max_delay_s` already.
- "fill": when the model becomes free with requests already queued (load), the batch waits until the
  queue holds the requests expected during one model call (the recent arrival rate times the recent
  inference time), but never more than `max_delay_s` counted from the moment the model became free.
  Under closed-loop load, clients come back in waves (one wave per delivered batch); waiting briefly
  merges waves into fewer, fuller batches, which cost less model CPU per image. At idle (the queue was
  empty when the model finished) it behaves exactly like "eager", lone-request fast path included.

The inference thread takes its next batch straight from the queue: the event loop only appends
requests and receives finished batches (one callback per batch). Were the loop to hand batches
out, the model would sit idle whenever the loop is busy with the traffic of the previous batch,
which under load is most of the time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
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


class BatchFailed(Exception):
    """Raised by `run_batch` for a failure its message fully explains (logged without a traceback).
    `reported`: `run_batch` already logged the cause, so the failed batch is only a debug line."""

    reported = False


@dataclass(slots=True)
class _Item:
    pixels: bytes
    future: asyncio.Future
    arrival: float  # time.monotonic(), the clock asyncio's loop.time() uses
    deadline: float | None


POLICIES = ("eager", "fill")
_EWMA = 0.2  # weight of the newest sample in the arrival-rate and inference-time estimates


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
        policy: str = "eager",
        on_batch: Callable[[int], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_s >= 0")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.eager_when_idle = eager_when_idle
        self.policy = policy
        self.on_batch = on_batch  # called on the inference thread (prometheus metrics are thread-safe)
        self.on_drop = on_drop  # called on the event loop
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._want = 1  # queue length at which the inference thread wants to be woken
        self._last_size = 0
        # "fill" estimates, kept by the inference thread (`_arrived` is counted under `_cond`).
        self._arrived = 0
        self._arrived_at_take = 0
        self._last_take = 0.0
        self._rate = 0.0  # requests per second, EWMA over the intervals between batches
        self._infer_s = 0.0  # seconds per model call, EWMA
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    async def submit(self, pixels: bytes, timeout: float | None = None) -> R:
        """Queue one 784-byte image; `timeout` is the caller's remaining deadline in seconds."""
        return await self.enqueue(pixels, timeout)

    async def submit_many(self, images: list[bytes], timeout: float | None = None) -> list[R]:
        """Queue several images at once: all of them, or none (QueueFull) when they do not all fit.
        Cancelling the caller drops whichever have not reached the model yet."""
        return list(await asyncio.gather(*self._enqueue(images, timeout)))

    def enqueue(self, pixels: bytes, timeout: float | None = None) -> asyncio.Future:
        """Queue one image and return its future without awaiting it (raises QueueFull/BatcherClosed at
        once). For PredictStream, which answers from a done-callback instead of a task per item;
        cancelling the future drops the image if it has not reached the model yet. The one-image
        path of `_enqueue`, without its lists: it runs once per Predict call."""
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        queue = self._queue
        if len(queue) >= self.max_queue:
            raise QueueFull(f"the server is busy ({len(queue)} requests waiting); try again shortly")
        now = time.monotonic()
        future = self._loop.create_future()
        item = _Item(pixels, future, now, None if timeout is None else now + timeout)
        with self._cond:
            queue.append(item)
            self._arrived += 1
            if len(queue) >= self._want:
                self._cond.notify()
        return future

    def _enqueue(self, images: tuple[bytes, ...] | list[bytes], timeout: float | None) -> list[asyncio.Future]:
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        if len(self._queue) + len(images) > self.max_queue:
            raise QueueFull(f"the server is busy ({len(self._queue)} requests waiting); try again shortly")
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        items = [_Item(pixels, self._loop.create_future(), now, deadline) for pixels in images]
        with self._cond:
            self._queue.extend(items)
            self._arrived += len(items)
            if len(self._queue) >= self._want:
                self._cond.notify()
        return [item.future for item in items]

    # --- the inference thread ---

    def _next_batch(self) -> list[_Item] | None:
        """Block until a batch is due; None once closed and drained."""
        queue = self._queue
        with self._cond:
            free_at = time.monotonic()
            loaded = bool(queue)  # requests piled up while the model ran
            while not queue:
                if self._closed:
                    return None
                self._want = 1
                self._cond.wait()
            # One request waiting right after a batch of one: traffic is one-at-a-time, and waiting
            # for company that is not coming would only add the delay to every request at idle.
            lone = self.eager_when_idle and len(queue) == 1 and self._last_size <= 1
            if self.max_delay_s > 0 and not lone:
                if self.policy == "fill" and loaded:
                    want = self.fill_target()
                    due = max(queue[0].arrival, free_at) + self.max_delay_s
                else:
                    want = self.max_batch_size
                    due = queue[0].arrival + self.max_delay_s
                self._want = want
                while len(queue) < want and not self._closed:
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
            self._want = 1
            take = min(len(queue), self.max_batch_size)
            items = [queue.popleft() for _ in range(take)]
            now = time.monotonic()
            self._note_arrivals(now)
        batch: list[_Item] = []
        cancelled: list[_Item] = []
        expired: list[_Item] = []
        for item in items:
            if item.future.done():  # cancelled by the caller (or gRPC, when the RPC ended)
                cancelled.append(item)
            elif item.deadline is not None and item.deadline <= now:
                expired.append(item)
            else:
                batch.append(item)
        if cancelled or expired:
            self._loop.call_soon_threadsafe(self._drop, cancelled, expired)
        self._last_size = len(batch)
        return batch

    def fill_target(self) -> int:
        """The queue length a "fill" batch waits for: the requests expected to arrive during one model
        call at the recent rate, between 2 and `max_batch_size`."""
        expected = math.ceil(self._rate * self._infer_s)
        return max(2, min(self.max_batch_size, expected))

    def _note_arrivals(self, now: float) -> None:
        """Update the arrival-rate estimate at each take (called under `_cond`)."""
        interval = now - self._last_take
        if self._last_take and interval > 0:
            sample = (self._arrived - self._arrived_at_take) / interval
            self._rate += _EWMA * (sample - self._rate)
        self._last_take, self._arrived_at_take = now, self._arrived

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            joined = b"".join(item.pixels for item in batch)
            started = time.monotonic()
            try:
                results = self.run_batch(joined, len(batch))
            except Exception as exc:  # the model failed: every request in the batch learns why
                if isinstance(exc, BatchFailed):
                    level = logging.DEBUG if exc.reported else logging.ERROR
                    log.log(level, "inference failed for a batch of %d: %s", len(batch), exc)
                else:
                    log.exception("inference failed for a batch of %d", len(batch))
                self._loop.call_soon_threadsafe(self._fail, batch, exc)
                continue
            self._infer_s += _EWMA * (time.monotonic() - started - self._infer_s)
            self._loop.call_soon_threadsafe(self._deliver, batch, results)

    # --- back on the event loop ---

    def _drop(self, cancelled: list[_Item], expired: list[_Item]) -> None:
        for item in expired:
            if not item.future.done():
                item.future.set_exception(DeadlineExpired("the deadline passed before inference"))
        if self.on_drop is not None:
            for reason, items in (("cancelled", cancelled), ("deadline", expired)):
                for _ in items:
                    self.on_drop(reason)

    @staticmethod
    def _deliver(batch: list[_Item], results: list) -> None:
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    @staticmethod
    def _fail(batch: list[_Item], exc: Exception) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    async def close(self) -> None:
        """Refuse new work, let queued work finish, then stop the inference thread."""
        self._closed = True
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            # The thread schedules its last answers before it ends, so they land before this returns.
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
