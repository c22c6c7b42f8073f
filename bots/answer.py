"""The result of one bot request, as facts: what happened, and the numbers a reply is made of.

Why structured: each platform renders the same facts its own way (Telegram HTML, a Discord embed),
so nothing downstream has to parse a sentence back apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """What happened to one request; platforms pick wording and formatting (emoji, colour) from it."""

    DIGIT = "digit"
    NUMBER = "number"  # several digits, read with Read: `number` holds the text
    NO_DIGIT = "no_digit"
    NOT_A_DIGIT = "not_a_digit"  # a letter, a symbol, a drawing: the server's model refused it
    NOT_IMAGE = "not_image"
    NOT_STILL = "not_still"  # an animated sticker / video: only still images can be read
    TOO_LARGE = "too_large"
    DOWNLOAD_FAILED = "download_failed"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"


@dataclass(frozen=True)
class Answer:
    """One reply's facts. `accepted` is False for refusals made before any download (rate limit, size, type)."""

    outcome: Outcome
    digit: int | None = None
    confidence: float | None = None
    runner_up: tuple[int, float] | None = None  # set only when the model is unsure
    hint: str | None = None  # how to take a better photo; set with runner_up
    seen_png: bytes | None = None  # DIGIT: the model's 28x28 input, enlarged; NUMBER: the photo, each digit boxed
    retry_after: float | None = None  # RATE_LIMITED: seconds until the user may send again
    limit_bytes: int | None = None  # TOO_LARGE: the size limit
    accepted: bool = True
    pixels: bytes | None = None  # the 784-byte image the model saw: what a correction sends back
    model_version: str | None = None
    number: str | None = None  # NUMBER: the digits read, e.g. "2026" ("\n" between lines)
    doubtful: tuple[tuple[int, int, int], ...] = ()  # NUMBER: (position from 1, digit, runner-up) of unsure digits
    digit_pixels: tuple[tuple[bytes, int], ...] = ()  # NUMBER: (28x28 image the model saw, digit read) of each digit
