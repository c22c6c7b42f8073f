"""What the bots say: every user-facing sentence, and the plain-text rendering of an Answer.

Why here: both platforms must word things the same way. An `Answer` carries facts (outcome, digit,
confidence, runner-up, hint, wait, limit); Telegram and Discord format those facts themselves
(bold, embeds) and fall back to `plain_text` for everything that needs no formatting.

Every sentence is an English gettext message (`N_`); pass `tr` (bots.i18n.translator) to get it
in the user's language. The catalogs are in bots/locale/.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from bots.answer import Answer, Outcome
from bots.i18n import N_, Translate, english

HELP_TEXT = N_(
    "Send me a photo of a handwritten digit or number and I'll read it.\n"
    "For a good result: dark pen on plain light paper, fill most of the frame, "
    "good light and no shadows. Photos, image files (PNG, JPEG, WebP, HEIC) and stickers all work."
)
LOW_CONFIDENCE_HINT = N_("Tip: a closer, sharper photo of a single digit in dark ink on plain paper helps.")
NO_DIGIT_TEXT = N_(
    "I couldn't find a digit in that image. Try a closer photo of one digit in dark ink on plain light paper."
)
NOT_A_DIGIT_TEXT = N_(
    "That doesn't look like a digit to me. I read handwritten digits 0-9: please send a photo of one or of a number."
)
NOT_IMAGE_TEXT = N_("That doesn't look like an image I can read. Please send a photo or a PNG, JPEG or WebP file.")
NOT_STILL_TEXT = N_("I can only read still images: please send a photo or a static sticker.")
UNAVAILABLE_TEXT = N_("The recognizer is unavailable right now. Please try again in a minute.")
BUSY_TEXT = N_("I'm very busy right now. Please try again in a few seconds.")
DOWNLOAD_FAILED_TEXT = N_("I couldn't download that file. Please try sending it again.")
TOO_LARGE_LIMIT_TEXT = N_("That file is too large (the limit is {limit}). Please send a smaller photo.")
TOO_LARGE_TEXT = N_("That file is too large. Please send a smaller photo.")
RATE_LIMITED_TEXT = N_("You're sending images faster than I can read them. Please wait {seconds} s and try again.")
DIGIT_TEXT = N_("It's {digit} ({confidence} sure).")
UNSURE_TEXT = N_("I think it's {digit} ({confidence} sure), but it could be {other} ({other_confidence}).")
NUMBER_TEXT = N_("{number}, {confidence} sure.")
DOUBTFUL_DIGIT_TEXT = N_("Digit {position} could be {digit} or {other}.")


def size_text(n: int) -> str:
    """A byte count as users think of it: '10 MB', '512 KB'."""
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"


def too_large_text(limit_bytes: int | None, tr: Translate = english) -> str:
    if limit_bytes:
        return tr(TOO_LARGE_LIMIT_TEXT).format(limit=size_text(limit_bytes))
    return tr(TOO_LARGE_TEXT)


def rate_limited_text(retry_after: float | None, tr: Translate = english) -> str:
    return tr(RATE_LIMITED_TEXT).format(seconds=max(1, round(retry_after or 1)))


@dataclass(frozen=True)
class Style:
    """How one rendering marks up the same wording: the translated sentence is escaped first, then the
    digits and the hint are put in with their markup. Why: the wording (and its translations) exists once;
    plain text and Telegram's HTML differ only here."""

    escape: Callable[[str], str] = str
    digit: str = "{}"  # wraps each digit
    hint: str = "{}"  # wraps the low-confidence hint (its own line)


PLAIN = Style()
HTML = Style(escape=lambda text: html.escape(text, quote=False), digit="<b>{}</b>", hint="<i>{}</i>")


def digit_text(answer: Answer, tr: Translate = english, style: Style = PLAIN) -> str:
    """'It's a 7 (91% sure).', or the unsure form that names the runner-up and ends with the hint;
    `style=HTML` gives the same sentence with the digits in bold and the hint in italics."""
    if answer.runner_up is None:
        return style.escape(tr(DIGIT_TEXT)).format(digit=style.digit.format(answer.digit),
                                                   confidence=f"{answer.confidence:.0%}")
    other, other_conf = answer.runner_up
    text = style.escape(tr(UNSURE_TEXT)).format(
        digit=style.digit.format(answer.digit),
        confidence=f"{answer.confidence:.0%}",
        other=style.digit.format(other),
        other_confidence=f"{other_conf:.0%}",
    )
    return f"{text}\n{style.hint.format(style.escape(tr(answer.hint)))}" if answer.hint else text


def number_text(answer: Answer, tr: Translate = english, style: Style = PLAIN) -> str:
    """'2026, 94% sure.' (the number in bold with `style=HTML`), then one line per doubtful digit."""
    number = (answer.number or "").replace("\n", " / ")
    text = style.escape(tr(NUMBER_TEXT)).format(
        number=style.digit.format(style.escape(number)), confidence=f"{answer.confidence or 0.0:.0%}"
    )
    for position, digit, other in answer.doubtful:
        line = style.escape(tr(DOUBTFUL_DIGIT_TEXT)).format(
            position=position, digit=style.digit.format(digit), other=style.digit.format(other)
        )
        text += f"\n{line}"
    return text


_FIXED = {
    Outcome.NO_DIGIT: NO_DIGIT_TEXT,
    Outcome.NOT_A_DIGIT: NOT_A_DIGIT_TEXT,
    Outcome.NOT_IMAGE: NOT_IMAGE_TEXT,
    Outcome.NOT_STILL: NOT_STILL_TEXT,
    Outcome.UNAVAILABLE: UNAVAILABLE_TEXT,
    Outcome.BUSY: BUSY_TEXT,
    Outcome.DOWNLOAD_FAILED: DOWNLOAD_FAILED_TEXT,
}


def plain_text(answer: Answer, overrides: dict[Outcome, str] | None = None, tr: Translate = english) -> str:
    """The whole reply as plain text; `overrides` lets a platform word a fixed outcome its own way."""
    if overrides and answer.outcome in overrides:
        return tr(overrides[answer.outcome])
    if answer.outcome == Outcome.DIGIT:
        return digit_text(answer, tr)
    if answer.outcome == Outcome.NUMBER:
        return number_text(answer, tr)
    if answer.outcome == Outcome.TOO_LARGE:
        return too_large_text(answer.limit_bytes, tr)
    if answer.outcome == Outcome.RATE_LIMITED:
        return rate_limited_text(answer.retry_after, tr)
    return tr(_FIXED[answer.outcome])


# -- corrections (bots/feedback.py) ---------------------------------------------------------------
RIGHT_BUTTON = N_("Right")
WRONG_BUTTON = N_("Wrong")
NOT_A_DIGIT_BUTTON = N_("Not a digit")
WHICH_DIGIT = N_("Which digit is it?")
RECORDED_DIGIT = N_("Thanks! Recorded: it's {digit}.")
RECORDED_NOT_DIGIT = N_("Thanks! Recorded: not a digit.")
CONFIRMED_LINE = N_("✓ Confirmed: {digit}")
CORRECTED_LINE = N_("✎ Corrected: {digit}")
CORRECTED_NOT_DIGIT_LINE = N_("✎ Corrected: not a digit")
ALREADY_RECORDED = N_("Already recorded, thank you.")
NOT_YOURS = N_("Only the person who sent the picture can correct this answer.")
EXPIRED = N_("This answer can no longer be corrected.")
FEEDBACK_FAILED = N_("I couldn't save that right now. Please try again in a minute.")
FORGOTTEN = N_("Done: deleted {count} stored corrections of yours.")
FORGET_FAILED = N_("I couldn't reach the store right now. Please try /forget again in a minute.")
FEEDBACK_OFF = N_("Corrections are turned off on this bot: nothing is kept.")
PRIVACY_TEXT = N_(
    "If you correct an answer (right/wrong under a digit, or a reply with the right number), I keep the 28x28 "
    "image the model saw of each digit, its answer, your correction and a pseudonymous id (never your photo, name "
    "or account id), to make the model better.\n"
    "Send /forget to delete everything kept for you."
)
NUMBER_HINT = N_("Wrong? Reply to this message with the right number.")
RECORDED_NUMBER = N_("Thanks! Recorded: {number}.")
CONFIRMED_NUMBER_LINE = N_("✓ Confirmed: {number}")
CORRECTED_NUMBER_LINE = N_("✎ Corrected: {number}")
NUMBER_LENGTH = N_("Please reply with the whole number: as many digits as I read ({count}), nothing else.")


def recorded_text(label: int, tr: Translate = english) -> str:
    return tr(RECORDED_NOT_DIGIT) if label < 0 else tr(RECORDED_DIGIT).format(digit=label)


def correction_line(label: int, predicted: int | None, tr: Translate = english) -> str:
    """The line added to the edited answer."""
    if label < 0:
        return tr(CORRECTED_NOT_DIGIT_LINE)
    return tr(CONFIRMED_LINE if label == predicted else CORRECTED_LINE).format(digit=label)


def number_correction_line(read: str, corrected: str, tr: Translate = english) -> str:
    """The line added to a number answer once its sender replied with the right number."""
    return tr(CONFIRMED_NUMBER_LINE if read == corrected else CORRECTED_NUMBER_LINE).format(number=corrected)
