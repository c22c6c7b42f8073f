"""Phone-like photos of MNIST digits for the tests and the benchmarks: one maker, two looks.

The robustness benchmark's realistic renderer (lighting, perspective, inks, paper) lives in
`testkit.robustness_set`; this one is the quick, deterministic picture a bot test sends."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def phone_photo(
    pixels,
    *,
    size: tuple[int, int] = (640, 480),
    fmt: str = "JPEG",
    rng: np.random.Generator | None = None,
) -> bytes:
    """An MNIST digit (28x28, 0 = background) as dark ink on light paper, upscaled.

    Without `rng`: centred on even paper, 70% of the short side (what the bot tests send). With
    `rng`: off-centre on grey, unevenly lit, noisy paper and slightly blurred, so that JPEG files
    have a phone photo's size and decoding cost (what the server benchmark sends)."""
    digit = np.asarray(pixels, dtype=np.uint8)
    w, h = size
    if rng is None:
        side = int(min(size) * 0.7)
        ink = Image.fromarray(255 - digit, mode="L").resize((side, side), Image.Resampling.BICUBIC)
        paper = Image.new("L", size, 235)
        paper.paste(ink.point(lambda v: min(v, 235)), ((w - side) // 2, (h - side) // 2))
        image = paper.convert("RGB") if fmt == "JPEG" else paper
    else:
        gradient = np.linspace(170, 225, w)[None, :] + np.linspace(-15, 15, h)[:, None]
        canvas = gradient + rng.normal(0, 6, (h, w))
        side = int(rng.integers(int(0.375 * h), int(0.625 * h)))
        ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float64) / 255
        x, y = int(rng.integers(40, w - side - 40)), int(rng.integers(20, h - side - 20))
        canvas[y : y + side, x : x + side] = canvas[y : y + side, x : x + side] * (1 - ink) + 30 * ink
        image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGB")
        image = image.filter(ImageFilter.GaussianBlur(1))
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 88 if rng is not None else 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def blank_photo(size: tuple[int, int] = (640, 480)) -> bytes:
    """Empty, slightly tinted paper: a photo with no digit in it."""
    buf = io.BytesIO()
    Image.new("RGB", size, (236, 236, 232)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


__all__ = ["blank_photo", "phone_photo"]
