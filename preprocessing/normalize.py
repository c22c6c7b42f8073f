"""A digit's ink -> MNIST's framing: stroke width near MNIST's, fitted into 20x20, centered by mass.

MNIST was made by anti-aliased downscaling of binary NIST digits into a 20x20 box, then a shift that
puts the center of mass at the center of the 28x28 field. We do the same, working on a canvas
CANVAS/20 times finer than the output so that stroke width can be corrected in sub-pixel steps.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from model.shape import IMAGE_SIZE

SIZE = IMAGE_SIZE
BOX = 20
CANVAS = 80  # long side of the working canvas: 4x the 20-pixel box
CENTER = 14.0  # MNIST's mean center of mass (row and column), measured on its test set
# Stroke width on the canvas (4x the output scale). MNIST test digits measure 6.1..16.6 (3rd..97th
# percentile, median 10.0) with stroke_width(); only widths outside that band are corrected, so an
# MNIST-like digit passes through untouched and only hairlines and fat markers are changed.
WIDTH_BAND = (6.1, 16.6)
WIDTH_MEDIAN = 10.0
_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = np.ones((3, 3), dtype=bool)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Anti-aliased resize of a float image (Pillow widens the filter when shrinking)."""
    if a.shape == (height, width):
        return a
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def stroke_width(a: np.ndarray) -> float:
    """Mean stroke width in pixels: area over half the boundary length of the inked region."""
    m = a > 0.5
    area = int(m.sum())
    if area == 0:
        return 0.0
    # the boundary: inked pixels with a blank 4-neighbour (the frame counts as blank), i.e. m minus its
    # erosion by a cross; by slicing, as scipy's call costs more than the arithmetic on a digit-sized crop
    inner = np.zeros_like(m)
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    boundary = area - int(inner.sum())
    return 2.0 * area / max(boundary, 1)


def _morph(a: np.ndarray, radius: float, grow: bool) -> np.ndarray:
    """Grey dilation (grow) or erosion by a near-disk of fractional radius: alternating 3x3 steps."""
    op = ndi.grey_dilation if grow else ndi.grey_erosion
    whole, frac = int(radius), radius - int(radius)
    out = a
    for i in range(whole):
        out = op(out, footprint=_CROSS if i % 2 else _SQUARE, mode="constant", cval=0.0)
    if frac > 0:
        nxt = op(out, footprint=_CROSS if whole % 2 else _SQUARE, mode="constant", cval=0.0)
        out = out + frac * (nxt - out)
    return out


def normalize_width(canvas: np.ndarray) -> np.ndarray:
    """Bring a pen's hairline or a marker's blob towards MNIST's stroke width."""
    w = stroke_width(canvas)
    lo, hi = WIDTH_BAND
    if w <= 0 or lo <= w <= hi:
        return canvas
    if w < lo:
        radius = ((lo + WIDTH_MEDIAN) / 2 - w) / 2
        pad = int(radius) + 2  # room to grow outwards: strokes at the box's edge thicken both ways
        grown = _morph(np.pad(canvas, pad), radius, grow=True)
        ys, xs = np.nonzero(grown > 0.02)
        return grown[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    # thinning must not erase the thinner strokes of a variable-width digit: at most 35% of the width
    return _morph(canvas, min((w - (hi + WIDTH_MEDIAN) / 2) / 2, 0.35 * w / 2), grow=False)


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """(h, w) ink in [0, 1] -> (28, 28) uint8 in MNIST's convention."""
    h, w = ink.shape
    long = max(h, w)
    cw, ch = max(1, round(w * CANVAS / long)), max(1, round(h * CANVAS / long))
    canvas = np.clip(_resize(ink, cw, ch), 0.0, 1.0)
    fixed = normalize_width(canvas)
    if fixed is canvas:  # no width change: go straight from the crop, one resampling keeps the most detail
        source = ink
    else:
        source, (h, w) = fixed, fixed.shape
        long = max(h, w)
    return fit_and_center(source)


def fit_and_center(source: np.ndarray) -> np.ndarray:
    """MNIST's framing of an ink crop in [0, 1]: long side fitted into the 20-pixel box, brightest ink
    255, centre of mass at (14, 14). training/outliers.py frames its non-digits with it too, so they
    differ from digits in shape only, never in framing."""
    h, w = source.shape
    long = max(h, w)
    bw, bh = max(1, round(w * BOX / long)), max(1, round(h * BOX / long))
    small = np.clip(_resize(source, bw, bh), 0.0, None)
    peak = float(small.max())
    if peak <= 0:
        return np.zeros((SIZE, SIZE), np.uint8)
    small = np.clip(small / peak, 0.0, 1.0)
    # scipy's center_of_mass, computed the same way (float32 total, float64 moments), without its overhead
    total = small.sum()
    cy = (small * np.arange(bh, dtype=float)[:, None]).sum() / total
    cx = (small * np.arange(bw, dtype=float)[None, :]).sum() / total
    top = int(np.clip(round(CENTER - cy), 0, SIZE - bh))
    left = int(np.clip(round(CENTER - cx), 0, SIZE - bw))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top : top + bh, left : left + bw] = small
    return np.round(out * 255.0).astype(np.uint8)
