"""The DigitClassifier servicer: validate the request, get 784 pixels (as sent, or from the
preprocessing pool), wait for the batcher's answer, reply. Every failure leaves as a gRPC status
with a google.rpc.ErrorInfo reason; nothing here touches the model directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterator

import grpc
from digits.v1 import digits_pb2, digits_pb2_grpc
from digits.v1.errors import Reason, rich_status

from model.shape import NOT_A_DIGIT_INDEX, NUM_CLASSES, PIXELS_LEN, SEVERAL_DIGITS_INDEX
from server import feedback_service, reading
from server.batcher import Batcher, BatcherClosed, DeadlineExpired, QueueFull
from server.failures import NOT_A_DIGIT_MESSAGE, SEVERAL_DIGITS_MESSAGE, RequestFailed
from server.feedback_store import FeedbackStore
from server.inference_process import InferenceUnavailable
from server.metrics import Metrics
from server.preprocess_pool import PreprocessPool
from server.stream import DEFAULT_WINDOW, StreamSession
from server.wire import BadRequestLog, Malformed

log = logging.getLogger(__name__)


def no_input() -> RequestFailed:
    return RequestFailed(Reason.NO_INPUT, "empty request: set `image` (a file) or `pixels` (784 bytes)")


def not_ready() -> RequestFailed:
    return RequestFailed(Reason.NOT_READY, "the model is still loading; try again shortly")


def shutting_down() -> RequestFailed:
    return RequestFailed(Reason.SHUTTING_DOWN, "the server is shutting down")


def _checked_pixels(pixels: bytes) -> bytes:
    if len(pixels) != PIXELS_LEN:
        raise RequestFailed(
            Reason.BAD_PIXELS,
            f"`pixels` must be exactly {PIXELS_LEN} bytes (28x28, row-major, 0 = background, 255 = ink), "
            f"got {len(pixels)}",
        )
    return pixels


BATCHER_ERRORS = (QueueFull, DeadlineExpired, BatcherClosed, InferenceUnavailable)
EXPECTED = re.compile(r"[0-9\s]*")  # Read's `expected`: a user's correction, digits and white space
MAX_EXPECTED = 256


def _batcher_failure(exc: BaseException) -> RequestFailed:
    """One of BATCHER_ERRORS (the batcher's and the model process's exceptions) as RequestFailed."""
    if isinstance(exc, QueueFull):
        return RequestFailed(Reason.QUEUE_FULL, str(exc))
    if isinstance(exc, DeadlineExpired):
        return RequestFailed(Reason.DEADLINE_EXCEEDED, str(exc))
    if isinstance(exc, BatcherClosed):
        return shutting_down()
    return RequestFailed(Reason.UNAVAILABLE, str(exc))  # the model process died; a retry reaches its replacement


def _unencoded(request: digits_pb2.PredictRequest) -> bytes | None:
    """The request's checked pixels; None for an image the pool must decode; RequestFailed otherwise."""
    kind = request.WhichOneof("input")
    if kind == "pixels":
        return _checked_pixels(request.pixels)
    if kind == "image":
        if not request.image:
            raise RequestFailed(Reason.UNREADABLE_IMAGE, "the image is empty")
        return None
    raise no_input()


@contextlib.contextmanager
def _batcher_failures() -> Iterator[None]:
    """The batcher's and the model process's exceptions, as RequestFailed."""
    try:
        yield
    except BATCHER_ERRORS as exc:
        raise _batcher_failure(exc) from None


def _item_failure(exc: BaseException) -> tuple[str, str] | None:
    """A stream item's exception as (reason, message) for its ItemError; None for a bug."""
    if isinstance(exc, BATCHER_ERRORS):
        exc = _batcher_failure(exc)
    if not isinstance(exc, RequestFailed):
        return None
    return exc.reason.value, exc.message


class DigitClassifierService(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(
        self,
        metrics: Metrics,
        preprocessor: PreprocessPool,
        feedback_store: FeedbackStore | None = None,
        stream_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.metrics = metrics
        self.preprocessor = preprocessor
        self.bad_requests = BadRequestLog()
        self.feedback_store = feedback_store  # None: Feedback/Forget answer FAILED_PRECONDITION
        self.stream_window = stream_window  # unanswered items one PredictStream may hold (see server/stream.py)
        self.batcher: Batcher | None = None  # set once the model is loaded and warm
        self.model_version = ""
        self.draining = False

    def ready(self, batcher: Batcher, model_version: str) -> None:
        self.batcher, self.model_version = batcher, model_version

    async def Predict(self, request: digits_pb2.PredictRequest, context: grpc.aio.ServicerContext):
        return await self._serve("Predict", self._predict, request, context)

    async def PredictBatch(self, request: digits_pb2.PredictBatchRequest, context: grpc.aio.ServicerContext):
        return await self._serve("PredictBatch", self._predict_batch, request, context)

    async def Feedback(self, request: digits_pb2.FeedbackRequest, context: grpc.aio.ServicerContext):
        return await self._serve("Feedback", self._feedback, request, context)

    async def Forget(self, request: digits_pb2.ForgetRequest, context: grpc.aio.ServicerContext):
        return await self._serve("Forget", self._forget, request, context)

    async def Read(self, request: digits_pb2.ReadRequest, context: grpc.aio.ServicerContext):
        return await self._serve("Read", self._read, request, context)

    async def _feedback(self, request: digits_pb2.FeedbackRequest, context: grpc.aio.ServicerContext):
        return await feedback_service.feedback(self.feedback_store, request)

    async def _forget(self, request: digits_pb2.ForgetRequest, context: grpc.aio.ServicerContext):
        return await feedback_service.forget(self.feedback_store, request)

    async def PredictStream(self, request_iterator, context: grpc.aio.ServicerContext):
        return await self._serve("PredictStream", self._predict_stream, request_iterator, context)

    async def _serve(self, method: str, handler, request, context: grpc.aio.ServicerContext):
        """Run `handler`; every failure leaves as a status with ErrorInfo, and is counted."""
        start = time.perf_counter()
        code = "OK"
        try:
            if isinstance(request, Malformed):  # bytes that did not parse (server/wire.py)
                self.bad_requests.warn(context.peer(), method, request)
                raise RequestFailed(Reason.BAD_REQUEST, f"the request is not a valid {request.expected}")
            return await handler(request, context)
        except RequestFailed as failure:  # the one place a failure becomes a status
            code = failure.code.name
            await context.abort_with_status(rich_status(failure.code, failure.reason, failure.message))
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("%s failed", method)
            await context.abort_with_status(
                rich_status(grpc.StatusCode.INTERNAL, Reason.INTERNAL, "internal error; it has been logged")
            )
        finally:
            self.metrics.observe(method, code, time.perf_counter() - start)

    def _ready_batcher(self) -> Batcher:
        if self.draining:
            raise shutting_down()
        if self.batcher is None:
            raise not_ready()
        return self.batcher

    async def _predict(self, request: digits_pb2.PredictRequest, context: grpc.aio.ServicerContext):
        # The hot path of the busiest RPC: pixels are checked inline (no coroutine for `_pixels`),
        # and the batcher's failures are caught by a plain `except` (no context-manager generator):
        # together 2-3 us of the servicer's ~19 us per call (gRPC's own per-call work is ~15x that).
        batcher = self._ready_batcher()
        kind = request.WhichOneof("input")
        if kind == "pixels":
            pixels = _checked_pixels(request.pixels)
        else:
            pixels = await self._pixels(request)
        try:
            row = await batcher.submit(pixels, context.time_remaining())
        except BATCHER_ERRORS as exc:
            raise _batcher_failure(exc) from None
        return self._response(pixels, *row, image=kind == "image")

    async def _predict_batch(self, request: digits_pb2.PredictBatchRequest, context: grpc.aio.ServicerContext):
        batcher = self._ready_batcher()
        items = request.items
        if not items:
            raise RequestFailed(Reason.NO_INPUT, "empty batch: send at least one item")
        if len(items) > batcher.max_queue:
            message = f"{len(items)} items in one call; this server takes at most {batcher.max_queue}"
            raise RequestFailed(Reason.BATCH_TOO_LARGE, message)
        if batcher.depth + len(items) > batcher.max_queue:  # refused before any decoding
            message = f"the server is busy ({batcher.depth} requests waiting); try again shortly"
            raise RequestFailed(Reason.QUEUE_FULL, message)
        # Each item: its 784 pixels, or the failure Predict would have given it. Encoded images are
        # admitted to the pool all together (or the call is refused before any is decoded).
        outcomes: list[bytes | RequestFailed | None] = [None] * len(items)
        encoded: list[int] = []
        for i, item in enumerate(items):
            try:
                outcomes[i] = _unencoded(item)
            except RequestFailed as failure:
                outcomes[i] = failure.with_traceback(None)  # kept: its traceback would keep this frame (and request)
            if outcomes[i] is None:
                encoded.append(i)
        if encoded:
            decoded = await self.preprocessor.decode_many([items[i].image for i in encoded])
            for i, result in zip(encoded, decoded, strict=True):
                outcomes[i] = result
        for outcome in outcomes:  # a busy pool concerns the whole call, like a full queue
            if isinstance(outcome, RequestFailed) and not outcome.per_item:
                raise outcome
        good = [i for i, o in enumerate(outcomes) if isinstance(o, bytes)]
        with _batcher_failures():
            rows = await batcher.submit_many([outcomes[i] for i in good], context.time_remaining()) if good else []
        results = [digits_pb2.PredictResult() for _ in items]
        images = set(encoded)
        for i, row in zip(good, rows, strict=True):
            try:
                results[i].prediction.CopyFrom(self._response(outcomes[i], *row, image=i in images))
            except RequestFailed as failure:  # this item is not a digit
                outcomes[i] = failure.with_traceback(None)
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, RequestFailed):
                results[i].error.reason, results[i].error.message = outcome.reason.value, outcome.message
        return digits_pb2.PredictBatchResponse(results=results)

    async def _read(self, request: digits_pb2.ReadRequest, context: grpc.aio.ServicerContext):
        """Every digit of the image: all alternative readings of all glyphs go to the batcher together."""
        batcher = self._ready_batcher()
        if not request.image:
            raise RequestFailed(Reason.UNREADABLE_IMAGE, "the image is empty")
        expected = request.expected
        if expected and (not EXPECTED.fullmatch(expected) or len(expected) > MAX_EXPECTED):
            raise RequestFailed(
                Reason.BAD_FIELD, f"expected must be digits 0-9 (and spaces or new lines), at most {MAX_EXPECTED}"
            )
        slots = await self.preprocessor.read(request.image)
        images = [pixels for _, options, _ in slots for option in options for pixels, _ in option]
        with _batcher_failures():
            rows = await batcher.submit_many(images, context.time_remaining())
        # Rows may carry the version of the model that computed them (server/model_reload.py).
        version = rows[0][3] if rows and len(rows[0]) > 3 else self.model_version
        if expected.strip():  # a correction: the cut that gives these digits, whatever the model reads
            matched = reading.choose_expected(slots, [row[:3] for row in rows], expected)
            if matched is None:
                count = sum(c.isdigit() for c in expected)
                raise RequestFailed(
                    Reason.UNMATCHED_DIGITS, f"the image cannot be cut into the {count} digits expected"
                )
            return reading.response(matched, version)
        chosen = reading.choose(slots, [row[:3] for row in rows])
        if chosen.refused:  # most glyphs are letters, symbols or doodles: a word, not a number
            raise RequestFailed(Reason.NOT_A_DIGIT, NOT_A_DIGIT_MESSAGE)
        return reading.response(chosen, version)

    async def _predict_stream(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        session = StreamSession(
            context,
            self._ready_batcher(),
            check_pixels=_checked_pixels,
            pixels_of=self._pixels,
            response=self._response,
            classify=_item_failure,
            window=self.stream_window,
            on_item=self.metrics.stream_item,
            malformed=lambda request: self._malformed("PredictStream", request, context),
        )
        await session.run()

    def _malformed(self, method: str, request: Malformed, context: grpc.aio.ServicerContext) -> RequestFailed:
        self.bad_requests.warn(context.peer(), method, request)
        return RequestFailed(Reason.BAD_REQUEST, f"the request is not a valid {request.expected}")

    async def _pixels(self, request: digits_pb2.PredictRequest) -> bytes:
        pixels = _unencoded(request)
        return await self.preprocessor(request.image) if pixels is None else pixels

    def _response(
        self,
        pixels: bytes,
        digit: int,
        confidence: float,
        probabilities: list[float],
        version: str | None = None,
        *,
        image: bool = False,
    ) -> digits_pb2.PredictResponse:
        if digit == NOT_A_DIGIT_INDEX:  # the model's gate refused the image (model/gate.py)
            raise RequestFailed(Reason.NOT_A_DIGIT, NOT_A_DIGIT_MESSAGE)
        if digit == SEVERAL_DIGITS_INDEX:  # the several-digits head: one glyph, but digits run together
            if image:  # a photo of a touching "23": Read it
                raise RequestFailed(Reason.SEVERAL_DIGITS, SEVERAL_DIGITS_MESSAGE)
            # 28x28 pixels are one digit framed by the client (MNIST-style data): answered as that digit
            digit = max(range(NUM_CLASSES), key=probabilities.__getitem__)
            confidence = probabilities[digit]
        return digits_pb2.PredictResponse(
            digit=digit,
            confidence=confidence,
            probabilities=probabilities[:NUM_CLASSES],  # the heads' columns are the server's own business
            model_version=version or self.model_version,  # the model that computed it (a reload may follow)
            pixels=pixels,
        )

    async def Ping(self, request: digits_pb2.PingRequest, context: grpc.aio.ServicerContext):
        if isinstance(request, Malformed):
            return await self._serve("Ping", None, request, context)
        start = time.perf_counter()
        try:
            return digits_pb2.PingResponse(model_version=self.model_version)
        finally:
            self.metrics.observe("Ping", "OK", time.perf_counter() - start)
