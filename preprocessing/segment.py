"""Find the digit in a grayscale image: polarity, background, ink, and the strokes that belong together.

Why not one global threshold: phone photos have lighting gradients, vignetting, shadows and tinted
paper, so "dark" means darker than the paper *around it*. The paper is estimated by a morphological
closing (strokes are removed, smooth lighting kept), and ink is measured relative to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from preprocessing.normalize import stroke_width
from preprocessing.paper_lines import remove_lines

MIN_CONTRAST = 0.12  # weakest ink (relative to the paper) that can seed a digit: light pencil is ~0.25
MIN_CONTRAST_WIDE = 0.3  # the wide closing leaves lighting residue: it must see marker-dark ink
MIN_DIGIT_CONTRAST = 0.2  # in photos, the digit's strokes typically: light pencil ~0.3, paper blotches < 0.18
MAX_WIDTH_RATIO = 0.26  # in photos, strokes are at most this wide next to the digit's size (pens 0.05-0.16)
# ... or this wide when the ink is marker-dark (a bold marker digit written small: 0.27-0.30); a round blob
# (glare, a shadow) is 0.5, a 2:1 oval 0.32; a blotch of paper texture that wide is faint
MAX_WIDTH_BOLD, BOLD_CONTRAST = 0.31, 0.6
MAX_WIDTH_FLAT = 0.47  # on a flat page strokes may be wider (a bold MNIST "3": 0.45); a filled square is 0.5
EDGE_CONTRAST = 0.4  # near a photo's frame a mark must be this dark to count: pen, not shading
KERNELS = (0.08, 0.3)  # background closing widths, as a share of the long side: narrow, then wide
FLAT_LOW, FLAT_SEED = 0.3, 0.5  # on a flat page, thresholds at most this (the noise estimate can only inflate them)
LOW_FLOOR = 0.06  # weakest ink a stroke may fade to and still belong to the digit
DETACH = 0.3  # in a band along a photo's frame, ink under this share of its darkest is cut where it leaves ...
DETACH_REACH = 2  # ... the strong ink by more than this many pixels (a faint line joining a digit to the frame)
TAIL = 0.75  # ... and from a digit: its faint pixels far from strong ink, when they stretch its box this much
MIN_EXTENT = 0.06  # a digit spans at least this share of the image's long side ...
MIN_EXTENT_PX = 6  # ... and at least this many working pixels
CROP_CONTRAST = 100.0  # a small crop with ink this far from its paper is flat whatever its spread (shading: < 80)
WHOLE_SIDE = 0.85  # on a flat page, strong ink running along this share of a side may be a frame or the page's edge
NEAR_SIDES = 0.85  # ... and is, when this much of its group hugs the sides it so runs along
SMALL = 64  # images this small (dataset-style crops) take their paper's polarity from the border
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Ink:
    ink: np.ndarray  # (h, w) float32 in [0, 1] over the digit's box: 1 = stroke core, 0 = background
    box: tuple[int, int, int, int]  # (left, top, right, bottom) of that box in working coordinates


def _dark_ink(gray: np.ndarray) -> bool:
    """True when ink is darker than the background.

    Deviations from a median-smoothed background (which ink, being the minority, does not move)
    are weighed on each side: the ink's side carries the mass, noise is symmetric, and lighting,
    vignetting and tinted paper are in the background, not in the deviations.
    """
    h, w = gray.shape
    f = min(1.0, 40.0 / max(h, w))
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    img = Image.fromarray(gray, mode="F")
    small = np.asarray(img.resize((sw, sh), Image.Resampling.BOX), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(small, 3, mode="edge"), (7, 7))
    smooth = np.partition(windows.reshape(sh, sw, 49), 24, axis=2)[..., 24]  # 7x7 median
    bg = np.asarray(Image.fromarray(smooth, mode="F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    # the frame's edge is where the paper ends and the desk begins: its contrast says nothing of the ink
    mh, mw = h // 10, w // 10
    d = (gray - bg)[mh : h - mh, mw : w - mw]
    tau = 3.0 * 1.4826 * float(np.median(np.abs(d[::3, ::3]))) + 2.0
    return float(np.clip(-d - tau, 0.0, None).sum()) >= float(np.clip(d - tau, 0.0, None).sum())


def _background(gray: np.ndarray, frac: float) -> np.ndarray:
    """Paper brightness under dark ink: a closing `frac` of the long side wide, computed at half size.

    The closing erases dark strokes narrower than its width and keeps lighting that varies more
    slowly; a narrow closing follows shadows better, a wide one is needed for marker strokes.
    """
    h, w = gray.shape
    step = 2 if min(h, w) >= 64 else 1
    small = gray
    if step > 1:
        small = np.asarray(Image.fromarray(gray, mode="F").reduce(step), dtype=np.float32)
    k = max(5, int(frac * max(small.shape)) | 1)
    # no smoothing afterwards: a closing keeps a shadow's hard edge, a blur would smear it into "ink"
    bg = ndi.minimum_filter(ndi.maximum_filter(small, k, mode="nearest"), k, mode="nearest")
    if step > 1:
        img = Image.fromarray(np.ascontiguousarray(bg, dtype=np.float32), mode="F")
        bg = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.maximum(bg, gray)


@dataclass(frozen=True)
class InkMap:
    """The ink strength over the whole working image that the digit was found in (for `preprocessing.reading`)."""

    raw: np.ndarray  # (h, w) float32 in [0, 1]: ink strength relative to the paper
    min_seed: float  # the weakest ink that may seed a stroke group in this map
    frame: bool  # True for photos: bands along the frame are the paper's edge, not ink
    parts: Parts | None = None  # its stroke groups, when a digit was found in it


def find_digit(gray: np.ndarray) -> Ink | None:
    """The digit's ink and box, or None when nothing digit-like stands out from the background."""
    return locate(gray)[0]


def locate(gray: np.ndarray) -> tuple[Ink | None, InkMap]:
    """The digit's ink and box (or None), and the ink map it was found in.

    A narrow background closing first; a wide one when the strokes turn out too thick for it
    (their dark insides left unexplained), or when the narrow one found nothing.
    """
    flat = _flat(gray)
    if flat is not None:  # scans, canvases, screenshots: one paper level, strokes of any width
        dark, paper = flat
        g = gray if dark else 255.0 - gray
        raw = np.clip((paper - g) / max(paper, 40.0), 0.0, 1.0).astype(np.float32)
        found = _select(raw, min_seed=MIN_CONTRAST, frame=False)
        if found is None:
            return None, InkMap(raw, MIN_CONTRAST, False)
        return found.ink, InkMap(raw, MIN_CONTRAST, False, found.parts)
    g = gray if _dark_ink(gray) else 255.0 - gray
    maps = []
    for i, frac in enumerate(KERNELS):
        bg = _background(g, frac)
        raw = remove_lines(np.clip((bg - g) / np.maximum(bg, 40.0), 0.0, 1.0).astype(np.float32))
        seed = MIN_CONTRAST if i == 0 else MIN_CONTRAST_WIDE
        maps.append(InkMap(raw, seed, True))
        found = _select(raw, min_seed=seed, frame=True)
        if found is not None and (i == len(KERNELS) - 1 or not _hollow(g, bg, found)):
            return found.ink, InkMap(raw, seed, True, found.parts)
    return None, maps[0]  # no one digit: the narrow map keeps thin strokes best for reading several


def _otsu(values: np.ndarray) -> int:
    """Otsu's threshold on 0..255 values: the split that best separates two classes."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return int(np.nanargmax(np.nan_to_num(between[:-1], nan=-1.0)))


def _flat(gray: np.ndarray) -> tuple[bool, float] | None:
    """(ink is dark, paper level) when the background is flat: its spread small next to the contrast.

    Otsu's split gives two classes; the larger is the paper. Scans, canvases and screenshots pass;
    lighting gradients and shadows widen the paper class and send a photo to the local background.
    """
    sample = gray[::3, ::3] if gray.size > 9216 else gray
    t = _otsu(sample)
    dark, bright = sample[sample <= t], sample[sample > t]
    if dark.size == 0 or bright.size == 0:
        return None
    ink_is_dark = bright.size >= dark.size
    rim = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if min(gray.shape) <= SMALL:  # a small crop may be half ink: the paper is what surrounds it
        ink_is_dark = float((rim > t).mean()) >= 0.5
    paper, ink = (bright, dark) if ink_is_dark else (dark, bright)
    small = min(gray.shape) <= SMALL
    if ((rim <= t) if ink_is_dark else (rim > t)).mean() > 0.12 and not small and _banded(gray, t, ink_is_dark):
        return None  # the "ink" class runs along the frame: a desk or the paper's edge, not a flat page
    if small:  # a tight crop's paper is mostly the strokes' anti-aliased fringe: measure it away from the ink
        side = (gray > t) if ink_is_dark else (gray <= t)
        clear = gray[ndi.binary_erosion(side, _EIGHT, border_value=1)]
        paper = clear if clear.size >= 8 else paper
    q25, q50, q75 = np.percentile(paper, (25, 50, 75))
    contrast = abs(float(q50) - float(np.median(ink)))
    # a small crop's anti-aliased fringe is a large share of its pixels: it widens the paper class
    if contrast > 20.0 and (q75 - q25) < (0.3 if small else 0.15) * contrast:
        return ink_is_dark, float(q50) if ink_is_dark else 255.0 - float(q50)
    if small and contrast > CROP_CONTRAST:
        # a digit cropped to its ink (a thick "1" filling a 13x64 crop): hardly any paper is left, and what
        # Otsu calls paper is mostly the strokes' fringe. A crop this small has no lighting to model, and a
        # shaded or blank one never has this contrast: the paper is its palest pixels.
        level = float(np.percentile(paper, 90 if ink_is_dark else 10))
        return ink_is_dark, level if ink_is_dark else 255.0 - level
    return None


def _bands(labels: np.ndarray, strong: np.ndarray, n: int) -> np.ndarray:
    """Per label (index 0..n): True when it is a band along the frame (a page's edge, a frame around the
    page, the desk or shading in a corner), not a digit cropped tight.

    Where its strong ink runs without a break along a whole side (WHOLE_SIDE of it, and half the image's
    long side or more), nearly all of it (NEAR_SIDES) must lie within a quarter of the image of those sides:
    a frame has no ink anywhere else, but a "7"'s bar along the top of a tight crop has a stem that reaches
    far from it. A group that is mostly faint ink (shading, with perhaps the desk dark in a corner) and runs
    along a side for half the image's long side is a band when it leaves the middle of the image nearly empty."""
    h, w = labels.shape
    long = max(h, w)

    def along(lab: np.ndarray, share: float) -> np.ndarray:
        out = np.zeros((4, n + 1), dtype=bool)
        for k, line in enumerate((lab[0], lab[-1], lab[:, 0], lab[:, -1])):
            change = np.flatnonzero(np.diff(line)) + 1
            starts = np.concatenate([[0], change])
            best = np.zeros(n + 1)
            np.maximum.at(best, line[starts], np.diff(np.concatenate([starts, [line.size]])))
            out[k] = (best >= 0.5 * long) & (best >= share * line.size)
        out[:, 0] = False
        return out

    strong_runs = along(np.where(strong, labels, 0), WHOLE_SIDE)
    out = np.zeros(n + 1, dtype=bool)
    dh, dw = max(1, h // 4), max(1, w // 4)
    for i in np.flatnonzero(strong_runs.any(axis=0)):
        ys, xs = np.nonzero(labels == i)
        near = np.zeros(ys.size, dtype=bool)
        for k, m in enumerate((ys < dh, ys >= h - dh, xs < dw, xs >= w - dw)):
            if strong_runs[k, i]:
                near |= m
        out[i] = near.mean() >= NEAR_SIDES
    total = np.bincount(labels.ravel(), minlength=n + 1)
    dim = np.bincount(labels[strong], minlength=n + 1) < 0.25 * total  # mostly faint: shading with a dark corner
    faint = dim & ~strong_runs.any(axis=0) & along(labels, 0.0).any(axis=0)
    if faint.any():
        mh, mw = h // 5, w // 5
        middle = labels[mh : h - mh, mw : w - mw]
        inner = np.bincount(middle.ravel(), minlength=n + 1) >= 0.25 * total
        out |= faint & ~inner
    return out


def _banded(gray: np.ndarray, t: float, ink_is_dark: bool) -> bool:
    """True when ink runs along a side of the frame for half its length or more (a desk, a page's edge);
    a digit cropped tight only crosses the sides in short runs."""
    for side in (gray[0], gray[-1], gray[:, 0], gray[:, -1]):
        ink = (side <= t) if ink_is_dark else (side > t)
        run = best = 0
        for v in ink:
            run = run + 1 if v else 0
            best = max(best, run)
        if best >= 0.5 * side.size:
            return True
    return False


@dataclass(frozen=True)
class _Found:
    ink: Ink
    mask: np.ndarray  # the selected strokes over ink.box
    contrast: float  # the strokes' typical ink strength, relative to the paper
    parts: Parts | None = None  # every stroke group that could be ink, for `preprocessing.reading`
    pieces: tuple[tuple[int, int, int, int], ...] = ()  # (left, top, right, bottom) of each selected group


@dataclass(frozen=True)
class Parts:
    """The stroke groups `_select` chose among, so that `preprocessing.reading` need not label them again."""

    labels: np.ndarray  # (h, w) int: the connected groups of the low threshold
    t_low: float  # that threshold
    groups: list[tuple[tuple[int, int, int, int], float, int]]  # (box, ink mass, label) of each usable group


def _hollow(g: np.ndarray, bg: np.ndarray, found: _Found) -> bool:
    """True when dark pixels inside the digit's box were not counted as ink: marker strokes wider
    than the closing, seen only along their edges."""
    left, top, right, bottom = found.ink.box
    gg, bb, m = g[top:bottom, left:right], bg[top:bottom, left:right], found.mask
    if not m.any():
        return False
    dark = np.zeros_like(m)
    # each stroke group against the paper around it: a number's box spans the page's lighting gradient,
    # and the paper at one end may be as dark as pencil at the other
    for pl, pt, pr, pb in found.pieces or ((left, top, right, bottom),):
        ys = slice(max(0, pt - top), max(0, pb - top))
        xs = slice(max(0, pl - left), max(0, pr - left))
        if not m[ys, xs].any():
            continue
        ink_level = float(np.percentile(gg[ys, xs][m[ys, xs]], 10))
        paper = float(np.median(bb[ys, xs]))
        dark[ys, xs] |= gg[ys, xs] < ink_level + 0.3 * (paper - ink_level)  # nearer the ink than the paper
    return int((dark & ~m).sum()) > 0.3 * int(m.sum())


@dataclass(frozen=True)
class Labelled:
    """What counts as ink on a map, decided once for one digit (`_select`) and for a number
    (`preprocessing.reading`): the connected groups of the low threshold and which of them are usable."""

    labels: np.ndarray  # (h, w) int: the connected groups of the low threshold
    t_low: float  # that threshold
    slices: list  # ndi.find_objects of `labels`
    mass: np.ndarray  # (n,) ink mass of each group: contrast above the threshold
    border: np.ndarray  # (n,) bool: the group comes near the image's frame
    ok: np.ndarray  # (n,) bool: strong enough, big enough, and no band along the frame


def label_ink(raw: np.ndarray, min_seed: float, frame: bool) -> Labelled:
    """Threshold with hysteresis and find the usable stroke groups.

    `frame`: the image may show the paper's edge and the desk (photos), so bands along the frame
    and corners are not ink. A flat background has no such edge, and its digit may fill the box.
    """
    h, w = raw.shape
    # detection looks through a slight blur (JPEG and sensor noise are pixel-sized, strokes are not);
    # the ink handed on keeps the unblurred detail
    r = ndi.gaussian_filter(raw, 0.6, truncate=2.0) if h * w > 16 else raw
    sample = r[::3, ::3] if r.size > 9216 else r
    if not frame:  # a flat page: its noise is measured on the paper alone (a tight crop is mostly ink)
        paper = sample[sample < 0.5]
        sample = paper if paper.size >= 16 else sample
    med = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - med)))
    t_low = max(LOW_FLOOR, med + 4.0 * sigma)
    t_seed = max(min_seed, med + 8.0 * sigma, 2.0 * t_low)
    if not frame:  # a small crop's anti-aliased fringe passes for paper noise: ink on a flat page is measured exactly
        t_low, t_seed = min(t_low, FLAT_LOW), min(t_seed, FLAT_SEED)
    on = r > t_low
    found, edge, peak = _groups(r, on, t_low, t_seed, frame)
    if not frame:
        return found
    # A faint line left on the paper (a grid or ruled line the line finder missed, the shading of a fold) can
    # join strokes to the frame, and the digit is thrown away with the band; or hang from a digit, and the
    # digit is framed with a stretch of line. Such groups are labelled again without their faint pixels far
    # from strong ink.
    bands = edge & (peak >= t_seed)
    cuts = [c for c in (_detach(r, on, found.labels, bands, peak), _tails(r, found, peak)) if c is not None]
    if not cuts:
        return found
    detached = on & ~np.logical_or.reduce(cuts)
    again = _groups(r, detached, t_low, t_seed, frame)[0]
    # what came off a band is a digit only when it is one by itself: of a digit's size and away from the
    # frame, not a piece of the band (the paper's edge broken where it is faint)
    was_band = np.concatenate([[False], bands])[found.labels] & detached
    from_band = np.zeros(len(again.slices) + 1, dtype=bool)
    from_band[np.unique(again.labels[was_band])] = True
    big = np.array([max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) >= _least(r.shape) for sl in again.slices])
    return replace(again, ok=again.ok & ~(from_band[1:] & (again.border | ~big)))


def _least(shape: tuple[int, ...]) -> float:
    """The smallest extent of a digit, in working pixels, on a map of this shape."""
    return max(MIN_EXTENT_PX, MIN_EXTENT * max(shape))


def _tails(r: np.ndarray, found: Labelled, peak: np.ndarray) -> np.ndarray | None:
    """The faint pixels (under DETACH of the group's darkest ink, further than DETACH_REACH pixels from it) of
    usable digit-sized groups whose box they stretch by a quarter or more: a line hanging from a digit. None
    when no group has such a tail (a stroke's own fringe never stretches its box)."""
    least = _least(r.shape)
    cut: np.ndarray | None = None
    for i in np.nonzero(found.ok)[0]:
        sl = found.slices[i]
        gh, gw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if max(gh, gw) < least:
            continue
        member = found.labels[sl] == i + 1
        strong = member & (r[sl] >= DETACH * peak[i])
        reach = ndi.binary_dilation(strong, structure=_EIGHT, iterations=DETACH_REACH)
        ys, xs = np.nonzero(member & reach)
        if ys.size == 0 or (np.ptp(ys) + 1 > TAIL * gh and np.ptp(xs) + 1 > TAIL * gw):
            continue
        cut = np.zeros(r.shape, dtype=bool) if cut is None else cut
        cut[sl] |= member & ~reach
    return cut


def _detach(
    r: np.ndarray, on: np.ndarray, labels: np.ndarray, bands: np.ndarray, peak: np.ndarray
) -> np.ndarray | None:
    """The pixels of the `bands` groups that are faint (under DETACH of the group's darkest ink) and further
    than DETACH_REACH pixels from its strong ink; None when cutting them would free no digit.

    A stroke's own faint fringe lies next to its core and stays; a faint line between two strokes, or from a
    stroke to the frame, is cut where it leaves them. Most photos have a band (the desk, the paper's edge), so
    the cut is made only when the band's strong ink holds something of a digit's size away from the frame."""
    ids = np.nonzero(bands)[0]
    if ids.size == 0:
        return None
    h, w = r.shape
    level = np.zeros(bands.size + 1, dtype=np.float32)
    level[ids + 1] = DETACH * peak[ids]
    member = level[labels]  # 0 outside the groups looked at
    strong = (member > 0) & (r >= member)
    cores = ndi.label(strong, structure=_EIGHT)[0]
    least, near = _least(r.shape), max(2, int(0.04 * max(h, w)))
    if not any(
        max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) >= least
        and sl[0].start >= near
        and sl[1].start >= near
        and sl[0].stop <= h - near
        and sl[1].stop <= w - near
        for sl in ndi.find_objects(cores)
    ):
        return None
    reach = ndi.binary_dilation(strong, structure=_EIGHT, iterations=DETACH_REACH)
    cut = (member > 0) & on & ~reach
    return cut if cut.any() else None


def _groups(
    r: np.ndarray, on: np.ndarray, t_low: float, t_seed: float, frame: bool
) -> tuple[Labelled, np.ndarray, np.ndarray]:
    """The connected groups of `on` and which are usable (`label_ink`), with each group's band flag and darkest ink."""
    h, w = r.shape
    labels, n = ndi.label(on, structure=_EIGHT)
    if n == 0:
        none = np.zeros(0, dtype=bool)
        return Labelled(labels, t_low, [], np.zeros(0), none, none), none, np.zeros(0, dtype=np.float32)
    lab, val = labels[on], r[on]
    area = np.bincount(lab, minlength=n + 1)[1:]
    # contrast above the threshold: a faint wide shadow weighs less than a dark narrow stroke
    mass = np.bincount(lab, weights=val - t_low, minlength=n + 1)[1:]
    peak = np.zeros(n + 1, dtype=np.float32)
    np.maximum.at(peak, lab, val)
    peak = peak[1:]
    slices = ndi.find_objects(labels)
    edge = np.zeros(n + 1, dtype=bool)
    sides = np.zeros(n + 1, dtype=np.int64)
    contact = np.zeros(n + 1)
    for line, side in ((labels[0], w), (labels[-1], w), (labels[:, 0], h), (labels[:, -1], h)):
        counts = np.bincount(line, minlength=n + 1)
        sides += counts > 0
        contact = np.maximum(contact, counts / side)
    # a band along the frame (paper edge, table, shadow) touches one side for a long stretch; a paper
    # corner or the desk past it touches two sides. A digit filling a scan's box may touch two sides,
    # but only where its strokes cross them.
    edge = contact > (0.2 if frame else 0.6)
    edge |= (sides >= 2) & (contact > (0.0 if frame else 0.3))
    if not frame and edge[1:].any():
        # a tight crop: the digit crosses the borders in short runs, or reaches far from the side it runs
        # along (a "7"'s bar along the top); a page's edge, a frame around an empty page or the desk in a
        # corner runs along sides for half the image and stays near them (a stroke's faint fringe along a
        # side is no band: only strong ink counts)
        strong = (r >= t_seed) & (r >= 0.5 * np.concatenate([[0.0], peak])[labels])  # half its group's darkest
        edge &= _bands(labels, strong, n)
    near = max(2, int(0.04 * max(h, w))) if frame else 1
    border = np.array(
        [sl[0].start < near or sl[1].start < near or sl[0].stop > h - near or sl[1].stop > w - near for sl in slices]
    )
    ok = (peak >= t_seed) & (area >= 3) & ~edge[1:]
    if frame:  # near a photo's frame, faint marks are shading of the paper's edge: only real ink counts
        ok &= ~border | (peak >= EDGE_CONTRAST)
    return Labelled(labels, t_low, slices, mass, border, ok), edge[1:], peak


def _select(raw: np.ndarray, min_seed: float, frame: bool) -> _Found | None:
    """The strongest stroke group of `label_ink` and the pieces near it: one digit, or None."""
    h, w = raw.shape
    found = label_ink(raw, min_seed, frame)
    labels, t_low, slices, mass, border, ok = (
        found.labels,
        found.t_low,
        found.slices,
        found.mass,
        found.border,
        found.ok,
    )
    if not ok.any():
        return None
    # a digit cut by the frame or drawn to the canvas edge is possible, but a mark at (or near) the
    # edge is more often the paper's edge: such components weigh half when choosing the digit
    weight = np.where(border, 0.5, 1.0) * mass
    candidates = [int(i) for i in np.argsort(-weight) if ok[i]]
    core = candidates[0]
    if frame and not border[core]:  # the paper's edge is not part of a digit in the middle of the page
        candidates = [i for i in candidates if not border[i]]
    left, top, right, bottom = _box(slices[core])
    chosen = [core]
    grew = True
    while grew:  # gather the pieces of a broken stroke, but not marks away from the digit
        grew = False
        margin = 0.25 * max(right - left, bottom - top) + 2
        for i in candidates:
            if i in chosen or mass[i] < 0.02 * mass[core]:
                continue
            l2, t2, r2, b2 = _box(slices[i])
            if max(l2 - right, left - r2, t2 - bottom, top - b2) <= margin:
                chosen.append(i)
                left, top, right, bottom = min(left, l2), min(top, t2), max(right, r2), max(bottom, b2)
                grew = True
    if max(right - left, bottom - top) < max(MIN_EXTENT_PX, MIN_EXTENT * max(h, w)):
        return None
    t0, l0 = max(0, top - 1), max(0, left - 1)
    b0, r0 = min(h, bottom + 1), min(w, right + 1)
    selected = np.isin(labels[t0:b0, l0:r0], np.asarray(chosen) + 1)
    mask = ndi.binary_dilation(selected, structure=_EIGHT)  # keep the anti-aliased fringe of the strokes
    crop = raw[t0:b0, l0:r0]
    core_level = float(np.percentile(crop[selected], 90))
    if frame and core_level < MIN_DIGIT_CONTRAST:
        return None  # blotches of paper texture and lighting, not ink
    widest = (MAX_WIDTH_BOLD if core_level >= BOLD_CONTRAST else MAX_WIDTH_RATIO) if frame else MAX_WIDTH_FLAT
    if stroke_width(selected) > widest * max(selected.shape):
        return None  # a solid blob (a glare spot, a shadow; on a flat page, the paper inside a frame), not strokes
    floor = 0.5 * t_low
    ink = np.clip((crop - floor) / max(core_level - floor, 1e-3), 0.0, 1.0) * mask
    ys, xs = np.nonzero(mask & (crop > floor))  # the box keeps the strokes' anti-aliased fringe
    if ys.size == 0:
        return None
    y1, y2, x1, x2 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    box = (l0 + x1, t0 + y1, l0 + x2, t0 + y2)
    groups = [(_box(slices[i]), float(mass[i]), i + 1) for i in np.nonzero(ok)[0]]
    parts = Parts(labels, t_low, groups)
    pieces = tuple(_box(slices[i]) for i in chosen)
    return _Found(Ink(ink[y1:y2, x1:x2].astype(np.float32), box), selected[y1:y2, x1:x2], core_level, parts, pieces)


def _box(s: tuple[slice, slice]) -> tuple[int, int, int, int]:
    return s[1].start, s[0].start, s[1].stop, s[0].stop
