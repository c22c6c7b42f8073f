"""Platform-independent bot core: image bytes in, a ready-to-send reply out.

Why: the Telegram and Discord adapters must behave the same (same wording, same limits, same
error handling), so everything except platform I/O lives here and both reuse it.
"""

from __future__ import annotations

import enum
import io
import logging
import math
import mimetypes
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv
from PIL import Image

from client import (
    BadPixels,
    DigitsClient,
    DigitsError,
    ImageTooLarge,
    InvalidInput,
    NoDigitFound,
    Overloaded,
    Prediction,
    ServerUnavailable,
    UnreadableImage,
)

log = logging.getLogger(__name__)

DEFAULT_SERVER = "127.0.0.1:50051"
SEEN_SIZE = 224  # the 28x28 model input, upscaled 8x so a chat client shows it crisply


class Outcome(enum.StrEnum):
    """What happened to one request; adapters may pick formatting (emoji, colour) from it."""

    DIGIT = "digit"
    NO_DIGIT = "no_digit"
    NOT_IMAGE = "not_image"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"


@dataclass(frozen=True)
class Answer:
    """A reply ready to send as plain text, plus the fields platforms may format themselves."""

    outcome: Outcome
    text: str
    digit: int | None = None
    confidence: float | None = None
    runner_up: tuple[int, float] | None = None
    seen_png: bytes | None = None


HELP_TEXT = (
    "Send me a photo of one handwritten digit (0-9) and I'll tell you which it is.\n"
    "For a good result: one digit per photo, dark pen on plain light paper, fill most of the frame, "
    "good light and no shadows. Photos, image files (PNG, JPEG, WebP) and stickers all work."
)
LOW_CONFIDENCE_HINT = "Tip: a closer, sharper photo of a single digit in dark ink on plain paper helps."
NO_DIGIT_TEXT = (
    "I couldn't find a digit in that image. Try a closer photo of one digit in dark ink on plain light paper."
)
NOT_IMAGE_TEXT = "That doesn't look like an image I can read. Please send a photo or a PNG, JPEG or WebP file."
UNAVAILABLE_TEXT = "The recognizer is unavailable right now. Please try again in a minute."
BUSY_TEXT = "I'm very busy right now. Please try again in a few seconds."


class RateLimiter:
    """Sliding-window limit per user: at most `rate` accepted requests in any `per_seconds` window.

    Refused requests are not counted, so a user who floods is let back in as soon as the window
    allows rather than being locked out for as long as they keep trying.
    """

    def __init__(self, rate: int, per_seconds: float, *, clock=time.monotonic) -> None:
        self.rate = rate
        self.per_seconds = per_seconds
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> float:
        """Count one request for `key`; returns 0 when allowed, else seconds until the next is allowed."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.per_seconds:
            hits.popleft()
        if len(hits) >= self.rate:
            return max(0.0, self.per_seconds - (now - hits[0]))
        hits.append(now)
        if len(self._hits) > 10_000:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        """Forget users with no request in the window so memory stays bounded."""
        stale = [k for k, h in self._hits.items() if not h or now - h[-1] >= self.per_seconds]
        for k in stale:
            del self._hits[k]


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


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"


class Recognizer:
    """Turns image bytes into an Answer via the digits server; never raises for bad input or outages."""

    HELP_TEXT: str = HELP_TEXT

    def __init__(
        self,
        client: DigitsClient,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        rate: int = 10,
        per_seconds: float = 60.0,
        low_confidence: float = 0.80,
    ) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.low_confidence = low_confidence
        self.limiter = RateLimiter(rate, per_seconds)

    # -- checks done before any download ---------------------------------------------------------
    def too_large_answer(self) -> Answer:
        return Answer(
            Outcome.TOO_LARGE,
            f"That file is too large (the limit is {_mb(self.max_bytes)}). Please send a smaller photo.",
        )

    def refuse_attachment(
        self, *, size: int | None, mime_type: str | None = None, filename: str | None = None
    ) -> Answer | None:
        """Refuse from metadata alone (size the platform reports, declared type) so we never download junk."""
        if size is not None and size > self.max_bytes:
            return self.too_large_answer()
        if size == 0:
            return Answer(Outcome.NOT_IMAGE, NOT_IMAGE_TEXT)
        declared = mime_type or (mimetypes.guess_type(filename)[0] if filename else None)
        if declared and not _is_image_type(declared):
            return Answer(Outcome.NOT_IMAGE, NOT_IMAGE_TEXT)
        return None

    def rate_limited(self, user_key: str) -> Answer | None:
        """Count one request for `user_key`; returns the polite answer when it is over the limit."""
        wait = self.limiter.check(user_key)
        if not wait:
            return None
        seconds = max(1, round(wait))
        return Answer(
            Outcome.RATE_LIMITED,
            f"You're sending images faster than I can read them. Please wait {seconds} s and try again.",
        )

    # -- the request itself ------------------------------------------------------------------
    async def recognize(self, data: bytes) -> Answer:
        """Classify one image; every failure becomes its friendly Answer (the bot keeps serving)."""
        if not data:
            return Answer(Outcome.NOT_IMAGE, NOT_IMAGE_TEXT)
        if len(data) > self.max_bytes:
            return self.too_large_answer()
        try:
            prediction = await self.client.predict_image(data)
        except NoDigitFound:
            return Answer(Outcome.NO_DIGIT, NO_DIGIT_TEXT)
        except (UnreadableImage, BadPixels):
            return Answer(Outcome.NOT_IMAGE, NOT_IMAGE_TEXT)
        except ImageTooLarge:
            return self.too_large_answer()
        except InvalidInput:
            return Answer(Outcome.NOT_IMAGE, NOT_IMAGE_TEXT)
        except Overloaded:
            return Answer(Outcome.BUSY, BUSY_TEXT)
        except ServerUnavailable as exc:
            log.warning("digits server unavailable: %s", exc)
            return Answer(Outcome.UNAVAILABLE, UNAVAILABLE_TEXT)
        except DigitsError as exc:
            log.error("digits server error %s: %s", getattr(exc, "reason", "?"), exc)
            return Answer(Outcome.UNAVAILABLE, UNAVAILABLE_TEXT)
        except Exception:  # noqa: BLE001 - a bug in transport must not cost the user a reply
            log.exception("unexpected error while recognizing")
            return Answer(Outcome.UNAVAILABLE, UNAVAILABLE_TEXT)
        return self.answer_for(prediction)

    def answer_for(self, prediction: Prediction) -> Answer:
        """Format a prediction; below `low_confidence` name the runner-up and give a hint."""
        digit, conf = int(prediction.digit), float(prediction.confidence)
        png = seen_png(prediction.pixels)
        if conf >= self.low_confidence:
            return Answer(Outcome.DIGIT, f"It's a {digit} ({conf:.0%} sure).", digit, conf, None, png)
        other, other_conf = prediction.runner_up
        runner = (int(other), float(other_conf))
        text = (
            f"I think it's a {digit} ({conf:.0%} sure), but it could be a {runner[0]} ({runner[1]:.0%}).\n"
            f"{LOW_CONFIDENCE_HINT}"
        )
        return Answer(Outcome.DIGIT, text, digit, conf, runner, png)


def _is_image_type(mime: str) -> bool:
    mime = mime.lower().split(";")[0].strip()
    return mime.startswith("image/") and mime not in {"image/svg+xml"}


# -- configuration shared by both bots ------------------------------------------------------------
@dataclass(frozen=True)
class CoreConfig:
    """Settings both bots share; tokens for each platform are read by the adapters themselves."""

    digits_server: str = DEFAULT_SERVER
    api_token: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    rate: int = 10
    per_seconds: float = 60.0
    low_confidence: float = 0.80
    timeout: float = 5.0


def load_env(path: str | os.PathLike | None = None) -> None:
    """Read `.env` from the working directory if present; real environment variables win."""
    env_file = Path(path) if path else Path.cwd() / ".env"
    if env_file.is_file():
        load_dotenv(env_file, override=False)


def config_from_env() -> CoreConfig:
    """Build the shared config from env vars (after reading `.env`)."""
    load_env()
    env = os.environ
    return CoreConfig(
        digits_server=env.get("DIGITS_SERVER") or DEFAULT_SERVER,
        api_token=env.get("DIGITS_API_TOKEN") or None,
        max_bytes=int(env.get("DIGITS_MAX_BYTES") or 10 * 1024 * 1024),
        rate=int(env.get("DIGITS_RATE_LIMIT") or 10),
        per_seconds=float(env.get("DIGITS_RATE_WINDOW") or 60.0),
        low_confidence=float(env.get("DIGITS_LOW_CONFIDENCE") or 0.80),
        timeout=float(env.get("DIGITS_TIMEOUT") or 5.0),
    )


def make_client(config: CoreConfig) -> DigitsClient:
    """The gRPC client for `config` (it reconnects by itself when the server returns)."""
    return DigitsClient(config.digits_server, timeout=config.timeout, token=config.api_token)


def make_recognizer(config: CoreConfig, client: DigitsClient | None = None) -> Recognizer:
    """A Recognizer wired to `config`; pass `client` to share one connection."""
    return Recognizer(
        client or make_client(config),
        max_bytes=config.max_bytes,
        rate=config.rate,
        per_seconds=config.per_seconds,
        low_confidence=config.low_confidence,
    )


# -- keeping secrets out of logs ------------------------------------------------------------------
class SecretFilter(logging.Filter):
    """Replaces each secret with '***' in every log record: HTTP libraries log URLs that embed bot tokens."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._pattern = re.compile("|".join(re.escape(s) for s in secrets if s)) if any(secrets) else None

    def redact(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def protect_secrets(*secrets: str | None) -> SecretFilter:
    """Install a SecretFilter on every root handler and quiet the loggers that print request URLs.

    Handler-level filters see records from all loggers (logger-level filters do not propagate),
    so the filter goes on the handlers; call this after logging is configured.
    """
    filt = SecretFilter([s for s in secrets if s])
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(filt)
    for name in ("httpx", "httpcore", "aiohttp.access", "aiohttp.client"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return filt
