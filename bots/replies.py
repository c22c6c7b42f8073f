"""What the bots say: every user-facing sentence, and the plain-text rendering of an Answer.

Why here: both platforms must word things the same way. An `Answer` carries facts (outcome, digit,
confidence, runner-up, hint, wait, limit); Telegram and Discord format those facts themselves
(bold, embeds) and fall back to `plain_text` for everything that needs no formatting.
"""

from __future__ import annotations

from bots.answer import Answer, Outcome

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
NOT_STILL_TEXT = "I can only read still images: please send a photo or a static sticker."
UNAVAILABLE_TEXT = "The recognizer is unavailable right now. Please try again in a minute."
BUSY_TEXT = "I'm very busy right now. Please try again in a few seconds."
DOWNLOAD_FAILED_TEXT = "I couldn't download that file. Please try sending it again."


def size_text(n: int) -> str:
    """A byte count as users think of it: '10 MB', '512 KB'."""
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"


def too_large_text(limit_bytes: int | None) -> str:
    limit = f" (the limit is {size_text(limit_bytes)})" if limit_bytes else ""
    return f"That file is too large{limit}. Please send a smaller photo."


def rate_limited_text(retry_after: float | None) -> str:
    seconds = max(1, round(retry_after or 1))
    return f"You're sending images faster than I can read them. Please wait {seconds} s and try again."


def digit_text(answer: Answer) -> str:
    """'It's a 7 (91% sure).', or the unsure form that names the runner-up and ends with the hint."""
    if answer.runner_up is None:
        return f"It's a {answer.digit} ({answer.confidence:.0%} sure)."
    other, other_conf = answer.runner_up
    text = (f"I think it's a {answer.digit} ({answer.confidence:.0%} sure), "
            f"but it could be a {other} ({other_conf:.0%}).")
    return f"{text}\n{answer.hint}" if answer.hint else text


_FIXED = {
    Outcome.NO_DIGIT: NO_DIGIT_TEXT,
    Outcome.NOT_IMAGE: NOT_IMAGE_TEXT,
    Outcome.NOT_STILL: NOT_STILL_TEXT,
    Outcome.UNAVAILABLE: UNAVAILABLE_TEXT,
    Outcome.BUSY: BUSY_TEXT,
    Outcome.DOWNLOAD_FAILED: DOWNLOAD_FAILED_TEXT,
}


def plain_text(answer: Answer, overrides: dict[Outcome, str] | None = None) -> str:
    """The whole reply as plain text; `overrides` lets a platform word a fixed outcome its own way."""
    if overrides and answer.outcome in overrides:
        return overrides[answer.outcome]
    if answer.outcome == Outcome.DIGIT:
        return digit_text(answer)
    if answer.outcome == Outcome.TOO_LARGE:
        return too_large_text(answer.limit_bytes)
    if answer.outcome == Outcome.RATE_LIMITED:
        return rate_limited_text(answer.retry_after)
    return _FIXED[answer.outcome]
