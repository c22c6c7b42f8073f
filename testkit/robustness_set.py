"""Render MNIST digits the way users send them: phone photos, scans, canvas sketches, and negatives.

Why a renderer: real photos of MNIST's own test digits do not exist, and the MNIST test digits are
the only handwriting the model has never trained on whose label we know. Each sample starts from a
28x28 test digit, turns it into a pen path of a chosen width at camera resolution, and puts it on
paper or a canvas with the defects of that medium. Everything is driven by one numpy Generator, so
a seed reproduces the set byte for byte. The tests import `render` to build their hard cases.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

STYLES = ("photo", "scan", "sketch", "negative")


@dataclass(frozen=True)
class Sample:
    style: str
    variant: str  # e.g. "photo/blue", "sketch/transparent-thin": what was drawn, for per-variant figures
    data: bytes  # the encoded image, exactly what a user would upload
    label: int | None  # the digit; None for negatives (the right answer is "no digit found")
    source: int | None = None  # index of the MNIST test digit it was drawn from


def fitted_mask(digit: np.ndarray, height: int, width_frac: float, room: int) -> np.ndarray:
    """stroke_mask with a pen `width_frac` of the digit's height, shrunk until the pen's ends fit in `room`."""
    m = stroke_mask(digit, height, max(1.5, width_frac * height))
    if max(m.shape) > room:
        height = int(height * room / max(m.shape)) - 1
        m = stroke_mask(digit, height, max(1.5, width_frac * height))
    return m[:room, :room]


def stroke_mask(digit: np.ndarray, height: int, width_px: float) -> np.ndarray:
    """A 28x28 MNIST digit -> float coverage (0..1) of a pen path `width_px` wide, digit `height` tall.

    The digit is upsampled, its centre line found as the ridge of the distance transform, and the
    ridge redrawn with the new pen: hairline pens and fat markers from the same handwriting.
    """
    ys, xs = np.nonzero(digit > 40)
    crop = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255.0
    scale = height / crop.shape[0]
    up = ndi.zoom(np.pad(crop, 2), scale, order=1)
    shape = up > 0.5
    inside = ndi.distance_transform_edt(shape)
    ridge = shape & (inside >= ndi.maximum_filter(inside, 3) - 0.5) & (inside > 0.5)
    dist = ndi.distance_transform_edt(~ridge)
    return np.clip(width_px / 2.0 - dist + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: paper fibres at a large scale, uneven lighting."""
    small = rng.standard_normal((cells, max(2, round(cells * w / h))))
    big = np.asarray(Image.fromarray(small.astype(np.float32), "F").resize((w, h), Image.Resampling.BICUBIC))
    return big / (np.abs(big).max() + 1e-6)


def _encode(img: Image.Image, fmt: str, rng: np.random.Generator, exif_orientation: int | None = None) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        kwargs: dict = {"quality": int(rng.integers(50, 91))}
        if exif_orientation:
            exif = Image.Exif()
            exif[0x0112] = exif_orientation
            kwargs["exif"] = exif.tobytes()
        img.save(out, "JPEG", **kwargs)
    else:
        img.save(out, fmt)
    return out.getvalue()


# How a phone stores an upright scene with each EXIF orientation: the stored pixels are the scene
# turned the other way, and the viewer applies the tag.
_STORE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}

INKS = {"black": (25.0, 25.0, 35.0), "blue": (35.0, 55.0, 150.0), "pencil": (95.0, 95.0, 100.0)}


def _place(frame: tuple[int, int], size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    (fh, fw), (h, w) = frame, size
    return int(rng.integers(0, max(1, fh - h + 1))), int(rng.integers(0, max(1, fw - w + 1)))


def _paper_lines(rng: np.random.Generator, h: int, w: int, kind: str, pitch: float) -> np.ndarray:
    """Coverage (0..1) of a notebook's printed lines: ruled (with a margin line) or squared, `pitch` px apart."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    width = rng.uniform(0.8, 2.2) * max(1.0, pitch / 40.0)
    tilt = rng.uniform(-0.02, 0.02)  # the page is never square to the camera
    phase = rng.uniform(0, pitch)
    d = np.abs(((yy + tilt * xx - phase) % pitch) - pitch / 2) - (pitch / 2 - width / 2)
    cover = np.clip(d + 0.5, 0.0, 1.0)
    if kind == "squared":
        phase = rng.uniform(0, pitch)
        d = np.abs(((xx - tilt * yy - phase) % pitch) - pitch / 2) - (pitch / 2 - width / 2)
        cover = np.maximum(cover, np.clip(d + 0.5, 0.0, 1.0))
    elif rng.random() < 0.5:  # the margin line
        x0 = rng.uniform(0.05, 0.2) * w
        cover = np.maximum(cover, np.clip(width / 2 + 0.5 - np.abs(xx - tilt * yy - x0), 0.0, 1.0))
    return cover * rng.uniform(0.25, 0.55)


def photo(
    digit: np.ndarray | None,
    rng: np.random.Generator,
    ink: str | None = None,
    size: tuple[int, int] | None = None,
    paper: str = "plain",
) -> tuple[str, bytes]:
    """A phone photo of a digit (or a number: a wider strip) on paper, or of blank paper when `digit` is None.

    `paper`: "plain", or notebook paper: "ruled" (lines, sometimes a margin line) or "squared" (a grid),
    whose lines run under the ink and across the digit."""
    w, h = size or [(640, 480), (800, 600), (1024, 768), (480, 640), (960, 720)][int(rng.integers(0, 5))]
    ink = ink or ["black", "blue", "pencil"][int(rng.integers(0, 3))]
    tint = np.array([1.0, 1.0, 1.0]) - rng.uniform(0, 0.12, 3) * np.array([0.3, 0.6, 1.0])  # white..cream
    paper_rgb = rng.uniform(170, 245) * tint
    light = 1.0 + 0.25 * _smooth_noise(rng, h, w, 3)  # uneven lighting / soft shadow
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    light = light * (1.0 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5))  # gradient from the window
    r2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
    light = light * (1.0 - rng.uniform(0.1, 0.5) * r2 * 2)  # vignetting
    texture = 1.0 + 0.03 * _smooth_noise(rng, h, w, 40) + 0.015 * rng.standard_normal((h, w), dtype=np.float32)
    cover = np.zeros((h, w), np.float32)
    if digit is not None:
        dh = int(rng.uniform(0.2, 0.65) * h)
        pen = {"black": rng.uniform(0.012, 0.05), "blue": rng.uniform(0.012, 0.04), "pencil": rng.uniform(0.01, 0.03)}
        m = stroke_mask(digit, dh, max(1.5, pen[ink] * dh * 2.2))
        if digit.shape[1] > 28:  # a number: fit its width, not cut it; the pen follows one line's height
            lines = max(1, digit.shape[0] // 36)
            dh = int(min(dh, dh * 0.8 * w / m.shape[1]))
            m = stroke_mask(digit, dh, max(1.5, pen[ink] * dh * 2.2 / lines))
        if ink == "pencil":  # graphite: grainy and lighter
            m = m * np.clip(rng.uniform(0.55, 0.85) + 0.25 * rng.standard_normal(m.shape), 0, 1)
        my, mx = int(0.08 * h), int(0.08 * w)  # people write on the paper, not on its edge
        m = m[: h - 2 * my, : w - 2 * mx]
        y0, x0 = _place((h - 2 * my, w - 2 * mx), m.shape, rng)
        cover[my + y0 : my + y0 + m.shape[0], mx + x0 : mx + x0 + m.shape[1]] = m
    for _ in range(int(rng.integers(0, 6))):  # dust and specks
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.8, 2.5)
        if digit is not None and cover[max(0, int(cy) - 30) : int(cy) + 30, max(0, int(cx) - 30) : int(cx) + 30].any():
            continue  # "away from the digit"
        cover = np.maximum(cover, np.clip(rad - np.hypot(yy - cy, xx - cx), 0, 1) * rng.uniform(0.4, 0.9))
    ink_rgb = np.array(INKS[ink])
    sheet = paper_rgb[None, None, :] * texture[..., None]
    if paper != "plain":
        pitch = rng.uniform(0.5, 1.1) * (m.shape[0] if digit is not None else 0.1 * h)  # a digit spans 1-2 lines
        lines = _paper_lines(rng, h, w, paper, max(8.0, pitch))
        line_rgb = np.array([150.0, 175.0, 215.0]) if rng.random() < 0.7 else np.array([160.0, 160.0, 160.0])
        sheet = sheet * (1 - lines[..., None]) + line_rgb * lines[..., None]
    img = sheet * (1 - cover[..., None]) + ink_rgb * cover[..., None]
    img = img * light[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    desk = tuple(int(v) for v in rng.uniform(40, 150) * np.array([1.0, 0.85, 0.7]))  # seen past the paper
    pil = pil.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, fillcolor=desk)
    d = 0.06 * min(w, h)  # perspective: the four corners pulled in by up to 6%
    quad = [c + rng.uniform(-d, d) for c in (0, 0, 0, h, w, h, w, 0)]
    pil = pil.transform((w, h), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR, fillcolor=desk)
    sy, sx = rng.uniform(0.3, 1.6, 2)  # focus and shake
    a = np.asarray(pil).astype(np.float32)
    a = ndi.gaussian_filter1d(ndi.gaussian_filter1d(a, sy, axis=0, truncate=3.0), sx, axis=1, truncate=3.0)
    a = a + rng.uniform(1.5, 7.0) * rng.standard_normal(a.shape, dtype=np.float32)  # sensor noise
    pil = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    orientation = [None, None, None, 6, 8, 3][int(rng.integers(0, 6))]
    if orientation:
        pil = pil.transpose(_STORE[orientation])
    return (f"photo/{ink}" if paper == "plain" else f"photo-{paper}/{ink}"), _encode(pil, "JPEG", rng, orientation)


def scan(digit: np.ndarray, rng: np.random.Generator) -> tuple[str, bytes]:
    """A flatbed scan: dark on white, the digit filling most of a tight box."""
    side = int(rng.integers(64, 400))
    dh = int(side * rng.uniform(0.7, 0.92))
    m = fitted_mask(digit, dh, rng.uniform(0.06, 0.14), side)
    h = w = side
    y0, x0 = _place((h, w), m.shape, rng)
    cover = np.zeros((h, w), np.float32)
    cover[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    paper, ink = rng.uniform(225, 255), rng.uniform(0, 60)
    a = paper * (1 - cover) + ink * cover
    a = ndi.gaussian_filter(a, rng.uniform(0.2, 0.9)) + rng.normal(0, rng.uniform(0.5, 4.0), a.shape)
    pil = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    pil = pil.rotate(rng.uniform(-4, 4), resample=Image.Resampling.BILINEAR, fillcolor=int(paper))
    fmt = ["PNG", "JPEG", "TIFF", "BMP"][int(rng.integers(0, 4))]
    return f"scan/{fmt.lower()}", _encode(pil, fmt, rng)


def sketch(digit: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> tuple[str, bytes]:
    """A drawing-app canvas: transparent PNG, black on white, or white on black; thin or thick pen."""
    kind = kind or ["transparent", "black-on-white", "white-on-black"][int(rng.integers(0, 3))]
    thick = bool(rng.integers(0, 2))
    side = int(rng.integers(150, 600))
    dh = int(side * rng.uniform(0.35, 0.9))
    m = fitted_mask(digit, dh, rng.uniform(0.12, 0.25) if thick else rng.uniform(0.012, 0.04), side)
    y0, x0 = _place((side, side), m.shape, rng)
    cover = np.zeros((side, side), np.float32)
    cover[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    variant = f"sketch/{kind}-{'thick' if thick else 'thin'}"
    if kind == "transparent":
        color = rng.integers(0, 70, 3) if rng.random() < 0.8 else np.array([30, 60, 200])
        rgba = np.zeros((side, side, 4), np.uint8)
        rgba[..., :3] = color
        rgba[..., 3] = np.round(cover * 255).astype(np.uint8)
        return variant, _encode(Image.fromarray(rgba, "RGBA"), "PNG", rng)
    a = 255 * (1 - cover) if kind == "black-on-white" else 255 * cover
    fmt = "PNG" if rng.random() < 0.75 else ["WEBP", "GIF"][int(rng.integers(0, 2))]
    return variant, _encode(Image.fromarray(np.round(a).astype(np.uint8), "L"), fmt, rng)


def negative(rng: np.random.Generator) -> tuple[str, bytes]:
    """No digit: blank paper photos, and uniform or smoothly shaded images."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        _, data = photo(None, rng)
        return "negative/blank-paper", data
    w, h = int(rng.integers(28, 900)), int(rng.integers(28, 900))
    base = rng.uniform(0, 255, 3)
    a = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    if kind == 2:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = a * (1 + rng.uniform(-0.3, 0.3) * (xx / w - 0.5) + rng.uniform(-0.3, 0.3) * (yy / h - 0.5))[..., None]
    a = a + rng.normal(0, rng.uniform(0, 5), a.shape)
    fmt = ["PNG", "JPEG"][int(rng.integers(0, 2))]
    name = "negative/uniform" if kind == 1 else "negative/gradient"
    return name, _encode(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB"), fmt, rng)


# Space between neighbouring digits of a number, in MNIST digit heights (20 px), between the columns of
# their inks: "close" still leaves paper between the strokes once redrawn with a pen; "touching" overlaps
# the inks so the two digits are one stroke group.
SPACINGS = {"wide": (0.3, 0.5), "normal": (0.17, 0.3), "close": (0.1, 0.17), "touching": (-0.15, -0.05)}
NUMBER_SPACINGS = ("wide", "normal", "close")


def compose(digits: list[np.ndarray], gaps: list[float], rng: np.random.Generator) -> np.ndarray:
    """MNIST digits side by side as one strip (ink = max of the digits where they overlap).

    `gaps[i]` is the space after digit i in digit heights (20 px); each digit bobs up or down a little,
    as handwriting does."""
    crops = []
    for d in digits:
        cols = np.nonzero((d > 40).any(axis=0))[0]
        crops.append(d[:, cols.min() : cols.max() + 1])
    bob = [int(rng.integers(-2, 3)) for _ in crops]
    xs, x = [], 0
    for i, c in enumerate(crops):
        xs.append(x)
        x += c.shape[1] + (int(round(gaps[i] * 20)) if i < len(gaps) else 0)
    width = max(x0 + c.shape[1] for x0, c in zip(xs, crops, strict=True))
    strip = np.zeros((36, width + 8), np.uint8)
    for x0, c, b in zip(xs, crops, bob, strict=True):
        region = strip[4 + b : 4 + b + 28, 4 + x0 : 4 + x0 + c.shape[1]]
        np.maximum(region, c, out=region)
    return strip


def stack(lines: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Strips one under the other, left-aligned with a little jitter, half to one digit height apart."""
    width = max(s.shape[1] for s in lines) + 16
    rows = []
    for s in lines:
        pad = int(rng.integers(0, 12))
        rows.append(np.pad(s, ((0, int(rng.integers(2, 12))), (pad, width - s.shape[1] - pad))))
    return np.concatenate(rows, axis=0)


def number_scan(strip: np.ndarray, rng: np.random.Generator) -> tuple[str, bytes]:
    """A flatbed scan of a number: dark on white, a margin around it."""
    dh = int(rng.integers(40, 160))
    m = stroke_mask(strip, dh, max(1.5, rng.uniform(0.06, 0.14) * dh / max(1, strip.shape[0] // 36)))
    my, mx = int(rng.integers(6, 40)), int(rng.integers(6, 40))
    h, w = m.shape[0] + 2 * my, m.shape[1] + 2 * mx
    cover = np.zeros((h, w), np.float32)
    cover[my : my + m.shape[0], mx : mx + m.shape[1]] = m
    paper, ink = rng.uniform(225, 255), rng.uniform(0, 60)
    a = paper * (1 - cover) + ink * cover
    a = ndi.gaussian_filter(a, rng.uniform(0.2, 0.9)) + rng.normal(0, rng.uniform(0.5, 4.0), a.shape)
    pil = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    pil = pil.rotate(rng.uniform(-2, 2), resample=Image.Resampling.BILINEAR, fillcolor=int(paper), expand=False)
    fmt = ["PNG", "JPEG", "TIFF", "BMP"][int(rng.integers(0, 4))]
    return f"scan/{fmt.lower()}", _encode(pil, fmt, rng)


def number_sketch(strip: np.ndarray, rng: np.random.Generator) -> tuple[str, bytes]:
    """A drawing-app canvas with a number on it: transparent, black on white or white on black."""
    kind = ["transparent", "black-on-white", "white-on-black"][int(rng.integers(0, 3))]
    thick = bool(rng.integers(0, 2))
    lines = max(1, strip.shape[0] // 36)
    dh = int(rng.integers(60, 200)) * lines
    pen = (rng.uniform(0.1, 0.18) if thick else rng.uniform(0.015, 0.04)) * dh / lines
    m = stroke_mask(strip, dh, max(1.5, pen))
    my, mx = int(rng.integers(10, 60)), int(rng.integers(10, 60))
    h, w = m.shape[0] + 2 * my, m.shape[1] + 2 * mx
    cover = np.zeros((h, w), np.float32)
    cover[my : my + m.shape[0], mx : mx + m.shape[1]] = m
    variant = f"sketch/{kind}-{'thick' if thick else 'thin'}"
    if kind == "transparent":
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3] = rng.integers(0, 70, 3)
        rgba[..., 3] = np.round(cover * 255).astype(np.uint8)
        return variant, _encode(Image.fromarray(rgba, "RGBA"), "PNG", rng)
    a = 255 * (1 - cover) if kind == "black-on-white" else 255 * cover
    return variant, _encode(Image.fromarray(np.round(a).astype(np.uint8), "L"), "PNG", rng)


NUMBER_STYLES = ("scan", "photo", "photo-ruled", "photo-squared", "sketch", "touching", "lines")


@dataclass(frozen=True)
class NumberSample:
    style: str
    variant: str
    data: bytes
    text: str  # what a reader must answer: digits, "\n" between lines
    sources: tuple[int, ...]  # indices of the MNIST test digits drawn


def render_numbers(style: str, digits: np.ndarray, labels: np.ndarray, n: int, seed: int) -> list[NumberSample]:
    """`n` numbers of 2 to 6 digits from the given MNIST test digits, drawn in `style` (NUMBER_STYLES).

    Spacing is drawn from wide to close (NUMBER_SPACINGS); "touching" makes pairs whose inks overlap, "lines" puts
    two or three numbers on lines one under another (photos)."""
    rng = np.random.default_rng([seed, 100 + NUMBER_STYLES.index(style)])
    out = []
    for _ in range(n):
        count = 2 if style == "touching" else int(rng.integers(2, 7))
        nlines = int(rng.integers(2, 4)) if style == "lines" else 1
        strips, texts, sources = [], [], []
        for _line in range(nlines):
            k = count if nlines == 1 else int(rng.integers(1, 5))
            idx = [int(i) for i in rng.integers(0, len(digits), k)]
            spacing = "touching" if style == "touching" else NUMBER_SPACINGS[int(rng.integers(0, 3))]
            gaps = [float(rng.uniform(*SPACINGS[spacing])) for _ in range(k - 1)]
            strips.append(compose([digits[i] for i in idx], gaps, rng))
            texts.append("".join(str(int(labels[i])) for i in idx))
            sources += idx
        strip = strips[0] if nlines == 1 else stack(strips, rng)
        if style == "scan":
            variant, data = number_scan(strip, rng)
        elif style == "sketch":
            variant, data = number_sketch(strip, rng)
        else:
            paper = style.split("-")[1] if style.startswith("photo-") else "plain"
            variant, data = photo(strip, rng, paper=paper)
        out.append(NumberSample(style, variant, data, "\n".join(texts), tuple(sources)))
    return out


def tight_crop(digit: np.ndarray, rng: np.random.Generator, side: int | None = None) -> tuple[str, bytes]:
    """An MNIST digit cropped to its ink (no margin), light on dark or dark on light, at 16-64 px."""
    ys, xs = np.nonzero(digit > 40)
    crop = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    side = side or int(rng.choice([16, 28, 32, 64]))
    f = side / max(crop.shape)
    img = Image.fromarray(crop).resize(
        (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))), Image.Resampling.BILINEAR
    )
    dark = bool(rng.integers(0, 2))
    if dark:
        img = Image.fromarray(255 - np.asarray(img))
    return f"tight/{'dark-ink' if dark else 'light-ink'}-{side}", _encode(img, "PNG", rng)


RENDERERS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[str, bytes]]] = {
    "photo": photo,
    "scan": scan,
    "sketch": sketch,
}


def render(style: str, digits: np.ndarray, labels: np.ndarray, n: int, seed: int) -> list[Sample]:
    """`n` samples of `style` from the given MNIST test digits, reproducible from `seed`."""
    rng = np.random.default_rng([seed, STYLES.index(style)])
    out = []
    for _ in range(n):
        if style == "negative":
            variant, data = negative(rng)
            out.append(Sample(style, variant, data, None))
            continue
        j = int(rng.integers(0, len(digits)))
        variant, data = RENDERERS[style](digits[j], rng)
        out.append(Sample(style, variant, data, int(labels[j]), j))
    return out


def reencoded(digit: np.ndarray, side: int) -> bytes:
    """An MNIST digit as a PNG of another size: the control that preprocessing must not hurt."""
    img = Image.fromarray(digit)
    if side != digit.shape[0]:
        img = img.resize((side, side), Image.Resampling.BICUBIC if side > digit.shape[0] else Image.Resampling.BOX)
    return _encode(img, "PNG", np.random.default_rng(0))


__all__ = [
    "NUMBER_STYLES",
    "STYLES",
    "NumberSample",
    "Sample",
    "compose",
    "negative",
    "photo",
    "reencoded",
    "render",
    "render_numbers",
    "scan",
    "sketch",
    "stack",
    "stroke_mask",
    "tight_crop",
]
