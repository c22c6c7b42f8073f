"""Image bytes -> a 28x28 uint8 digit in MNIST's convention, or a clear error, or "no digit found".

The pipeline, one module per step: decode (bombs refused from the header, big JPEGs decoded at
reduced size, EXIF orientation, transparency), segment (polarity, background, ink, the strokes that
belong together), normalize (stroke width, 20x20 fit, center of mass). The server's preprocessing
workers call `preprocess` for every encoded image, so the model sees the same thing whichever bot or
client sent it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.shape import IMAGE_SIZE
from preprocessing.decode import decode
from preprocessing.errors import ImageTooLargeError, PreprocessError, UnreadableImageError
from preprocessing.normalize import to_mnist
from preprocessing.reading import several_digits
from preprocessing.segment import locate

DEFAULT_MAX_PIXELS = 40_000_000

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageTooLargeError",
    "PreprocessError",
    "Preprocessed",
    "UnreadableImageError",
    "preprocess",
]


@dataclass(frozen=True)
class Preprocessed:
    pixels: np.ndarray  # (28, 28) uint8, MNIST convention; all zeros when no digit was found
    bbox: tuple[int, int, int, int] | None  # (left, top, right, bottom) in the decoded image; None: no digit
    several: bool = False  # the picture clearly holds more than one digit (a number): `pixels` is one of them

    @property
    def digit_found(self) -> bool:
        return self.bbox is not None


def preprocess(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Preprocessed:
    """Decode `data` and return the digit framed like MNIST.

    bbox is in the pixels of the image as displayed (after EXIF orientation). Raises
    UnreadableImageError or ImageTooLargeError (both PreprocessError) and nothing else for bad bytes.
    """
    decoded = decode(data, max_pixels)
    found, ink_map = locate(decoded.gray)
    if found is None:
        return Preprocessed(np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8), None)
    pixels = to_mnist(found.ink)
    if not pixels.any():
        return Preprocessed(pixels, None)
    sx, sy = decoded.scale
    width, height = decoded.size
    left, top, right, bottom = found.box
    bbox = (
        max(0, int(left * sx)),
        max(0, int(top * sy)),
        min(width, max(int(left * sx) + 1, round(right * sx))),
        min(height, max(int(top * sy) + 1, round(bottom * sy))),
    )
    return Preprocessed(pixels, bbox, several_digits(ink_map))
