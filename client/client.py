"""The asyncio client the bots use: one channel, a deadline per call, retries with backoff
on UNAVAILABLE, and one exception family whose `.reason` says what went wrong. The target may name
several replicas (`dns:///name:port`, `ipv4:a:port,b:port`): calls go round-robin, and a retry lands on
another replica (client/channel.py: gRPC's own balancing and retries).

    async with DigitsClient("127.0.0.1:50051") as client:
        prediction = await client.predict_image(photo_bytes)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from digits.v1 import digits_pb2, digits_pb2_grpc
from digits.v1.errors import Reason, error_info

from client.channel import MAX_ATTEMPTS, channel_options, previous_attempts
from client.streaming import stream_results, stream_supported


class DigitsError(Exception):
    """Every client failure. `reason` is the server's ErrorInfo reason (or the client's own)."""

    default_reason = "ERROR"

    def __init__(self, message: str, reason: str | None = None, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidInput(DigitsError):
    """The request itself is wrong (INVALID_ARGUMENT): retrying the same bytes will not help."""

    default_reason = "INVALID_ARGUMENT"


class NoDigitFound(InvalidInput):
    default_reason = Reason.NO_DIGIT_FOUND.value


class UnreadableImage(InvalidInput):
    default_reason = Reason.UNREADABLE_IMAGE.value


class ImageTooLarge(InvalidInput):
    """Too many pixels, or a message over the server's size limit (reason MESSAGE_TOO_LARGE)."""

    default_reason = Reason.IMAGE_TOO_LARGE.value


class BadPixels(InvalidInput):
    default_reason = Reason.BAD_PIXELS.value


class SeveralDigits(InvalidInput):
    """Predict on a picture of a number: `read_image` reads every digit."""

    default_reason = Reason.SEVERAL_DIGITS.value


class NotADigit(InvalidInput):
    """A letter, a symbol or a drawing: the server's model says it is no digit at all."""

    default_reason = Reason.NOT_A_DIGIT.value


class BadRequest(InvalidInput):
    """The server could not parse the request's bytes (a client built against another contract)."""

    default_reason = Reason.BAD_REQUEST.value


class Overloaded(DigitsError):
    """The server's queue is full (RESOURCE_EXHAUSTED): try again shortly."""

    default_reason = Reason.QUEUE_FULL.value


class Unauthenticated(DigitsError):
    """Missing or wrong DIGITS_API_TOKEN."""

    default_reason = Reason.UNAUTHENTICATED.value


class ServerUnavailable(DigitsError):
    """Server down or unreachable after the retries, draining, or the deadline ran out."""

    default_reason = Reason.UNAVAILABLE.value


class FeedbackDisabled(DigitsError):
    """The server keeps no feedback (started without --feedback-db): FAILED_PRECONDITION."""

    default_reason = Reason.FEEDBACK_DISABLED.value


_INVALID_BY_REASON: dict[str, type[DigitsError]] = {
    Reason.NO_DIGIT_FOUND: NoDigitFound,
    Reason.UNREADABLE_IMAGE: UnreadableImage,
    Reason.IMAGE_TOO_LARGE: ImageTooLarge,
    Reason.BAD_PIXELS: BadPixels,
    Reason.SEVERAL_DIGITS: SeveralDigits,
    Reason.NOT_A_DIGIT: NotADigit,
    Reason.BAD_REQUEST: BadRequest,
}


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    model_version: str
    pixels: bytes  # the 784-byte 28x28 image the model saw (MNIST convention)

    @property
    def runner_up(self) -> tuple[int, float]:
        """The second most likely digit and its probability (for "or maybe a 7?" replies)."""
        order = sorted(range(len(self.probabilities)), key=self.probabilities.__getitem__, reverse=True)
        second = order[1]
        return second, self.probabilities[second]


@dataclass(frozen=True)
class DigitRead(Prediction):
    """One digit of a Reading: a Prediction plus where it is in the picture."""

    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (x, y, width, height) in the upright image's pixels


@dataclass(frozen=True)
class Reading:
    """Every digit of a picture in reading order (`DigitsClient.read_image`)."""

    text: str  # e.g. "2026", "12 500", "3\n41": " " between groups, "\n" between lines
    confidence: float  # calibrated probability that `text` is right as a whole
    digits: list[DigitRead]  # one per digit character of `text`, in order
    model_version: str

    @property
    def doubtful(self) -> list[tuple[int, DigitRead]]:
        """(position in `digits`, digit) of each digit whose confidence is under 50%: the ones to ask about."""
        return [(i, d) for i, d in enumerate(self.digits) if d.confidence < 0.5]


def _reading(r: digits_pb2.ReadResponse) -> Reading:
    digits = [
        DigitRead(
            d.digit,
            d.confidence,
            list(d.probabilities),
            r.model_version,
            d.pixels,
            (d.box.x, d.box.y, d.box.width, d.box.height),
        )
        for d in r.digits
    ]
    return Reading(r.text, r.confidence, digits, r.model_version)


def _prediction(r: digits_pb2.PredictResponse) -> Prediction:
    return Prediction(r.digit, r.confidence, list(r.probabilities), r.model_version, r.pixels)


# The longest wait before sending a stream's QUEUE_FULL items again: doubling without a cap would, after a
# dozen busy answers, wait minutes for a server that is busy for seconds (gRPC's own retries are capped too).
MAX_BACKOFF = 2.0

_UNAVAILABLE_REASONS = {Reason.DEADLINE_EXCEEDED, Reason.UNAVAILABLE, Reason.SHUTTING_DOWN, Reason.NOT_READY}


def item_error(error: digits_pb2.ItemError) -> DigitsError:
    """One item's ItemError (PredictBatch, PredictStream) as the DigitsError Predict would have raised."""
    if error.reason == Reason.QUEUE_FULL:
        return Overloaded(error.message, error.reason, grpc.StatusCode.RESOURCE_EXHAUSTED)
    if error.reason in _UNAVAILABLE_REASONS:
        return ServerUnavailable(error.message, error.reason, grpc.StatusCode.UNAVAILABLE)
    if error.reason == Reason.INTERNAL:
        return DigitsError(error.message, error.reason, grpc.StatusCode.INTERNAL)
    kind = _INVALID_BY_REASON.get(error.reason, InvalidInput)
    return kind(error.message, error.reason, grpc.StatusCode.INVALID_ARGUMENT)


def error_from_rpc(exc: grpc.aio.AioRpcError | grpc.RpcError) -> DigitsError:
    """Turn a failed call into the matching DigitsError subclass."""
    code = exc.code()
    info = error_info(exc.trailing_metadata())
    return error_for(code, info.reason if info is not None else None, exc.details() or code.name)


def error_for(code: grpc.StatusCode, reason: str | None, message: str) -> DigitsError:
    """The one mapping from (status code, ErrorInfo reason) to a DigitsError; a PredictBatch item's
    error is an INVALID_ARGUMENT with its reason."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _INVALID_BY_REASON.get(reason, InvalidInput)(message, reason, code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if reason is None and "larger than max" in message:  # the transport's message-size limit
            return ImageTooLarge(message, Reason.MESSAGE_TOO_LARGE.value, code)
        return Overloaded(message, reason, code)
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason == Reason.FEEDBACK_DISABLED:
        return FeedbackDisabled(message, reason, code)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message, reason, code)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServerUnavailable(f"no answer within the deadline: {message}", Reason.DEADLINE_EXCEEDED.value, code)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ServerUnavailable(message, reason or code.name, code)
    return DigitsError(message, reason or code.name, code)


class DigitsClient:
    """One channel to the digits server; safe to share between many concurrent coroutines."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 5.0,
        retries: int = 3,
        token: str | None = None,
        root_certificates: bytes | None = None,
        tls: bool = False,
        backoff: float = 0.2,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._root_certificates = root_certificates
        self._tls = tls or root_certificates is not None
        self._channel: grpc.aio.Channel | None = None
        self._stub: digits_pb2_grpc.DigitClassifierStub | None = None
        self._has_stream: bool | None = None  # does the server have PredictStream? asked once

    def __repr__(self) -> str:  # never shows the token
        return f"DigitsClient(target={self.target!r}, tls={self._tls}, token={'set' if self._metadata else 'none'})"

    def _get_stub(self) -> digits_pb2_grpc.DigitClassifierStub:
        # Created lazily so the client can be built outside a running event loop.
        if self._stub is None:
            options = channel_options(self.retries, self.backoff)
            if self._tls:
                creds = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
                self._channel = grpc.aio.secure_channel(self.target, creds, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            self._stub = digits_pb2_grpc.DigitClassifierStub(self._channel)
        return self._stub

    async def predict_image(self, data: bytes) -> Prediction:
        """Classify an encoded image file (PNG, JPEG, ...); the server does the MNIST preprocessing."""
        if not data:
            raise UnreadableImage("the image is empty", Reason.UNREADABLE_IMAGE.value)
        return await self._predict(digits_pb2.PredictRequest(image=bytes(data)))

    async def read_image(self, data: bytes, *, expected: str = "") -> Reading:
        """Every digit in an encoded image, in reading order (Read): a number, several, several lines.
        Raises NoDigitFound when there is none, and the other DigitsErrors as `predict_image`.

        `expected`: the digits a user says the image holds (a correction). The image is then cut into
        exactly those digits, so each DigitRead's `pixels` is the piece to send as `feedback` with its
        digit of `expected`; raises InvalidInput (reason UNMATCHED_DIGITS) when no cut gives that many."""
        if not data:
            raise UnreadableImage("the image is empty", Reason.UNREADABLE_IMAGE.value)
        request = digits_pb2.ReadRequest(image=bytes(data), expected=expected)
        return _reading(await self._call(self._get_stub().Read, request))

    async def predict_pixels(self, pixels: bytes) -> Prediction:
        """Classify 784 bytes: 28x28, row-major, MNIST convention (0 background, 255 ink)."""
        # The server checks the length (BAD_PIXELS): the client does not hard-code the model's shape.
        return await self._predict(digits_pb2.PredictRequest(pixels=bytes(pixels)))

    async def predict_batch(
        self, *, pixels: Sequence[bytes] = (), images: Sequence[bytes] = ()
    ) -> list[Prediction | DigitsError]:
        """Classify many in one call (PredictBatch): all `pixels` items first, then all `images`.

        Returns one entry per item, in that order: its Prediction, or the DigitsError it got (not
        raised: one bad photo must not cost the others their answers). Raises only for what
        concerns the whole call: Overloaded, ServerUnavailable, BATCH_TOO_LARGE, ..."""
        items = [digits_pb2.PredictRequest(pixels=bytes(p)) for p in pixels]
        items += [digits_pb2.PredictRequest(image=bytes(i)) for i in images]
        if not items:
            return []
        reply = await self._call(self._get_stub().PredictBatch, digits_pb2.PredictBatchRequest(items=items))
        results: list[Prediction | DigitsError] = []
        for result in reply.results:
            if result.WhichOneof("outcome") == "prediction":
                results.append(_prediction(result.prediction))
            else:
                error = result.error
                results.append(error_for(grpc.StatusCode.INVALID_ARGUMENT, error.reason, error.message))
        return results

    async def predict_stream(
        self, *, pixels: Sequence[bytes] = (), images: Sequence[bytes] = (), batch_fallback: int = 64
    ) -> list[Prediction | DigitsError]:
        """Classify many on one PredictStream call: all `pixels` items first, then all `images`.

        Same results as `predict_batch` (one entry per item, in order; item errors returned, not
        raised), but the items flow through one long call, so any number fits and the server works
        on the first while the last are still being sent. `timeout` covers the whole stream. Items
        answered QUEUE_FULL (the server was busy) are sent again with backoff while time is left.
        A server without PredictStream (UNIMPLEMENTED) gets PredictBatch calls of `batch_fallback`
        items instead, and this client remembers it."""
        items = [digits_pb2.PredictRequest(pixels=bytes(p)) for p in pixels]
        items += [digits_pb2.PredictRequest(image=bytes(i)) for i in images]
        results: list[Prediction | DigitsError | None] = [None] * len(items)
        todo = list(range(len(items)))
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while todo:
            try:
                if self._has_stream is None:
                    left = max(0.0, deadline - time.monotonic())
                    self._has_stream = await stream_supported(self._get_stub(), timeout=left, metadata=self._metadata)
                if not self._has_stream:
                    break
                answers = await stream_results(
                    self._get_stub(),
                    [items[i] for i in todo],
                    timeout=max(0.0, deadline - time.monotonic()),
                    metadata=self._metadata,
                )
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            busy = []
            for i, answer in zip(todo, answers, strict=True):
                if answer is None:
                    results[i] = DigitsError("the server ended the stream without answering this item", "INTERNAL")
                elif answer.WhichOneof("outcome") == "prediction":
                    results[i] = _prediction(answer.prediction)
                else:
                    results[i] = item_error(answer.error)
                    if answer.error.reason == Reason.QUEUE_FULL:
                        busy.append(i)
            delay = min(self.backoff * (2**attempt), MAX_BACKOFF) * random.uniform(0.75, 1.25)
            if not busy or attempt >= self.retries or time.monotonic() + delay >= deadline:
                return results  # type: ignore[return-value]
            todo, attempt = busy, attempt + 1
            await asyncio.sleep(delay)
        for start in range(0, len(todo), batch_fallback):  # an older server: PredictBatch
            chunk = todo[start : start + batch_fallback]
            reply = await self._call(
                self._get_stub().PredictBatch, digits_pb2.PredictBatchRequest(items=[items[i] for i in chunk])
            )
            for i, result in zip(chunk, reply.results, strict=True):
                ok = result.WhichOneof("outcome") == "prediction"
                results[i] = _prediction(result.prediction) if ok else item_error(result.error)
        return results  # type: ignore[return-value]

    async def ping(self) -> str:
        """Reach the server without touching the model; returns the loaded model's version."""
        reply = await self._call(self._get_stub().Ping, digits_pb2.PingRequest())
        return reply.model_version

    async def feedback(
        self,
        pixels: bytes,
        predicted: int,
        correct: int,
        *,
        model_version: str = "",
        source: str = "api",
        user: str = "",
    ) -> str:
        """Store a correction of an answer: `pixels` and `model_version` from the Prediction, what it
        said, what the user says (0..9, or -1 for "not a digit"), and an opaque pseudonymous `user`
        (a keyed hash, never a raw platform id). Returns the record's id once it is on disk.
        Raises FeedbackDisabled when the server keeps no feedback, InvalidInput for a bad record."""
        request = digits_pb2.FeedbackRequest(
            pixels=bytes(pixels),
            predicted=predicted,
            correct=correct,
            model_version=model_version,
            source=source,
            user=user,
        )
        reply = await self._call(self._get_stub().Feedback, request)
        return reply.id

    async def forget(self, user: str) -> int:
        """Delete everything the server keeps for `user`; returns how many records went."""
        reply = await self._call(self._get_stub().Forget, digits_pb2.ForgetRequest(user=user))
        return reply.deleted

    async def _predict(self, request: digits_pb2.PredictRequest) -> Prediction:
        return _prediction(await self._call(self._get_stub().Predict, request))

    async def _call(self, method, request):
        # gRPC retries UNAVAILABLE itself (the channel's retry policy), each attempt on the next
        # replica, all within this one deadline.
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                # gRPC reports earlier attempts only when a server answered them; an UNAVAILABLE that
                # reaches us otherwise means the retry policy ran out.
                attempts = previous_attempts(exc.trailing_metadata()) + 1
                if attempts == 1:
                    attempts = min(self.retries + 1, MAX_ATTEMPTS)
                error.message = f"{self.target} unavailable after {attempts} attempt(s): {error.message}"
                error.args = (error.message,)
            raise error from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None

    async def __aenter__(self) -> DigitsClient:
        self._get_stub()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
