"""Encoded images -> 784 MNIST-style bytes in a pool of worker processes, so decoding uses every
core and never blocks the event loop. Workers return plain tuples: nothing custom crosses the
process boundary, so any PreprocessError subclass maps cleanly to its reason."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from digits.v1.errors import Reason

from preprocessing import DEFAULT_MAX_PIXELS, PreprocessError, preprocess
from preprocessing.reading import read


class ImageRejected(Exception):
    """An image that cannot become a digit; `reason` is the ErrorInfo reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _work(data: bytes, max_pixels: int) -> tuple[bool, bytes | str, str]:
    """Runs in a worker: (True, pixels, "") or (False, reason, message)."""
    try:
        result = preprocess(data, max_pixels=max_pixels)
    except PreprocessError as exc:
        return False, str(getattr(exc, "reason", Reason.UNREADABLE_IMAGE)), str(exc)
    if not result.digit_found:
        return False, Reason.NO_DIGIT_FOUND.value, "no digit found in the image: send a photo of one handwritten digit"
    if result.several:
        message = "the image holds several digits; Predict reads one digit: use Read for numbers"
        return False, Reason.SEVERAL_DIGITS.value, message
    return True, result.pixels.astype("uint8", copy=False).tobytes(), ""


ReadSlots = list[tuple[str, list[list[tuple[bytes, tuple[int, int, int, int]]]], list[float]]]


def _read_work(data: bytes, max_pixels: int) -> tuple[bool, ReadSlots | str, str]:
    """Runs in a worker for Read: (True, slots, "") or (False, reason, message).

    A slot is (separator before it, its alternative readings, their log-priors), a reading a list of
    (784 pixels, box)."""
    try:
        slots = read(data, max_pixels=max_pixels)
    except PreprocessError as exc:
        return False, str(getattr(exc, "reason", Reason.UNREADABLE_IMAGE)), str(exc)
    if not slots:
        return False, Reason.NO_DIGIT_FOUND.value, "no digit found in the image: send a photo of handwritten digits"
    out: ReadSlots = [
        (
            s.separator,
            [[(d.pixels.astype("uint8", copy=False).tobytes(), d.box) for d in o] for o in s.options],
            list(s.priors),
        )
        for s in slots
    ]
    return True, out, ""


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
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the server's end of the sentinel pipe closes, i.e. it is gone
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-server", daemon=True).start()


class PreprocessPool:
    """A bounded front door to the worker processes."""

    def __init__(
        self,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_pending: int = 1024,
        max_pending_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.max_pixels = max_pixels
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes  # memory bound: count alone would allow 1024 x 20 MB
        self.pending = 0
        self.pending_bytes = 0
        # forkserver: never fork a process that already runs gRPC and torch threads.
        self._context = multiprocessing.get_context("forkserver")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_worker_init)

    async def warm_up(self) -> None:
        """Start every worker (imports included) before the server reports SERVING."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self.workers * 2)))

    async def __call__(self, data: bytes) -> bytes:
        """784 bytes for the model, or ImageRejected / OverflowError (too many images pending)."""
        return await self._submit(_work, data)  # type: ignore[return-value]

    async def read(self, data: bytes) -> ReadSlots:
        """Every glyph of the image in reading order with its alternative readings (see `_read_work`)."""
        return await self._submit(_read_work, data)  # type: ignore[return-value]

    async def _submit(self, work, data: bytes):
        too_many_bytes = self.pending and self.pending_bytes + len(data) > self.max_pending_bytes
        if self.pending >= self.max_pending or too_many_bytes:
            raise OverflowError(f"the server is busy ({self.pending} images being decoded); try again shortly")
        self.pending += 1
        self.pending_bytes += len(data)
        try:
            ok, value, message = await asyncio.get_running_loop().run_in_executor(
                self._pool, work, data, self.max_pixels
            )
        except BrokenProcessPool:
            # A worker died (e.g. killed for memory on a hostile file): replace the pool, fail this one.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            message = "the image could not be decoded (the worker crashed)"
            raise ImageRejected(Reason.UNREADABLE_IMAGE.value, message) from None
        finally:
            self.pending -= 1
            self.pending_bytes -= len(data)
        if not ok:
            raise ImageRejected(str(value), message)
        return value

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
