"""The DigitClassifier servicer: validate the request, get 784 pixels (as sent, or from the
preprocessing pool), wait for the batcher's answer, reply. Every failure leaves as a gRPC status
with a google.rpc.ErrorInfo reason; nothing here touches the model directly."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from digits.v1 import digits_pb2, digits_pb2_grpc

from server.batcher import Batcher, BatcherClosed, DeadlineExpired, QueueFull
from server.client import PIXELS_LEN
from server.errors import Reason, rich_status
from server.inference_process import InferenceUnavailable
from server.metrics import Metrics
from server.preprocess_pool import ImageRejected, PreprocessPool

log = logging.getLogger(__name__)


class RpcFailure(Exception):
    """A failure with its gRPC code and ErrorInfo reason, raised inside the servicer."""

    def __init__(self, code: grpc.StatusCode, reason: Reason | str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, str(reason), message


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def no_input() -> RpcFailure:
    return RpcFailure(INVALID, Reason.NO_INPUT, "empty request: set `image` (a file) or `pixels` (784 bytes)")


def not_ready() -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNAVAILABLE, Reason.NOT_READY, "the model is still loading; try again shortly")


def shutting_down() -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN, "the server is shutting down")


class DigitClassifierService(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(self, metrics: Metrics, preprocessor: PreprocessPool | None = None) -> None:
        self.metrics = metrics
        self.preprocessor = preprocessor
        self.batcher: Batcher | None = None  # set once the model is loaded and warm
        self.model_version = ""
        self.draining = False

    def ready(self, batcher: Batcher, model_version: str) -> None:
        self.batcher, self.model_version = batcher, model_version

    async def Predict(self, request: digits_pb2.PredictRequest, context: grpc.aio.ServicerContext):
        start = time.perf_counter()
        code = "OK"
        try:
            return await self._predict(request, context)
        except RpcFailure as failure:
            code = failure.code.name
            await context.abort_with_status(rich_status(failure.code, failure.reason, failure.message))
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("Predict failed")
            await context.abort_with_status(
                rich_status(grpc.StatusCode.INTERNAL, Reason.INTERNAL, "internal error; it has been logged")
            )
        finally:
            self.metrics.observe("Predict", code, time.perf_counter() - start)

    async def _predict(self, request: digits_pb2.PredictRequest, context: grpc.aio.ServicerContext):
        batcher = self.batcher
        if self.draining:
            raise shutting_down()
        if batcher is None:
            raise not_ready()
        kind = request.WhichOneof("input")
        if kind == "pixels":
            pixels = request.pixels
            if len(pixels) != PIXELS_LEN:
                raise RpcFailure(
                    INVALID,
                    Reason.BAD_PIXELS,
                    f"`pixels` must be exactly {PIXELS_LEN} bytes (28x28, row-major, 0 = background, 255 = ink), "
                    f"got {len(pixels)}",
                )
        elif kind == "image":
            pixels = await self._decode(request.image)
        else:
            raise no_input()
        try:
            digit, confidence, probabilities = await batcher.submit(pixels, context.time_remaining())
        except QueueFull as exc:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.QUEUE_FULL, str(exc)) from None
        except DeadlineExpired as exc:
            raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, Reason.DEADLINE_EXCEEDED, str(exc)) from None
        except BatcherClosed:
            raise shutting_down() from None
        except InferenceUnavailable as exc:  # the model process died; retrying reaches its replacement
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, Reason.UNAVAILABLE, str(exc)) from None
        return digits_pb2.PredictResponse(
            digit=digit,
            confidence=confidence,
            probabilities=probabilities,
            model_version=self.model_version,
            pixels=pixels,
        )

    async def _decode(self, data: bytes) -> bytes:
        if not data:
            raise RpcFailure(INVALID, Reason.UNREADABLE_IMAGE, "the image is empty")
        if self.preprocessor is None:
            raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, Reason.INTERNAL, "this server accepts only `pixels`")
        try:
            return await self.preprocessor(data)
        except ImageRejected as exc:
            message = exc.message
            if exc.reason == Reason.UNREADABLE_IMAGE:
                message = f"the image could not be read (send a PNG or JPEG photo of one digit): {exc.message}"
            elif exc.reason == Reason.IMAGE_TOO_LARGE:
                message = f"the image is too large: {exc.message}"
            raise RpcFailure(INVALID, exc.reason, message) from None
        except OverflowError as exc:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.QUEUE_FULL, str(exc)) from None

    async def Ping(self, request: digits_pb2.PingRequest, context: grpc.aio.ServicerContext):
        start = time.perf_counter()
        try:
            return digits_pb2.PingResponse(model_version=self.model_version)
        finally:
            self.metrics.observe("Ping", "OK", time.perf_counter() - start)
