"""The bot flow, once for every platform: rate-limit, refuse before download, download, recognize.

Why: Telegram and Discord must behave the same (same limits, same refusals, same error handling).
`Recognizer.handle` owns the whole flow and returns an `Answer` of facts; a platform only picks the
attachment out of its message, supplies a `download()` callable, and renders the Answer.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import mimetypes
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from PIL import Image

from bots.annotate import annotated_png
from bots.answer import Answer, Outcome
from bots.chatstate import ChatState, MemoryChatState
from bots.config import CoreConfig
from bots.ratelimit import InMemoryRateLimiter, RateLimiter
from bots.replies import HELP_TEXT, LOW_CONFIDENCE_HINT
from client import (
    BadPixels,
    DigitsClient,
    DigitsError,
    ImageTooLarge,
    InvalidInput,
    NoDigitFound,
    NotADigit,
    Overloaded,
    Prediction,
    ServerUnavailable,
    SeveralDigits,
    UnreadableImage,
)

log = logging.getLogger(__name__)

SEEN_SIZE = 224  # the 28x28 model input, upscaled 8x so a chat client shows it crisply


@dataclass(frozen=True)
class Attachment:
    """What the platform reports about a file before anyone downloads it."""

    size: int | None
    mime_type: str | None = None
    filename: str | None = None
    still: bool = True  # False for animated stickers and videos


class DownloadFailed(Exception):
    """Raised by a platform's download callable when the file could not be fetched (the user may retry)."""


class FileTooLarge(DownloadFailed):
    """Raised by a platform's download callable when the platform refuses a file for its size."""


Download = Callable[[], Awaitable[bytes]]
Hook = Callable[[], Awaitable[None]]


def seen_png(pixels: bytes, size: int = SEEN_SIZE) -> bytes | None:
    """Upscale the square image the model saw (nearest neighbour, so pixels stay visible) to PNG.
    Its side comes from the bytes: the bots do not hard-code the model's input shape."""
    side = math.isqrt(len(pixels))
    if side == 0 or side * side != len(pixels):
        return None
    img = Image.frombytes("L", (side, side), pixels).resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def is_image_type(mime: str) -> bool:
    mime = mime.lower().split(";")[0].strip()
    return mime.startswith("image/") and mime not in {"image/svg+xml"}


class Recognizer:
    """One request, start to finish, as an Answer; never raises for bad input, outages or failed downloads."""

    HELP_TEXT: str = HELP_TEXT

    def __init__(
        self,
        client: DigitsClient,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        rate: int = 10,
        per_seconds: float = 60.0,
        low_confidence: float = 0.80,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.low_confidence = low_confidence
        self.limiter: RateLimiter = limiter or InMemoryRateLimiter(rate, per_seconds)

    async def handle(self, user_key: str, attachment: Attachment, download: Download, *,
                     on_accepted: Hook | None = None) -> Answer:
        """The whole flow. `on_accepted` runs once the request passed every check, just before the
        download (a typing indicator, Discord's deferral); refusals come back with `accepted=False`."""
        refusal = await self.rate_limited(user_key) or self.refuse(attachment)
        if refusal is not None:
            log.info("user=%s outcome=%s (refused before download)", user_key, refusal.outcome.value)
            return refusal
        started = time.perf_counter()
        if on_accepted is not None:
            await on_accepted()
        answer = await self._download_and_recognize(download)
        log.info(
            "user=%s outcome=%s digit=%s confidence=%s ms=%.0f", user_key, answer.outcome.value, answer.digit,
            f"{answer.confidence:.3f}" if answer.confidence is not None else None,
            (time.perf_counter() - started) * 1000,
        )
        return answer

    async def _download_and_recognize(self, download: Download) -> Answer:
        try:
            data = await download()
        except FileTooLarge as exc:
            log.warning("download refused for size: %s", exc)
            return self.too_large_answer()
        except DownloadFailed as exc:
            log.warning("download failed: %s", exc)
            return Answer(Outcome.DOWNLOAD_FAILED)
        except Exception:  # noqa: BLE001 - a platform bug while downloading must not cost the user a reply
            log.exception("unexpected error while downloading")
            return Answer(Outcome.DOWNLOAD_FAILED)
        return await self.recognize(data)

    # -- checks done before any download ---------------------------------------------------------
    def too_large_answer(self, *, accepted: bool = True) -> Answer:
        return Answer(Outcome.TOO_LARGE, limit_bytes=self.max_bytes, accepted=accepted)

    def refuse(self, attachment: Attachment) -> Answer | None:
        """Refuse from metadata alone (size the platform reports, declared type) so we never download junk."""
        if not attachment.still:
            return Answer(Outcome.NOT_STILL, accepted=False)
        size = attachment.size
        if size is not None and size > self.max_bytes:
            return self.too_large_answer(accepted=False)
        if size == 0:
            return Answer(Outcome.NOT_IMAGE, accepted=False)
        declared = attachment.mime_type or (mimetypes.guess_type(attachment.filename)[0]
                                            if attachment.filename else None)
        if declared and not is_image_type(declared):
            return Answer(Outcome.NOT_IMAGE, accepted=False)
        return None

    async def rate_limited(self, user_key: str) -> Answer | None:
        """Count one request for `user_key`; returns the polite answer when it is over the limit."""
        wait = await self.limiter.check(user_key)
        if not wait:
            return None
        return Answer(Outcome.RATE_LIMITED, retry_after=wait, accepted=False)

    # -- the request itself ------------------------------------------------------------------
    async def recognize(self, data: bytes) -> Answer:
        """Classify one image; every failure becomes its Answer (the bot keeps serving)."""
        if not data:
            return Answer(Outcome.NOT_IMAGE)
        if len(data) > self.max_bytes:
            return self.too_large_answer()
        try:
            prediction = await self.client.predict_image(data)
        except NoDigitFound:
            return Answer(Outcome.NO_DIGIT)
        except NotADigit:  # before InvalidInput: it is one
            return Answer(Outcome.NOT_A_DIGIT)
        except SeveralDigits:  # a number (before InvalidInput: it is one): read every digit
            return await self.read_number(data)
        except ImageTooLarge:  # before InvalidInput: it is one
            return self.too_large_answer()
        except (UnreadableImage, BadPixels, InvalidInput):
            return Answer(Outcome.NOT_IMAGE)
        except Overloaded:
            return Answer(Outcome.BUSY)
        except ServerUnavailable as exc:
            log.warning("digits server unavailable: %s", exc)
            return Answer(Outcome.UNAVAILABLE)
        except DigitsError as exc:
            log.error("digits server error %s: %s", getattr(exc, "reason", "?"), exc)
            return Answer(Outcome.UNAVAILABLE)
        except Exception:  # noqa: BLE001 - a bug in transport must not cost the user a reply
            log.exception("unexpected error while recognizing")
            return Answer(Outcome.UNAVAILABLE)
        return self.answer_for(prediction)

    async def read_number(self, data: bytes) -> Answer:
        """Every digit of a picture of a number (Read); the doubtful ones named with their runner-up."""
        try:
            reading = await self.client.read_image(data)
        except NoDigitFound:
            return Answer(Outcome.NO_DIGIT)
        except NotADigit:
            return Answer(Outcome.NOT_A_DIGIT)
        except Overloaded:
            return Answer(Outcome.BUSY)
        except DigitsError as exc:
            log.warning("digits server could not read a number: %s", exc)
            return Answer(Outcome.UNAVAILABLE)
        doubtful = tuple((i + 1, d.digit, d.runner_up[0]) for i, d in reading.doubtful)
        # The photo with each digit boxed: decoded and drawn off the event loop (a big photo takes a while).
        png = await asyncio.to_thread(annotated_png, data, [d.box for d in reading.digits],
                                      [str(d.digit) for d in reading.digits])
        return Answer(Outcome.NUMBER, confidence=reading.confidence, number=reading.text, doubtful=doubtful,
                      seen_png=png, model_version=reading.model_version,
                      digit_pixels=tuple((d.pixels, int(d.digit)) for d in reading.digits))

    def answer_for(self, prediction: Prediction) -> Answer:
        """The facts of a prediction; below `low_confidence` they include the runner-up and a hint."""
        digit, conf = int(prediction.digit), float(prediction.confidence)
        png = seen_png(prediction.pixels)
        seen = {"seen_png": png, "pixels": prediction.pixels, "model_version": prediction.model_version}
        if conf >= self.low_confidence:
            return Answer(Outcome.DIGIT, digit=digit, confidence=conf, **seen)
        other, other_conf = prediction.runner_up
        return Answer(Outcome.DIGIT, digit=digit, confidence=conf, runner_up=(int(other), float(other_conf)),
                      hint=LOW_CONFIDENCE_HINT, **seen)

    async def close(self) -> None:
        """Close the gRPC client and the limiter's connections."""
        await self.limiter.close()
        await self.client.close()


def make_client(config: CoreConfig) -> DigitsClient:
    """The gRPC client for `config` (it reconnects by itself when the server returns)."""
    return DigitsClient(config.digits_server, timeout=config.timeout, token=config.api_token)


def make_limiter(config: CoreConfig) -> RateLimiter:
    """Shared through Redis when DIGITS_REDIS_URL is set (across replicas), else kept in this process."""
    if config.redis_url:
        from bots.redis_store import RedisRateLimiter, connect

        return RedisRateLimiter(connect(config.redis_url), config.rate, config.per_seconds)
    return InMemoryRateLimiter(config.rate, config.per_seconds)


def make_chat_state(config: CoreConfig) -> ChatState:
    """Per-chat switches and once-per-period notices: in Redis with DIGITS_REDIS_URL, else in this process."""
    if config.redis_url:
        from bots.redis_store import RedisChatState, connect

        return RedisChatState(connect(config.redis_url))
    return MemoryChatState()


def make_recognizer(config: CoreConfig, client: DigitsClient | None = None) -> Recognizer:
    """A Recognizer wired to `config`; pass `client` to share one connection."""
    return Recognizer(
        client or make_client(config),
        max_bytes=config.max_bytes,
        low_confidence=config.low_confidence,
        limiter=make_limiter(config),
    )
