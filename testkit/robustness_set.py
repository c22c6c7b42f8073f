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


def photo(
    digit: np.ndarray | None, rng: np.random.Generator, ink: str | None = None, size: tuple[int, int] | None = None
) -> tuple[str, bytes]:
    """A phone photo of a digit on paper (or of blank paper when `digit` is None)."""
    w, h = size or [(640, 480), (800, 600), (1024, 768), (480, 640), (960, 720)][int(rng.integers(0, 5))]
    ink = ink or ["black", "blue", "pencil"][int(rng.integers(0, 3))]
    tint = np.array([1.0, 1.0, 1.0]) - rng.uniform(0, 0.12, 3) * np.array([0.3, 0.6, 1.0])  # white..cream
    paper = rng.uniform(170, 245) * tint
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
    img = paper[None, None, :] * texture[..., None] * (1 - cover[..., None]) + ink_rgb * cover[..., None]
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
    return f"photo/{ink}", _encode(pil, "JPEG", rng, orientation)


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


__all__ = ["STYLES", "Sample", "negative", "photo", "reencoded", "render", "scan", "sketch", "stroke_mask"]
