"""PredictStream: one long bidirectional call that feeds the batcher continuously.

Each request carries an id and one item; each answer carries the id and the item's PredictResult,
sent as soon as it is ready (answers overtake each other). Why a stream: a unary call costs the
gRPC process about as much CPU as the model spends on one image; on a stream, an item costs one
message read and one message write.

Backpressure, chosen and documented in the .proto:
- per stream, flow control: at most `window` items may be unanswered (read but whose answer is
  not yet handed to gRPC). The session takes a slot before it reads a request and gives it back
  only once the answer is written, so when the client stops reading, `context.write` stops
  completing, the slots run out, the session stops reading, and HTTP/2 flow control holds the
  client's writes. The server holds at most `window` answers per stream, whatever the client does.
- the batcher's queue is shared by every caller: an item that finds it full is answered at once
  with its own error QUEUE_FULL (as Predict's RESOURCE_EXHAUSTED), and the stream goes on.

A cancelled stream or a passed deadline ends the handler (gRPC cancels it); every item not yet at
the model is then dropped from the batcher's queue, and image items still in preprocessing stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from digits.v1 import digits_pb2

from server.batcher import Batcher

DEFAULT_WINDOW = 256

# (reason, message) of an exception an item ended with, or None for "not an item failure: re-raise"
Classify = Callable[[BaseException], tuple[str, str] | None]


class StreamSession:
    """Serves one PredictStream call; `run()` returns when the client has finished and every answer is out."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        batcher: Batcher,
        *,
        check_pixels: Callable[[bytes], bytes],
        pixels_of: Callable[[digits_pb2.PredictRequest], Awaitable[bytes]],
        response: Callable[..., digits_pb2.PredictResponse],  # (pixels, *row, image=from an encoded image)
        classify: Classify,
        window: int = DEFAULT_WINDOW,
        on_item: Callable[[str], None] | None = None,
        malformed: Callable[[object], Exception] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.context = context
        self.batcher = batcher
        self.check_pixels = check_pixels
        self.pixels_of = pixels_of
        self.response = response
        self.classify = classify
        self.window = window
        self.on_item = on_item  # called with "OK" or the item's error reason
        # A message whose bytes did not parse has no id to answer with: the stream ends with the
        # exception this returns (server/wire.py hands such messages in as they are).
        self.malformed = malformed
        self._slots = asyncio.Semaphore(window)
        self._answers: asyncio.Queue[digits_pb2.PredictStreamResponse] = asyncio.Queue()
        self._pending: set[asyncio.Future] = set()  # batcher futures and image tasks not yet answered
        self._failed: BaseException | None = None  # an unexpected error: ends the stream as INTERNAL

    async def run(self) -> None:
        writer = asyncio.ensure_future(self._write_answers())
        try:
            await self._read_requests(writer)
            if self._failed is None:  # every slot back means every answer is written
                for _ in range(self.window):
                    await self._acquire(writer)
        finally:
            writer.cancel()
            for pending in self._pending:
                pending.cancel()  # the batcher drops what has not reached the model
            self._pending.clear()
        if self._failed is not None:
            raise self._failed

    async def _acquire(self, writer: asyncio.Future) -> None:
        """Take a slot; if the writer died (the client went away), stop waiting for one."""
        if self._slots.locked():
            acquire = asyncio.ensure_future(self._slots.acquire())
            done, _ = await asyncio.wait((acquire, writer), return_when=asyncio.FIRST_COMPLETED)
            if acquire not in done:
                acquire.cancel()
                writer.result()  # raises what ended the writer
                raise asyncio.CancelledError
        else:
            await self._slots.acquire()

    async def _read_requests(self, writer: asyncio.Future) -> None:
        context = self.context
        while True:
            await self._acquire(writer)
            request = await context.read()
            if request is grpc.aio.EOF:
                self._slots.release()
                return
            if not isinstance(request, digits_pb2.PredictStreamRequest):
                if self.malformed is None:
                    raise TypeError(f"not a PredictStreamRequest: {type(request).__name__}")
                raise self.malformed(request)
            self._start(request)
            if self._failed is not None:
                return

    def _start(self, request: digits_pb2.PredictStreamRequest) -> None:
        item = request.item
        if item.WhichOneof("input") == "pixels":
            # The common case costs no task: the batcher's future answers through a callback.
            try:
                pixels = self.check_pixels(item.pixels)
                future = self.batcher.enqueue(pixels, self.context.time_remaining())
            except Exception as exc:
                self._answer_error(request.id, exc)
                return
            self._pending.add(future)
            future.add_done_callback(lambda f, rid=request.id, px=pixels: self._answer(rid, px, f))
        else:
            task = asyncio.ensure_future(self._image(item))
            self._pending.add(task)
            task.add_done_callback(lambda t, rid=request.id: self._answer_image(rid, t))

    async def _image(self, item: digits_pb2.PredictRequest) -> tuple[bytes, tuple]:
        pixels = await self.pixels_of(item)
        row = await self.batcher.enqueue(pixels, self.context.time_remaining())
        return pixels, row

    def _answer(self, rid: int, pixels: bytes, future: asyncio.Future) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return  # the stream is ending
        exc = future.exception()
        if exc is not None:
            self._answer_error(rid, exc)
            return
        # The row may carry the version of the model that computed it (server/model_reload.py).
        self._answer_row(rid, pixels, future.result())

    def _answer_image(self, rid: int, task: asyncio.Future) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._answer_error(rid, exc)
            return
        pixels, row = task.result()
        self._answer_row(rid, pixels, row, image=True)

    def _answer_row(self, rid: int, pixels: bytes, row: tuple, image: bool = False) -> None:
        try:
            prediction = self.response(pixels, *row, image=image)
        except Exception as exc:  # noqa: BLE001 - NOT_A_DIGIT is this item's answer; anything else a bug
            self._answer_error(rid, exc)
            return
        answer = digits_pb2.PredictStreamResponse(id=rid)
        answer.result.prediction.CopyFrom(prediction)
        self._answers.put_nowait(answer)
        if self.on_item is not None:
            self.on_item("OK")

    def _answer_error(self, rid: int, exc: BaseException) -> None:
        classified = self.classify(exc)
        if classified is None:  # a bug, not an item's failure: end the stream as INTERNAL
            self._failed = self._failed or exc
            self._slots.release()
            return
        reason, message = classified
        answer = digits_pb2.PredictStreamResponse(id=rid)
        answer.result.error.reason, answer.result.error.message = reason, message
        self._answers.put_nowait(answer)
        if self.on_item is not None:
            self.on_item(reason)

    async def _write_answers(self) -> None:
        answers, write, release = self._answers, self.context.write, self._slots.release
        while True:
            await write(await answers.get())
            release()
