"""Notebook paper: find the printed lines (ruled lines, a grid, a margin line) and take them out of the ink.

Why: a ruled line crosses the digit and runs to the edge of the picture, so the digit and the line
become one stroke group that touches the frame, and is thrown away as the paper's edge (or read
with a bar through it). Printed lines are straight, thin, and much longer than any stroke of a
digit, and they come in one direction (two for a grid): the ink map is projected along each angle
near horizontal (and near vertical); a line is a narrow peak of the projection whose ink runs
along most of the picture. Its band is then replaced by the ink just above and below it, so a
stroke that crosses the line stays whole and the line itself disappears.
"""

from __future__ import annotations

import numpy as np

ANGLES = np.deg2rad(np.arange(-16.0, 16.5, 2.0))  # photos are rotated up to ~15 degrees
MIN_RUN = 0.4  # a line holds ink along at least this share of the picture's width (height)
MIN_COVER = 0.7  # ... spread over at least this share of it (not a few digits' bars in a row)
FLOOR = 0.05  # ink weaker than this is not looked at
STEP = 2  # lines are looked for on every STEP-th pixel of the map


def _lines(mask: np.ndarray) -> list[tuple[float, float]]:
    """(angle, offset) of each long straight line that runs near-horizontally across `mask`.

    Projection of the ink along y - tan(angle) * x for every angle: a straight line at that angle falls
    into one or two bins; bins holding at least MIN_RUN of the width, spread along it, are lines. Each
    line is looked for at every angle (perspective makes a page's lines only nearly parallel) and kept
    once, at its best angle."""
    h, w = mask.shape
    inner = np.zeros_like(mask)
    mh, mw = max(1, int(0.03 * h)), max(1, int(0.03 * w))
    inner[mh : h - mh, mw : w - mw] = mask[mh : h - mh, mw : w - mw]  # the desk past the paper's edge is no line
    ys, xs = np.nonzero(inner)
    run = MIN_RUN * (w - 2 * mw)
    if ys.size == 0 or ys.size < run:
        return []
    found: list[tuple[float, float, float]] = []  # (count, angle, offset)
    for a in ANGLES:
        r = np.round(ys - np.tan(a) * xs).astype(np.int64)
        lo = int(r.min())
        counts = np.bincount(r - lo)
        for b in np.nonzero(counts >= run)[0]:
            on = xs[(r - lo) == b]
            if np.unique((on - mw) * 16 // max(1, w - 2 * mw)).size / 16.0 >= MIN_COVER:
                found.append((float(counts[b]), float(a), float(b + lo)))
    lines: list[tuple[float, float]] = []
    centres: list[float] = []
    for _, a, off in sorted(found, reverse=True):  # strongest first; the same line at another angle is dropped
        centre = off + np.tan(a) * w / 2
        if all(abs(centre - c) > 3 for c in centres):
            lines.append((a, off))
            centres.append(centre)
    return lines


def _erase(raw: np.ndarray, angle: float, off: float) -> np.ndarray:
    """Take one line out of its band: pixels no darker than the line itself become the lower of the ink
    just above and below the band (a crossing stroke is ink on both sides); ink clearly darker than the
    line (a stroke written along it) stays. The line is first fitted at full resolution (angle +-1
    degree, offset +-3 px)."""
    h, w = raw.shape
    xs = np.arange(w)
    best = None
    for da in np.deg2rad(np.arange(-1.0, 1.01, 0.25)):
        t = np.tan(angle + da)
        for d in range(-3, 4):
            ys = np.clip(np.round(off + d + t * xs).astype(np.int64), 0, h - 1)
            score = float(raw[ys, xs].mean())
            if best is None or score > best[0]:
                best = (score, off + d, t)
    _, off, t = best
    centre = np.round(off + t * xs).astype(np.int64)
    rows = {d: np.clip(centre + d, 0, h - 1) for d in range(-7, 8)}
    level = {d: float(np.median(raw[rows[d], xs])) for d in range(-4, 5)}
    peak = max(level.values())
    band = [d for d in range(-4, 5) if level[d] > 0.2 * peak]
    if peak <= 0 or not band:
        return raw
    out = raw.copy()
    top, bottom = min(band), max(band)
    keep = np.minimum(raw[rows[top - 3], xs], raw[rows[bottom + 3], xs])
    for d in range(top, bottom + 1):
        y = centre + d
        ok = (y >= 0) & (y < h)
        v = out[y[ok], xs[ok]]
        line_only = v < 1.6 * peak + 0.05
        out[y[ok], xs[ok]] = np.where(line_only, np.minimum(v, keep[ok]), v)
    return out


def remove_lines(raw: np.ndarray) -> np.ndarray:
    """`raw` (ink strength, 0..1) without the printed lines of notebook paper; the same array when there are none."""
    h, w = raw.shape
    if h < 2 * STEP or w < 2 * STEP:
        return raw
    # looked for at half the size, every other pixel (lines are long: they survive), refined at full size
    pooled = raw[::STEP, ::STEP]
    med = float(np.median(raw[::3, ::3]))
    sigma = 1.4826 * float(np.median(np.abs(raw[::3, ::3] - med)))
    small = pooled > max(FLOOR, med + 4.0 * sigma)  # the low threshold `segment` uses for strokes
    found = {t: _lines(small.T if t else small) for t in (False, True)}
    if max(len(v) for v in found.values()) < 2:
        return raw  # one straight edge (the paper's, a table's) is not notebook paper: that has 2+ lines
    out = raw
    for transpose, lines in found.items():
        for angle, off in lines:
            full = STEP * off
            out = _erase(out.T, angle, full).T if transpose else _erase(out, angle, full)
    return np.ascontiguousarray(out)


__all__ = ["remove_lines"]
