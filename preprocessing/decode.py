"""Bytes -> a small grayscale float array, refusing bombs before decoding and decoding big photos cheaply.

Why a separate step: everything after this works on one array of at most about WORK_SIDE pixels per
side, whatever came in (a 12-megapixel JPEG, a 28x28 PNG, a transparent sketch), so the cost of the
rest of the pipeline does not grow with the camera.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from preprocessing.errors import ImageTooLargeError, PreprocessError, UnreadableImageError

# Formats a chat user plausibly sends. Restricting Image.open to these keeps Pillow away from
# plugins that shell out (EPS -> Ghostscript) or parse exotic containers. Phone MPO files open as JPEG;
# iPhone photos sent as files are HEIC (HEIF), decoded by pillow-heif's opener (libheif).
register_heif_opener()
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
# Long side of the working image. A digit that fills a tenth of the frame still spans ~35 px.
WORK_SIDE = 320
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Decoded:
    gray: np.ndarray  # (h, w) float32, 0..255, EXIF orientation applied, transparency composited
    scale: tuple[float, float]  # (sx, sy): multiply working coordinates by these for original pixels
    size: tuple[int, int]  # (width, height) of the original image after EXIF orientation


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Parse only the header and refuse oversized images: Image.open does not decode pixels."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UnreadableImageError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise UnreadableImageError("empty input: no image bytes")
    try:
        img = Image.open(io.BytesIO(bytes(data)), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:  # Pillow's message names an in-memory object: useless to a person
        raise UnreadableImageError(f"not a readable image: the bytes are none of {', '.join(FORMATS)}") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's parsers raise many types on hostile bytes
        raise UnreadableImageError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    w, h = img.size
    if w <= 0 or h <= 0:
        raise UnreadableImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image is {w}x{h} = {w * h} pixels, over the {max_pixels} pixel limit")
    return img


def _to_gray(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 luminance 0..255; transparency goes onto a contrasting background."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # A float TIFF can hold NaN and infinities: no ink there, and no NaN downstream.
        a = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(a.max()) if a.size else 0.0
        if mode.startswith("I;16") or hi > 255.0:
            a = a * (255.0 / (65535.0 if hi <= 65535.0 else hi))
        elif mode == "F" and hi <= 1.0:
            a = a * 255.0
        return np.clip(a, 0.0, 255.0)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        if mode not in ("L", "RGB"):
            img = img.convert("RGB")
        a = np.asarray(img, dtype=np.float32)
        return a @ _LUMA if a.ndim == 3 else a
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    lum = rgba[..., :3] @ _LUMA
    if alpha.min() > 0.99:
        return lum
    opaque = lum[alpha > 0.5]
    if opaque.size == 0:
        return np.full(lum.shape, 255.0, np.float32)  # fully transparent: a blank canvas
    # Drawing apps export strokes on a transparent canvas: the visible pixels are the ink, so the
    # canvas must take the opposite polarity (dark strokes on white, light strokes on black).
    background = 255.0 if float(np.median(opaque)) < 128.0 else 0.0
    return lum * alpha + background * (1.0 - alpha)


def _shrunk(img: Image.Image) -> Image.Image:
    """The loaded image at most about WORK_SIDE per side, in a mode `_to_gray` reads.

    Shrunk first, in its own mode (16-bit, 32-bit float, CMYK... all resize by area averaging in C),
    and only then converted: nothing after `load()` costs more than one pass over the decoded
    pixels, and no full-size float copy is ever made. Palette and 1-bit images are converted first
    because Pillow resizes those by nearest neighbour only; their converted copy is at most 4 bytes
    a pixel, the size of an RGBA decode."""
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    f = WORK_SIDE / max(img.size)
    if f < 0.8:
        # area averaging: one pass in C, and it averages away sensor noise
        size = (max(1, round(img.width * f)), max(1, round(img.height * f)))
        img = img.resize(size, Image.Resampling.BOX)
    if img.mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif img.mode not in ("L", "RGB", "RGBA", "I", "F") and not img.mode.startswith("I;16"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...
    return img


# Bytes a pixel takes at the decode's peak, by mode: what Pillow stores (RGB takes 4), plus the
# converted copy `_shrunk` makes of palette and 1-bit images before shrinking them.
_PEAK_BYTES = {"1": 2, "L": 1, "P": 5, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "LA": 4, "La": 4, "PA": 4}


def decoded_bytes(data: bytes, max_pixels: int) -> int | None:
    """The memory decoding `data` will take at its peak, from its header alone (no pixels decoded):
    width x height x bytes a pixel (4 for 32-bit, RGB, CMYK...), less for the JPEGs that are
    decoded at reduced size. None when the image will not be decoded at all (an unreadable header,
    more than `max_pixels`): decoding refuses it at once and says why."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            w, h = img.size
            if w * h > max_pixels or w <= 0 or h <= 0:
                return None
            per_pixel = _PEAK_BYTES.get(img.mode, 4)
            reduce = 1
            if img.format in ("JPEG", "MPO"):  # `draft` decodes at 1/2, 1/4 or 1/8 scale
                while reduce < 8 and max(w, h) / (reduce * 2) >= WORK_SIDE:
                    reduce *= 2
            return max(1, w * h * per_pixel // (reduce * reduce))
    except Exception:  # noqa: BLE001 - hostile headers raise anything; decoding reports it properly
        return None


def decode(data: bytes, max_pixels: int) -> Decoded:
    img = open_checked(data, max_pixels)
    w0, h0 = img.size
    try:
        if img.format in ("JPEG", "MPO"):
            # DCT-domain downscaling (1/2..1/8) while decoding: a 12 MP photo costs a fraction.
            f = WORK_SIDE / max(w0, h0)
            if f < 1.0:
                img.draft("L" if img.mode == "L" else "RGB", (math.ceil(w0 * f), math.ceil(h0 * f)))
        img.load()
        swapped = False
        try:
            swapped = img.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that turn by 90 degrees
            img = ImageOps.exif_transpose(img) or img
        except Exception:  # noqa: BLE001 - a malformed EXIF block must not lose an otherwise fine image
            swapped = False
        img = _shrunk(img)
        gray = np.ascontiguousarray(_to_gray(img), dtype=np.float32)
    except PreprocessError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data and decoder bugs surface here as anything
        raise UnreadableImageError(f"image could not be decoded ({type(exc).__name__}: {exc})") from exc
    ow, oh = (h0, w0) if swapped else (w0, h0)
    return Decoded(gray, (ow / gray.shape[1], oh / gray.shape[0]), (ow, oh))
