"""bots/annotate.py: the photo of a number with each read digit boxed, on synthetic pictures whose
ink is where the boxes say, so a box drawn in the wrong place (scale, EXIF rotation) is caught."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bots.annotate import BOX_COLOUR, MAX_SIDE, annotate, annotated_png

INK = (20, 20, 20)


def picture(size: tuple[int, int], squares: list[tuple[int, int, int, int]], mode: str = "RGB") -> Image.Image:
    """White paper with a dark filled square at each (x, y, w, h)."""
    img = Image.new(mode, size, "white")
    for x, y, w, h in squares:
        img.paste(INK if mode == "RGB" else 20, (x, y, x + w, y + h))
    return img


def encoded(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def is_box(pixels: np.ndarray, x: int, y: int) -> bool:
    return tuple(int(v) for v in pixels[y, x]) == BOX_COLOUR


def assert_boxed(result: Image.Image, box: tuple[int, int, int, int], scale: tuple[float, float]) -> None:
    """The box's four edges are drawn in the box colour at the scaled place, and the ink it surrounds is inside."""
    pixels = np.asarray(result.convert("RGB"))
    x, y, w, h = box
    left, top = round(x * scale[0]), round(y * scale[1])
    right, bottom = round((x + w) * scale[0]) - 1, round((y + h) * scale[1]) - 1
    mid_x, mid_y = (left + right) // 2, (top + bottom) // 2
    assert is_box(pixels, left, mid_y) and is_box(pixels, right, mid_y), "left/right edges"
    assert is_box(pixels, mid_x, bottom), "bottom edge"
    assert is_box(pixels, mid_x, top) or is_box(pixels, mid_x, top - 3), "top edge (or the label on it)"
    assert pixels[mid_y, mid_x].max() < 80, "the ink is inside the box"
    assert not is_box(pixels, max(0, left - 12), mid_y) and not is_box(pixels, min(right + 12, result.width - 1), mid_y)


def test_boxes_are_scaled_to_the_downscaled_picture():
    squares = [(100, 150, 120, 160), (400, 140, 110, 170), (700, 160, 130, 150)]
    data = encoded(picture((1000, 500), squares))
    result = annotate(data, squares, ["2", "0", "7"])
    assert result.size == (MAX_SIDE, MAX_SIDE // 2)
    for box in squares:
        assert_boxed(result, box, (MAX_SIDE / 1000, (MAX_SIDE // 2) / 500))


def test_the_label_is_drawn_over_each_box():
    squares = [(100, 150, 120, 160)]
    result = np.asarray(annotate(encoded(picture((1000, 500), squares)), squares, ["4"]))
    above = result[: round(150 * 0.512), round(100 * 0.512): round(220 * 0.512)]
    label = (above == BOX_COLOUR).all(axis=2)
    text = (above == (255, 255, 255)).all(axis=2) & np.roll(label, 1, axis=1)  # white glyph pixels on the label
    assert label.sum() > 50 and text.any()


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_an_exif_rotated_jpeg_is_drawn_upright_with_the_boxes_on_the_ink(orientation):
    upright_squares = [(20, 20, 60, 80), (160, 150, 60, 70)]  # no turn maps one onto ink
    upright = picture((400, 240), upright_squares)
    # A camera stores the sensor's pixels and says how to turn them: the inverse of that turn gives the stored file.
    stored = upright.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
                                3: Image.Transpose.ROTATE_180}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(stored, "JPEG", quality=95, exif=exif.tobytes())
    result = annotate(data, upright_squares, ["1", "9"])
    assert result.size == (400, 240), "upright, and a small picture is not enlarged"
    for box in upright_squares:
        assert_boxed(result, box, (1.0, 1.0))


def test_a_big_jpeg_is_drawn_at_most_max_side():
    squares = [(800, 900, 600, 900), (2200, 1000, 700, 800)]
    data = encoded(picture((4000, 3000), squares), "JPEG", quality=90)
    result = annotate(data, squares, ["3", "8"])
    assert result.size == (MAX_SIDE, 384)
    for box in squares:
        assert_boxed(result, box, (MAX_SIDE / 4000, 384 / 3000))


def test_a_transparent_sticker_is_drawn_on_white():
    squares = [(30, 30, 40, 60)]
    img = picture((120, 120), squares).convert("RGBA")
    img.putalpha(Image.new("L", img.size, 0).point(lambda _: 0))
    img.paste((20, 20, 20, 255), (30, 30, 70, 90))
    png = annotated_png(encoded(img), squares, ["5"])
    result = Image.open(io.BytesIO(png))
    assert result.format == "PNG" and result.mode == "RGB"
    assert result.getpixel((5, 110)) == (255, 255, 255)
    assert_boxed(result, squares[0], (1.0, 1.0))


def test_a_picture_that_cannot_be_drawn_gives_none():
    assert annotated_png(b"not an image at all", [(0, 0, 1, 1)], ["1"]) is None


def test_an_iphone_heic_is_drawn():
    squares = [(100, 80, 120, 200), (420, 100, 110, 180)]
    result = annotate(encoded(picture((800, 600), squares), "HEIF", quality=90), squares, ["4", "2"])
    assert result.size == (MAX_SIDE, 384)
    for box in squares:
        assert_boxed(result, box, (MAX_SIDE / 800, 384 / 600))
