"""Encoded images -> 784 MNIST-style bytes in a pool of worker processes, so decoding uses every
core and never blocks the event loop. Every way an image can fail (unreadable, too large, no digit,
the pool busy, a worker crashed) leaves the pool as one `RequestFailed` with its reason and message."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from digits.v1.errors import Reason

from preprocessing import DEFAULT_MAX_PIXELS, ImageTooLargeError, PreprocessError, preprocess
from server.failures import RequestFailed

NO_DIGIT = "no digit found in the image: send a photo of one handwritten digit"


def _work(data: bytes, max_pixels: int) -> bytes | RequestFailed:
    """Runs in a worker: the 784 pixels, or the failure (returned, not raised: no traceback to ship)."""
    try:
        result = preprocess(data, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        return RequestFailed(Reason.IMAGE_TOO_LARGE, f"the image is too large: {exc}")
    except PreprocessError as exc:
        return RequestFailed(
            Reason.UNREADABLE_IMAGE, f"the image could not be read (send a PNG or JPEG photo of one digit): {exc}"
        )
    if not result.digit_found:
        return RequestFailed(Reason.NO_DIGIT_FOUND, NO_DIGIT)
    return result.pixels.astype("uint8", copy=False).tobytes()


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
        """784 bytes for the model, or RequestFailed (bad image, no digit, too many images pending)."""
        too_many_bytes = self.pending and self.pending_bytes + len(data) > self.max_pending_bytes
        if self.pending >= self.max_pending or too_many_bytes:
            message = f"the server is busy ({self.pending} images being decoded); try again shortly"
            raise RequestFailed(Reason.QUEUE_FULL, message)
        self.pending += 1
        self.pending_bytes += len(data)
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, _work, data, self.max_pixels)
        except BrokenProcessPool:
            # A worker died (e.g. killed for memory on a hostile file): replace the pool, fail this one.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            message = "the image could not be read (send a PNG or JPEG photo of one digit): the worker crashed"
            raise RequestFailed(Reason.UNREADABLE_IMAGE, message) from None
        finally:
            self.pending -= 1
            self.pending_bytes -= len(data)
        if isinstance(result, RequestFailed):
            raise result
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
