"""PLACEHOLDER implementation (naive): the preprocessing issue replaces the internals, keeping this API."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000


class PreprocessError(ValueError):
    """Bytes that cannot become a digit image. `reason` is a stable machine-readable code."""

    reason = "UNREADABLE_IMAGE"


class UnreadableImageError(PreprocessError):
    reason = "UNREADABLE_IMAGE"


class ImageTooLargeError(PreprocessError):
    reason = "IMAGE_TOO_LARGE"


@dataclass(frozen=True)
class Preprocessed:
    pixels: np.ndarray  # (28, 28) uint8, MNIST convention; all zeros when no digit was found
    bbox: tuple[int, int, int, int] | None  # (left, top, right, bottom) in the decoded image; None: no digit

    @property
    def digit_found(self) -> bool:
        return self.bbox is not None


def preprocess(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Preprocessed:
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            raise ImageTooLargeError(f"image is {img.width}x{img.height}, over the {max_pixels} pixel limit")
        img = img.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, PreprocessError):
            raise
        raise UnreadableImageError(f"not a readable image: {exc}") from exc
    a = np.asarray(img.resize((28, 28)), dtype=np.uint8)
    if a.mean() > 127:
        a = 255 - a
    if a.max() - a.min() < 30:
        return Preprocessed(np.zeros((28, 28), np.uint8), None)
    return Preprocessed(a, (0, 0, img.width, img.height))
