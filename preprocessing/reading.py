"""Every digit in a picture, in reading order: bytes -> lines of glyphs -> one or more 28x28 digits each.

Why a second path beside `preprocess`: people photograph numbers (a price, a house number, a code).
The ink map is the one `segment.locate` finds a single digit in (same polarity, paper and lighting
handling), so a digit reads the same alone or inside a number. On that map:

1. stroke groups: the connected pieces of ink (hysteresis threshold, as for one digit);
2. glyphs: pieces that lie above one another and share their columns are one digit (a 5's detached
   bar, a 4 or 7 written in two strokes, a pencil line broken in two);
3. lines: glyphs whose vertical extents overlap; lines top to bottom, glyphs left to right;
4. marks much smaller than the line's digits (a comma, a period, a dash) are separators, not digits:
   they, and a gap wider than about a digit's height, put a " " in the text; a new line puts "\\n";
5. touching digits: a glyph may hold several digits ("00", a joined "23"). Its alternative readings
   (whole, or cut into 2, 3, ... parts at the thinnest columns) are all sent on; the model scores each
   and the caller keeps the likeliest (`best_option`). Cutting by width alone is wrong too often: a
   "0" is as wide as a touching "11".

Each digit is framed for the model by `normalize.to_mnist`, exactly as a lone digit is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from preprocessing.decode import decode
from preprocessing.normalize import stroke_width, to_mnist
from preprocessing.segment import (
    MAX_WIDTH_RATIO,
    MIN_DIGIT_CONTRAST,
    InkMap,
    label_ink,
    locate,
)

MAX_DIGITS = 64  # digits read from one image at most: a page of text is not a number
MIN_HEIGHT = 0.55  # a glyph smaller than this share of its line's digit height both ways is a mark (comma, dot)
FLAT = 0.3  # ... and one lower than this share, however wide, is a dash or an underline
BASELINE = 0.75  # a period or comma sits below this share of the digit before it (from its top)
DASH = 0.2  # a dash is at least this many digit heights wide (and flat)
GAP = 1.0  # a horizontal gap wider than this many digit heights separates groups: " "
STACK_GAP = 0.3  # pieces this close vertically (in their height), sharing columns, are one digit
SHARE = 0.4  # ... sharing at least this share of the narrower piece's columns
BAR = 0.35  # a piece this flat next to a glyph's height, across its columns, is a bar of that digit
SHARE_BESIDE = 0.6  # pieces side by side are one digit only when one lies within the other's columns
SPLIT = 0.7  # a glyph this many digit heights wide is offered cuts (touching digits); the model's heads decide
SPLIT_PART = 0.65  # cut into at most width / (this many heights) parts
MIN_PART = 0.22  # a cut part is at least this many digit heights wide (a "1" is ~0.3)
MAX_PART = 1.3  # ... and at most this many: wider is not one digit
MAX_PARTS = 6  # a glyph holds at most this many touching digits
SPECK = 0.03  # pieces with less ink than this share of the strongest piece are specks
WIDTH_MEAN, WIDTH_SD = 0.9, 0.2  # a lone glyph's width in digit heights (pen included), for `width_prior`
WIDTH_WEIGHT = 1.0  # weight of the width prior against the model's log-confidences
LINE_HEIGHT = 0.5  # a line's digits are at least this share of the tallest line's
SPECK_LINE = 0.15  # ... and its heaviest glyph has at least this share of the heaviest glyph's ink
CLEAR = 0.6  # "clearly several digits": two glyphs at least this share of the tallest one's height
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Digit:
    pixels: np.ndarray  # (28, 28) uint8 in MNIST's convention
    box: tuple[int, int, int, int]  # (x, y, width, height) in the upright image's pixels


@dataclass(frozen=True)
class Slot:
    """One glyph of the text: the separator before it and its alternative readings."""

    separator: str  # "" (same group), " " (a gap or a mark before it), "\n" (first on a new line)
    options: tuple[tuple[Digit, ...], ...]  # whole, then cut into 2, 3, ... digits (only plausible cuts)
    priors: tuple[float, ...]  # log-prior of each option from the glyph's width alone (`width_prior`)
    width: float  # the glyph's width in its line's digit heights


@dataclass(frozen=True)
class _Piece:
    box: tuple[int, int, int, int]  # (left, top, right, bottom), working pixels
    mass: float
    label: int


@dataclass
class _Glyph:
    pieces: list[_Piece]
    box: tuple[int, int, int, int]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def mass(self) -> float:
        return sum(p.mass for p in self.pieces)


@dataclass(frozen=True)
class _Map:
    raw: np.ndarray
    labels: np.ndarray
    pieces: list[_Piece]
    t_low: float
    frame: bool


def _pieces(m: InkMap) -> _Map:
    """The stroke groups of the map: thresholds with hysteresis, frame bands and specks dropped.

    The same statistics as `segment._select`, so that what counts as ink is the same for one digit
    and for a number."""
    raw = m.raw
    if m.parts is not None:  # `segment` labelled the same map with the same thresholds already
        groups = m.parts.groups
        strongest = max((g[1] for g in groups), default=0.0)
        pieces = [_Piece(box, mass, label) for box, mass, label in groups if mass >= SPECK * strongest]
        return _Map(raw, m.parts.labels, pieces, m.parts.t_low, m.frame)
    found = label_ink(raw, m.min_seed, m.frame)
    labels, t_low, slices, mass, ok = found.labels, found.t_low, found.slices, found.mass, found.ok
    if not ok.any():
        return _Map(raw, labels, [], t_low, m.frame)
    strongest = float(mass[ok].max())
    pieces = [
        _Piece((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop), float(mass[i]), i + 1)
        for i, sl in enumerate(slices)
        if ok[i] and mass[i] >= SPECK * strongest
    ]
    return _Map(raw, labels, pieces, t_low, m.frame)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return min(a[1], b[1]) - max(a[0], b[0])


def _same_digit(a: _Glyph, b: _Glyph) -> bool:
    """Pieces of one digit: one above the other (or crossing), sharing most of the narrower one's columns."""
    narrow, other = (a, b) if a.width <= b.width else (b, a)
    shared = _overlap((narrow.box[0], narrow.box[2]), (other.box[0], other.box[2]))
    beside = _overlap((a.box[1], a.box[3]), (b.box[1], b.box[3]))
    if beside >= 0.5 * min(a.height, b.height):  # side by side: only a stroke within the other's columns
        low, tall = (a, b) if a.height <= b.height else (b, a)
        if low.height < BAR * tall.height and shared >= SHARE * low.width:
            return True  # a flat bar across the other's columns: a 5's detached top, a 7's crossbar
        centre = (narrow.box[0] + narrow.box[2]) / 2
        return shared >= SHARE_BESIDE * narrow.width and other.box[0] <= centre <= other.box[2]
    return shared >= SHARE * narrow.width and -beside <= STACK_GAP * max(a.height, b.height)


def _glyphs(pieces: list[_Piece]) -> list[_Glyph]:
    glyphs = [_Glyph([p], p.box) for p in sorted(pieces, key=lambda p: -p.mass)]
    merged = True
    while merged:
        merged = False
        for i in range(len(glyphs)):
            for j in range(i + 1, len(glyphs)):
                a, b = glyphs[i], glyphs[j]
                if _same_digit(a, b):
                    box = (
                        min(a.box[0], b.box[0]),
                        min(a.box[1], b.box[1]),
                        max(a.box[2], b.box[2]),
                        max(a.box[3], b.box[3]),
                    )
                    glyphs[i] = _Glyph(a.pieces + b.pieces, box)
                    del glyphs[j]
                    merged = True
                    break
            if merged:
                break
    return glyphs


def _lines(glyphs: list[_Glyph]) -> list[list[_Glyph]]:
    """Glyphs chained into lines left to right: each joins the line whose last glyph it overlaps most
    vertically, so a number photographed at a slant stays one line. Lines top to bottom."""
    lines: list[list[_Glyph]] = []
    for g in sorted(glyphs, key=lambda g: (g.box[0], -g.height)):
        best, best_share = None, 0.4
        for line in lines:
            tallest = max(t.height for t in line)
            tail = next(t for t in reversed(line) if t.height >= 0.5 * tallest)  # marks do not steer the line
            top, bottom = tail.box[1], tail.box[3]
            if g.height < MIN_HEIGHT * tail.height:  # a mark: a comma hangs below the line, a dash floats in it
                top, bottom = top - 0.3 * tail.height, bottom + 0.3 * tail.height
            share = _overlap((top, bottom), (g.box[1], g.box[3])) / max(1, min(g.height, tail.height))
            if share >= best_share:
                best, best_share = line, share
        if best is None:
            lines.append([g])
        else:
            best.append(g)
    return sorted(lines, key=lambda line: float(np.median([(g.box[1] + g.box[3]) / 2 for g in line])))


def _mark(g: _Glyph, height: float) -> bool:
    """A comma, a period or a dash: small both ways, or flat. (A wide, short "6" or "0" is a digit.)"""
    return max(g.height, g.width) < MIN_HEIGHT * height or g.height < FLAT * height


def _separator(g: _Glyph, before: _Glyph, height: float) -> bool:
    """A mark that separates groups: a period or comma (on the line's baseline or below it) or a dash (flat and
    wide, half-way up). A dot half-way up between two digits is a speck of dust or a crumb of a stroke, and a
    bar along the top is a digit's detached stroke: neither is punctuation."""
    centre = ((g.box[1] + g.box[3]) / 2 - before.box[1]) / max(1, before.height)  # 0 at the top, 1 at the foot
    low, middle = centre >= BASELINE, 0.25 <= centre < BASELINE
    dash = g.width >= 1.5 * max(1, g.height) and g.width >= DASH * height and middle
    return low or dash


def _digit_height(line: list[_Glyph]) -> float:
    tallest = max(g.height for g in line)
    return float(np.median([g.height for g in line if g.height >= 0.5 * tallest]))


def _members(labels: np.ndarray, g: _Glyph) -> np.ndarray:
    """The pixels of `labels` that belong to `g`'s pieces (np.isin, without its cost for one to three labels)."""
    out = labels == g.pieces[0].label
    for p in g.pieces[1:]:
        out |= labels == p.label
    return out


def _dilate(m: np.ndarray) -> np.ndarray:
    """Binary dilation by a 3x3 square (8-neighbours), by slicing: a glyph is framed up to ~20 times per Read."""
    rows = m.copy()
    rows[1:] |= m[:-1]
    rows[:-1] |= m[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


class _Framer:
    """Glyph (or part of one) -> a Digit: its ink, framed like MNIST, and its box in image pixels."""

    def __init__(self, mp: _Map, scale: tuple[float, float], size: tuple[int, int]) -> None:
        self.mp, self.scale, self.size = mp, scale, size

    def __call__(self, g: _Glyph, x0: int | None = None, x1: int | None = None) -> Digit | None:
        left, top, right, bottom = g.box
        left, right = max(left, x0 if x0 is not None else left), min(right, x1 if x1 is not None else right)
        h, w = self.mp.raw.shape
        t0, l0, b0, r0 = max(0, top - 1), max(0, left - 1), min(h, bottom + 1), min(w, right + 1)
        selected = _members(self.mp.labels[t0:b0, l0:r0], g)
        if x0 is not None:  # a cut: the neighbour's strokes beyond the cut are not this digit's
            selected[:, : max(0, left - l0)] = False
            selected[:, right - l0 :] = False
        if not selected.any():
            return None
        crop = self.mp.raw[t0:b0, l0:r0]
        core = float(np.percentile(crop[selected], 90))
        if self.mp.frame and core < MIN_DIGIT_CONTRAST:
            return None
        mask = _dilate(selected)
        if x0 is not None:
            mask[:, : max(0, left - l0)] = False
            mask[:, right - l0 :] = False
        floor = 0.5 * self.mp.t_low
        ink = np.clip((crop - floor) / max(core - floor, 1e-3), 0.0, 1.0) * mask
        ys, xs = np.nonzero(mask & (crop > floor))
        if ys.size == 0:
            return None
        y1, y2, x1_, x2 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        pixels = to_mnist(ink[y1:y2, x1_:x2].astype(np.float32))
        if not pixels.any():
            return None
        sx, sy = self.scale
        width, height = self.size
        bx, by = max(0, int((l0 + x1_) * sx)), max(0, int((t0 + y1) * sy))
        bx2, by2 = min(width, max(bx + 1, round((l0 + x2) * sx))), min(height, max(by + 1, round((t0 + y2) * sy)))
        return Digit(pixels, (bx, by, bx2 - bx, by2 - by))


def _profile(mp: _Map, g: _Glyph) -> np.ndarray:
    left, top, right, bottom = g.box
    sel = _members(mp.labels[top:bottom, left:right], g)
    return ndi.uniform_filter1d((mp.raw[top:bottom, left:right] * sel).sum(axis=0), 3)


def _cuts(profile: np.ndarray, n: int, height: float) -> list[int] | None:
    """n-1 cut columns at the thinnest ink near equal shares of the width, or None when no cut fits."""
    w = profile.size
    cuts, start = [], 0
    for k in range(1, n):
        target = k * w / n
        lo, hi = max(start + int(MIN_PART * height), int(target - 0.3 * w / n)), int(target + 0.3 * w / n) + 1
        hi = min(hi, w - int(MIN_PART * height) * (n - k))
        if hi <= lo:
            return None
        c = lo + int(np.argmin(profile[lo:hi] + 1e-3 * np.abs(np.arange(lo, hi) - target)))
        cuts.append(c)
        start = c
    return cuts


def _near(a: list[int], b: list[int], height: float) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.08 * height


def width_prior(ratio: float, n: int) -> float:
    """log p(width | n digits), width in digit heights: n touching digits span about n * WIDTH_MEAN,
    give or take WIDTH_SD * sqrt(n) (fitted on numbers rendered from MNIST validation digits)."""
    sd = WIDTH_SD * math.sqrt(n)
    return -0.5 * ((ratio - WIDTH_MEAN * n) / sd) ** 2 - math.log(sd)


def _options(mp: _Map, g: _Glyph, height: float, frame: _Framer) -> tuple[tuple[Digit, ...], ...]:
    options: list[tuple[Digit, ...]] = []
    whole = frame(g)
    if whole is not None:
        options.append((whole,))
    lo = max(2, math.ceil(g.width / (MAX_PART * height)))
    hi = min(MAX_PARTS, max(lo, round(g.width / (SPLIT_PART * height))))
    if g.width >= SPLIT * height:
        profile = _profile(mp, g)
        for n in range(lo, hi + 1):
            # two ways to cut: at the thinnest ink (strokes that merely touch), and at equal widths (digits
            # that overlap, like "00", where the overlap is the thickest column, not the thinnest)
            candidates = [_cuts(profile, n, height), [round(k * g.width / n) for k in range(1, n)]]
            if n == 2:  # a narrow digit beside a wide one ("13"): the thinnest column anywhere a part fits
                edge = int(MIN_PART * height)
                if g.width - edge > edge:
                    candidates.append([edge + int(np.argmin(profile[edge : g.width - edge]))])
            for i, cuts in enumerate(candidates):
                if cuts is None or any(c is not None and _near(cuts, c, height) for c in candidates[:i]):
                    continue
                bounds = [0, *cuts, g.width]
                parts = [frame(g, g.box[0] + a, g.box[0] + b) for a, b in zip(bounds, bounds[1:], strict=False)]
                if all(p is not None for p in parts):
                    options.append(tuple(parts))  # type: ignore[arg-type]
    return tuple(options)


def _keep(mp: _Map, g: _Glyph) -> bool:
    """Photos: a solid blob (glare, a shadow) is not a digit, whatever its size (its core is as wide as it is)."""
    if not mp.frame:
        return True
    left, top, right, bottom = g.box
    sel = _members(mp.labels[top:bottom, left:right], g)
    if not sel.any():
        return False
    # the strokes' cores: a small digit's blurred fringe is as wide as its strokes and would pass for a blob
    crop = mp.raw[top:bottom, left:right]
    core = sel & (crop > 0.5 * float(np.percentile(crop[sel], 90)))
    return stroke_width(core) <= MAX_WIDTH_RATIO * max(sel.shape)


def slots(mp: _Map, scale: tuple[float, float], size: tuple[int, int]) -> list[Slot]:
    """The glyphs of the map as text slots, in reading order."""
    if not mp.pieces:
        return []
    frame = _Framer(mp, scale, size)
    out: list[Slot] = []
    min_extent = max(6, 0.04 * max(mp.raw.shape))
    lines = _lines(_glyphs(mp.pieces))
    heights = [_digit_height(line) for line in lines]
    heaviest = max(g.mass for line in lines for g in line)
    for line, height in zip(lines, heights, strict=True):
        if height < max(min_extent, LINE_HEIGHT * max(heights)) or max(g.mass for g in line) < SPECK_LINE * heaviest:
            continue  # specks and smudges in the margin are not a line of text
        separator = "\n" if out else ""
        previous: _Glyph | None = None
        for g in line:
            if _mark(g, height) or not _keep(mp, g):
                if previous is not None and _separator(g, previous, height):
                    separator = separator or " "  # a comma, period or dash between digits is a gap
                continue
            if previous is not None and g.box[0] - previous.box[2] > GAP * height:
                separator = separator or " "
            options = _options(mp, g, height, frame)
            if not options:
                continue
            priors = tuple(WIDTH_WEIGHT * width_prior(g.width / height, len(o)) for o in options)
            out.append(Slot(separator, options, priors, g.width / height))
            separator, previous = "", g
            if len(out) >= MAX_DIGITS:
                return out
    return out


def read(data: bytes, *, max_pixels: int) -> list[Slot]:
    """Every digit-like glyph in the image, in reading order; [] when there is none.

    Raises UnreadableImageError or ImageTooLargeError (PreprocessError) for bad bytes, as `preprocess` does."""
    decoded = decode(data, max_pixels)
    _, ink_map = locate(decoded.gray)
    return slots(_pieces(ink_map), decoded.scale, decoded.size)


def several_digits(ink_map: InkMap) -> bool:
    """True when the map clearly holds more than one digit: two separate glyphs of a digit's height side
    by side and close together, each with a real share of the ink (not a stray mark beside one digit,
    not the paper's edge far from it)."""
    mp = _pieces(ink_map)
    if len(mp.pieces) < 2:
        return False
    glyphs = _glyphs(mp.pieces)
    if len(glyphs) < 2:
        return False
    tallest = max(g.height for g in glyphs)
    heaviest = max(g.mass for g in glyphs)
    big = [g for g in glyphs if g.height >= CLEAR * tallest and g.mass >= 0.25 * heaviest and _keep(mp, g)]
    if tallest < max(6, 0.04 * max(mp.raw.shape)):
        return False
    for i, a in enumerate(big):  # two of them side by side, close together: a number
        for b in big[i + 1 :]:
            beside = _overlap((a.box[1], a.box[3]), (b.box[1], b.box[3])) >= 0.5 * min(a.height, b.height)
            gap = max(a.box[0], b.box[0]) - min(a.box[2], b.box[2])
            if beside and gap <= 1.5 * max(a.height, b.height):
                return True
    return False


def best_option(scores: list[list[float]], priors: list[float] | tuple[float, ...]) -> tuple[int, float]:
    """Which alternative of a slot to keep, from each option's digit confidences and its width prior,
    and how sure that choice is.

    An option's log-score is the sum of its digits' log-confidences plus its prior; the choice's
    probability is its share of the options' scores (softmax over log-scores), so two equally good
    ways to cut a glyph make the reading doubtful."""
    logs = np.array([float(np.sum(np.log(np.clip(s, 1e-9, 1.0)))) + p for s, p in zip(scores, priors, strict=True)])
    best = int(np.argmax(logs))
    share = float(np.exp(logs[best] - np.logaddexp.reduce(logs)))
    return best, share


__all__ = ["Digit", "Slot", "best_option", "read", "several_digits", "slots"]
