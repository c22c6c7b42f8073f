"""Read's answer from the model's rows: pick each glyph's likeliest reading, join the text, and say how
sure the whole reading is.

Why here and not in preprocessing: which way to cut a glyph (one wide "0", or a touching "11"?) is
decided by what the model reads in each alternative, so it can only be settled after inference.

Each digit of an alternative counts with its calibrated confidence times P(it is one digit at all): (1 -
P(not a digit)) from the not-a-digit gate and (1 - P(several digits)) from the several-digits head
(model/gate.py). Without the second factor a touching "23" left whole reads as one confident digit and
beats the cut into "2" and "3"; with it, the cut wins. The whole reading's confidence starts from the
product of the chosen digits' calibrated confidences times, per glyph, the share of the chosen cut among
the alternatives (`preprocessing.reading.best_option`, from the weighted scores): the probability that
every digit and every cut is right if they were independent. (The weights themselves are left out of
it: with them, the map below, fitted without them, measured 6.5-11.4% calibration error instead of
3.5%.) They are not (a blurry photo makes all digits doubtful together), so a fitted map corrects it: confidence =
sigmoid(A * logit(p) + B), fitted by maximum likelihood on numbers rendered from MNIST *validation*
digits (never the test digits the benchmark reports on): `benchmarks/preprocess_robustness.py --fit-confidence`.
A reading of one digit has a map of its own, fitted on lone digits: there the product is one calibrated
probability (times the share of its cut), nearly calibrated already, and the numbers' map, which pulls
products of several digits down, would say 96% of a digit that `Predict` reads at 99.7%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from digits.v1 import digits_pb2

from model.shape import NOT_A_DIGIT_INDEX, NUM_CLASSES, SEVERAL_DIGITS_INDEX
from preprocessing.reading import best_option

# sigmoid(A * logit(p) + B); (1, 0) would be the identity. Refit with the command in the module docstring.
# Fitted on validation digits, seed 1 (`--fit-confidence --numbers 50 --per-style 150`). CALIBRATION: 350
# numbers, all NUMBER_STYLES, fitted 26 Nov; refitted on 28 Nov's preprocessing it gives (0.4232, 0.6696), not
# taken: no better on the test numbers (ECE 5.5 / 2.9% vs 4.7 / 2.9% on seeds 0 / 1). CALIBRATION_ONE: 438
# lone photos, scans and sketches read as one digit, fitted 28 Nov.
CALIBRATION = (0.4944, 0.4123)
CALIBRATION_ONE = (0.6605, 1.1030)

# The batcher's answer per image: digit, confidence, the served row (10 probabilities, P(not a digit),
# P(several digits)); digit NOT_A_DIGIT_INDEX (with confidence P(not a digit)) for a glyph the gate refused.
Row = tuple[int, float, list[float]]
Slots = list[tuple[str, list[list[tuple[bytes, tuple[int, int, int, int]]]], list[float]]]


@dataclass(frozen=True)
class Chosen:
    text: str
    raw_confidence: float  # before the fitted map
    digits: list[tuple[bytes, tuple[int, int, int, int], Row]]
    # More than half of the chosen glyphs are, by the model's gate, no digit (a word, a drawing): Read
    # answers NOT_A_DIGIT rather than a "number" made of letters read as their nearest digits.
    refused: bool = False

    @property
    def confidence(self) -> float:
        """The whole reading's calibrated confidence, by the map for one digit or for several."""
        return calibrated(self.raw_confidence, CALIBRATION_ONE if len(self.digits) == 1 else CALIBRATION)


def calibrated(p: float, calibration: tuple[float, float] = CALIBRATION) -> float:
    a, b = calibration
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    z = a * math.log(p / (1.0 - p)) + b
    return 1.0 / (1.0 + math.exp(-z))


def as_digit(row: Row) -> tuple[Row, bool]:
    """A refused glyph read as its likeliest digit, with that digit's probability times P(it is a
    digit at all): inside a number it stays in the text, as a doubtful digit, not silently dropped."""
    digit, confidence, probabilities = row
    if digit < NUM_CLASSES:
        return row, False
    best = max(range(NUM_CLASSES), key=probabilities.__getitem__)
    if digit == SEVERAL_DIGITS_INDEX:  # flagged as digits run together: its cut alternatives decide (`one_digit`)
        return (best, probabilities[best], probabilities), False
    return (best, probabilities[best] * (1.0 - confidence), probabilities), True


def one_digit(row: Row) -> float:
    """P(the image is one digit), from the heads' columns of the served row; refused rows already
    carry (1 - P(not a digit)) in their confidence (`as_digit`)."""
    digit, _, probabilities = row
    if len(probabilities) <= NUM_CLASSES:
        return 1.0
    p = 1.0 - probabilities[SEVERAL_DIGITS_INDEX] if len(probabilities) > SEVERAL_DIGITS_INDEX else 1.0
    return p if digit == NOT_A_DIGIT_INDEX else p * (1.0 - probabilities[NOT_A_DIGIT_INDEX])


def choose(slots: Slots, rows: list[Row]) -> Chosen:
    """`rows` answer every image of every option of every slot, in that order."""
    k = 0
    text, confidence, digits, refused = "", 1.0, [], []
    for separator, options, priors in slots:
        answered, scores = [], []
        for option in options:
            part = rows[k : k + len(option)]
            answered.append([as_digit(row) for row in part])
            scores.append([row[1] * one_digit(raw) for (row, _), raw in zip(answered[-1], part, strict=True)])
            k += len(option)
        best, share = best_option(scores, priors)
        text += separator + "".join(str(row[0]) for row, _ in answered[best])
        confidence *= share * math.prod(row[1] for row, _ in answered[best])
        digits += [(px, box, row) for (px, box), (row, _) in zip(options[best], answered[best], strict=True)]
        refused += [r for _, r in answered[best]]
    return Chosen(text, confidence, digits, 2 * sum(refused) > len(refused))


def choose_expected(slots: Slots, rows: list[Row], expected: str) -> Chosen | None:
    """The cut of every glyph that reads `expected` (a user's correction: its digits, in reading order) best,
    or None when no cut of the glyphs gives that many digits.

    Why: a correction of a number is only worth keeping as training data when each digit's image is the
    right piece of the photo. A wrong reading is often a wrong cut (half a "0" read as "6", a touching "17"
    left whole as "7"), and labelling those pieces with the user's digits would teach the model noise. Here
    every alternative of every glyph is scored against the digits the user gave instead of the model's own
    likeliest ones: an option of m digits at position k of `expected` scores its width prior plus the log
    of each piece's probability of being expected[k + i] (times P(it is one digit at all), as `choose`);
    a glyph that the gate thinks more likely no digit than a digit (a stray mark) may also be left out, at
    the cost of log P(not a digit) of its whole image; a clear digit is never left out, so a reply a digit
    short of the picture is no match rather than a picture with a digit dropped. The best-scoring way
    through all glyphs (dynamic programming over the position in `expected`) gives the pieces; what the
    model reads in each stays in the answer, so the caller can send Feedback(pixels, predicted=that digit,
    correct=the user's digit) per piece.

    A correction with another count of digits than the model's own reading (a touching "11" the model read
    as one "1") is taken unless its cut is far-fetched: its score more than RECOUNT_MARGIN below the model's
    best reading (a typo, one digit too many for a clear number, cutting a clean "0" in two)."""
    want = [int(c) for c in expected if c.isdigit()]
    n = len(want)
    if n == 0:
        return None
    neg = -math.inf
    best: list[float] = [0.0] + [neg] * n  # best[k]: the best log-score with the first k digits read so far
    own_score, own_count = 0.0, 0  # the model's own reading: per glyph, its best option with its best digits
    back: list[list[tuple[int, int] | None]] = []  # per slot, per end position k: (start position, option or -1)
    k_row = 0
    spans = []  # per slot, per option: its rows
    for _separator, options, _priors in slots:
        spans.append([])
        for option in options:
            spans[-1].append(rows[k_row : k_row + len(option)])
            k_row += len(option)
    for (_separator, _options, priors), answered in zip(slots, spans, strict=True):
        nxt, step = [neg] * (n + 1), [None] * (n + 1)
        whole = answered[0][0] if answered and len(answered[0]) == 1 else None
        p_mark = _p_not_a_digit(whole) if whole is not None else 0.0
        skip = math.log(p_mark) if p_mark > 0.5 else neg
        own = [prior + sum(math.log(max(_p_digit(row, d) for d in range(NUM_CLASSES))) for row in part)
               for part, prior in zip(answered, priors, strict=True)]  # fmt: skip
        own_score += max(own)
        own_count += len(answered[max(range(len(own)), key=own.__getitem__)])
        for k in range(n + 1):
            if best[k] == neg:
                continue
            if skip > neg and best[k] + skip > nxt[k]:
                nxt[k], step[k] = best[k] + skip, (k, -1)
            for o, (part, prior) in enumerate(zip(answered, priors, strict=True)):
                end = k + len(part)
                if end > n:
                    continue
                score = best[k] + prior + sum(math.log(_p_digit(row, want[k + i])) for i, row in enumerate(part))
                if score > nxt[end]:
                    nxt[end], step[end] = score, (k, o)
        best = nxt
        back.append(step)
    if best[n] == neg or (n != own_count and best[n] < own_score - RECOUNT_MARGIN):
        return None
    picks: list[int] = []
    k = n
    for step in reversed(back):
        k, o = step[k]
        picks.append(o)
    picks.reverse()
    text, confidence, digits, separator = "", 1.0, [], ""
    for (sep, options, _priors), answered, o in zip(slots, spans, picks, strict=True):
        separator = max(separator, sep, key=SEPARATORS.index)  # a left-out glyph's line break is kept
        if o < 0:
            continue
        readings = [as_digit(row)[0] for row in answered[o]]
        text += ("" if not text else separator) + "".join(str(r[0]) for r in readings)
        separator = ""
        confidence *= math.prod(r[1] for r in readings)
        digits += [(px, box, r) for (px, box), r in zip(options[o], readings, strict=True)]
    return Chosen(text, confidence, digits) if digits else None


SEPARATORS = ("", " ", "\n")  # weakest first
# How much less likely (log) than the model's own reading a correction with another count of digits may be:
# only a far-fetched cut is refused. Measured with the shipped model on 28 Nov: touching pairs and 3-digit
# photos with a touching pair that were read with a wrong count came within 0.5-25 of it (most within 16);
# numbers read right and "corrected" with one digit too many (a typo) 4-38 below (a third beyond 20). The
# two overlap: no margin tells a typo from a missed digit, so the user is trusted short of the far-fetched.
RECOUNT_MARGIN = 20.0


def _p_not_a_digit(row: Row) -> float:
    probabilities = row[2]
    return probabilities[NOT_A_DIGIT_INDEX] if len(probabilities) > NOT_A_DIGIT_INDEX else 0.0


def _p_digit(row: Row, digit: int) -> float:
    """P(the image is the one digit `digit`), refused or not: its calibrated probability times P(one digit)."""
    probabilities = row[2]
    several = probabilities[SEVERAL_DIGITS_INDEX] if len(probabilities) > SEVERAL_DIGITS_INDEX else 0.0
    return max(probabilities[digit] * (1.0 - _p_not_a_digit(row)) * (1.0 - several), 1e-9)


def response(chosen: Chosen, model_version: str) -> digits_pb2.ReadResponse:
    return digits_pb2.ReadResponse(
        text=chosen.text,
        confidence=chosen.confidence,
        digits=[
            digits_pb2.DigitReading(
                digit=digit,
                confidence=confidence,
                probabilities=probabilities[:NUM_CLASSES],
                box=digits_pb2.Box(x=box[0], y=box[1], width=box[2], height=box[3]),
                pixels=pixels,
            )
            for pixels, box, (digit, confidence, probabilities) in chosen.digits
        ],
        model_version=model_version,
    )
