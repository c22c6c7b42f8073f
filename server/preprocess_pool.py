"""Encoded images -> 784 MNIST-style bytes in a pool of worker processes, so decoding uses every
core and never blocks the event loop. Every way an image can fail (unreadable, too large, no digit,
the pool busy, a worker crashed) leaves the pool as one `RequestFailed` with its reason and message.

Admission counts what decoding will cost, read from each image's header before any pixel is
decoded (`preprocessing.decode.decoded_bytes`): a 77 KB PNG can decode to 80 MB, so file sizes
say nothing about the memory and CPU an image takes. A PredictBatch is admitted whole or refused
whole, before any of its images is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from digits.v1.errors import Reason

from preprocessing import DEFAULT_MAX_PIXELS, ImageTooLargeError, PreprocessError, preprocess
from preprocessing.decode import decoded_bytes
from preprocessing.reading import read
from server import memory
from server.failures import SEVERAL_DIGITS_MESSAGE, RequestFailed

log = logging.getLogger(__name__)

NO_DIGIT = "no digit found in the image: send a photo of one handwritten digit"
TRIM_ABOVE = 32 * 1024 * 1024  # decoded bytes after which a worker hands its freed memory back


def _work(data: bytes, max_pixels: int, cost: int) -> bytes | RequestFailed:
    """Runs in a worker: the 784 pixels, or the failure (returned, not raised: no traceback to ship)."""
    try:
        result = preprocess(data, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        return RequestFailed(Reason.IMAGE_TOO_LARGE, f"the image is too large: {exc}")
    except PreprocessError as exc:
        return RequestFailed(
            Reason.UNREADABLE_IMAGE, f"the image could not be read (send a PNG or JPEG photo of one digit): {exc}"
        )
    finally:
        if cost > TRIM_ABOVE:
            memory.trim()
    if not result.digit_found:
        return RequestFailed(Reason.NO_DIGIT_FOUND, NO_DIGIT)
    if result.several:
        return RequestFailed(Reason.SEVERAL_DIGITS, SEVERAL_DIGITS_MESSAGE)
    return result.pixels.astype("uint8", copy=False).tobytes()


ReadSlots = list[tuple[str, list[list[tuple[bytes, tuple[int, int, int, int]]]], list[float]]]


def _read_work(data: bytes, max_pixels: int, cost: int) -> ReadSlots | RequestFailed:
    """Runs in a worker for Read: every glyph as (separator before it, its alternative readings, their
    log-priors), a reading a list of (784 pixels, box); or the failure."""
    try:
        slots = read(data, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        return RequestFailed(Reason.IMAGE_TOO_LARGE, f"the image is too large: {exc}")
    except PreprocessError as exc:
        return RequestFailed(Reason.UNREADABLE_IMAGE, f"the image could not be read (send a PNG or JPEG photo): {exc}")
    finally:
        if cost > TRIM_ABOVE:
            memory.trim()
    if not slots:
        return RequestFailed(Reason.NO_DIGIT_FOUND, "no digit found in the image: send a photo of handwritten digits")
    return [
        (
            s.separator,
            [[(d.pixels.astype("uint8", copy=False).tobytes(), d.box) for d in o] for o in s.options],
            list(s.priors),
        )
        for s in slots
    ]


def _ready() -> int:
    return os.getpid()


def _worker_init() -> None:
    """Workers live and die with the server, not with signals meant for it.

    Ctrl-C reaches the whole process group: ignored here, the server drains and then closes the
    pool (a worker killed by it would print a traceback and fail the photos still in flight).
    And a worker leaves when the server process dies, even by SIGKILL: blocked on its task queue
    it would otherwise outlive the server (keeping the forkserver alive too), and every restart
    by a supervisor would leak them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # SIGHUP to the group means "reload the model", not "die"
    memory.use_mmap_for_large_blocks()
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the server's end of the sentinel pipe closes, i.e. it is gone
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-server", daemon=True).start()


class PreprocessPool:
    """A bounded front door to the worker processes: at most `max_pending` images, and at most
    `max_pending_bytes` of decoded image memory (from the headers), admitted at once."""

    def __init__(
        self,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_pending: int = 1024,
        max_pending_bytes: int = 640 * 1024 * 1024,
        on_crash: Callable[[], None] | None = None,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.max_pixels = max_pixels
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes  # four images at the default pixel limit, 4 bytes a pixel
        self.pending = 0
        self.pending_bytes = 0
        self._on_crash = on_crash
        self._warming: asyncio.Task | None = None  # a replacement pool starting its workers
        self._reporting: asyncio.Task | None = None  # logging why the old pool's worker died
        # forkserver: never fork a process that already runs gRPC and torch threads.
        self._context = multiprocessing.get_context("forkserver")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_worker_init)

    async def warm_up(self) -> None:
        """Start every worker (imports included) before the server reports SERVING."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self.workers * 2)))

    def cost(self, data: bytes) -> int:
        """Decoded bytes, from the header; an image that will be refused unread costs its file size."""
        return decoded_bytes(data, self.max_pixels) or len(data)

    def _admit(self, costs: Sequence[int]) -> None:
        """Count these images as pending, all or none; RequestFailed when they do not fit."""
        total = sum(costs)
        if len(costs) > 1 and (total > self.max_pending_bytes or len(costs) > self.max_pending):
            message = (
                f"{len(costs)} images that decode to {total / 2**20:.0f} MB in one call; this server decodes at most "
                f"{self.max_pending} images and {self.max_pending_bytes / 2**20:.0f} MB at once: send fewer per call"
            )
            raise RequestFailed(Reason.BATCH_TOO_LARGE, message)
        # One image alone is always admitted when nothing is pending: the pixel limit bounds it.
        too_many_bytes = self.pending and self.pending_bytes + total > self.max_pending_bytes
        if self.pending + len(costs) > self.max_pending or too_many_bytes:
            message = f"the server is busy ({self.pending} images being decoded); try again shortly"
            raise RequestFailed(Reason.QUEUE_FULL, message)
        self.pending += len(costs)
        self.pending_bytes += total

    async def __call__(self, data: bytes) -> bytes:
        """784 bytes for the model, or RequestFailed (bad image, no digit, busy, a worker crashed)."""
        return await self._one(data, _work)

    async def read(self, data: bytes) -> ReadSlots:
        """Every glyph of the image in reading order with its alternative readings (see `_read_work`), or
        RequestFailed as for `__call__`."""
        return await self._one(data, _read_work)  # type: ignore[return-value]

    async def _one(self, data: bytes, work):
        """One image through `work` in a worker, admitted by its decoded size; its failure is raised."""
        cost = self.cost(data)
        self._admit((cost,))
        try:
            result = await self._decode(data, cost, work)
        finally:
            self.pending -= 1
            self.pending_bytes -= cost
        if isinstance(result, RequestFailed):
            try:
                raise result
            finally:
                # Its traceback holds this frame: without this, frame -> result -> traceback -> frame
                # would be a cycle that keeps the image bytes until the next full garbage collection.
                del result, data
        return result

    async def decode_many(self, images: Sequence[bytes]) -> list[bytes | RequestFailed]:
        """Each image's 784 bytes or its failure, in order. Raises RequestFailed (BATCH_TOO_LARGE,
        QUEUE_FULL) before decoding anything when they cannot all be admitted."""
        costs = [self.cost(data) for data in images]
        self._admit(costs)
        try:
            return await asyncio.gather(*(self._decode(data, cost) for data, cost in zip(images, costs, strict=True)))
        finally:
            self.pending -= len(costs)
            self.pending_bytes -= sum(costs)

    async def _decode(self, data: bytes, cost: int, work=_work):
        """The pixels (or Read's slots, with `_read_work`) or the failure, returned (never raised:
        per-item failures carry no traceback)."""
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work, data, self.max_pixels, cost)
        except BrokenProcessPool:
            # A worker died (killed for memory, by an operator, a crash in a decoder): our failure,
            # not the caller's. Every image in flight learns it; the first to notice replaces the pool.
            if pool is self._pool:
                self._replace(pool)
            return RequestFailed(
                Reason.UNAVAILABLE, "an image preprocessing worker crashed; try again (it has been replaced)"
            )

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
        manager = getattr(pool, "_executor_manager_thread", None)
        if self._on_crash is not None:
            self._on_crash()
        pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        self._warming = loop.create_task(self.warm_up())  # start its workers now
        self._reporting = loop.create_task(self._report_death(processes, manager))

    @staticmethod
    async def _report_death(processes: list, manager: threading.Thread | None) -> None:
        """Says why the worker died once the old pool's own thread has collected the exit statuses:
        with the forkserver each status is read from a pipe, and two readers at once (that thread and
        us) make one of them lose it and report 255 instead of the signal."""
        if manager is not None:
            await asyncio.to_thread(manager.join, 10)
        codes = [p.exitcode for p in processes if p.exitcode]
        how = ", ".join(f"signal {-c}" if c < 0 else f"exit code {c}" for c in codes) or "unknown cause"
        log.error("a preprocessing worker died (%s); its images get UNAVAILABLE, the pool was replaced", how)

    def close(self) -> None:
        for task in (self._warming, self._reporting):
            if task is not None:
                task.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
