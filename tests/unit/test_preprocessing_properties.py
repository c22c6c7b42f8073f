"""Property tests: whatever bytes arrive, preprocess returns a valid 28x28 digit or raises PreprocessError.

The server passes user uploads straight to preprocess; any other exception would be a 500 and a
stack trace instead of a clear UNREADABLE_IMAGE. Hypothesis explores arbitrary bytes, corrupted
real images of every accepted format, and arbitrary pixel content.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from scipy import ndimage as ndi

from preprocessing import Preprocessed, PreprocessError, preprocess

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> Preprocessed | None:
    """Run preprocess; only its own error type may escape, and a result must be well-formed."""
    try:
        result = preprocess(data)
    except PreprocessError as exc:
        assert exc.reason in ("UNREADABLE_IMAGE", "IMAGE_TOO_LARGE")
        return None
    assert isinstance(result.pixels, np.ndarray)
    assert result.pixels.dtype == np.uint8 and result.pixels.shape == (28, 28)
    if result.digit_found:
        left, top, right, bottom = result.bbox
        assert 0 <= left < right and 0 <= top < bottom
        ys, xs = np.nonzero(result.pixels)
        assert ys.size and np.ptp(ys) < 20 and np.ptp(xs) < 20
    else:
        assert result.bbox is None and not result.pixels.any()
    return result


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    a = np.full((40, 48), 235, np.uint8)
    a[8:32, 20:26] = 20  # a "1"
    a = np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8)
    out = []
    for fmt, mode in (("PNG", "L"), ("JPEG", "RGB"), ("GIF", "L"), ("BMP", "RGB"), ("TIFF", "L"), ("WEBP", "RGB")):
        buf = io.BytesIO()
        Image.fromarray(a).convert(mode).save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    check(data)


@SETTINGS
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_corrupted_real_images(which, flips, cut):
    data = bytearray(SEEDS[which])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    check(bytes(data))


@SETTINGS
@given(arrays(np.uint8, st.tuples(st.integers(1, 64), st.integers(1, 64))), st.sampled_from(["PNG", "BMP", "TIFF"]))
def test_arbitrary_pixels(pixels, fmt):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    result = check(buf.getvalue())
    assert result is not None, "a valid image is never an error"
    if result.digit_found:
        cy, cx = ndi.center_of_mass(result.pixels.astype(np.float64))
        assert abs(cy - 14.0) <= 3.0 and abs(cx - 14.0) <= 3.0  # clamped only when ink would leave the frame


def test_uniform_images_of_any_value_have_no_digit():
    for value in range(0, 256, 17):
        for size in ((1, 1), (28, 28), (500, 3)):
            buf = io.BytesIO()
            Image.new("L", size, value).save(buf, "PNG")
            assert not check(buf.getvalue()).digit_found
