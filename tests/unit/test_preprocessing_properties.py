"""Property tests: whatever bytes arrive, preprocess returns a valid 28x28 digit or raises PreprocessError.

The server passes user uploads straight to preprocess; any other exception would be a 500 and a
stack trace instead of a clear UNREADABLE_IMAGE. Hypothesis explores arbitrary bytes, corrupted
real images of every accepted format, and arbitrary pixel content.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, example, given, settings
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


# --- every mode and bit depth (issue 14) ----------------------------------------------------------

# (mode, formats Pillow writes it in): 16-bit, 32-bit integer and float, CMYK, palette, 1-bit, alpha.
MODES = {
    "1": ("PNG", "TIFF", "BMP"),
    "L": ("PNG", "TIFF", "JPEG", "GIF", "WEBP"),
    "LA": ("PNG", "TIFF"),
    "P": ("PNG", "TIFF", "GIF", "BMP"),
    "RGB": ("PNG", "TIFF", "JPEG", "WEBP", "BMP"),
    "RGBA": ("PNG", "TIFF", "WEBP"),
    "CMYK": ("TIFF", "JPEG"),
    "I;16": ("PNG", "TIFF"),
    "I": ("TIFF",),
    "F": ("TIFF",),
}
MODE_AND_FORMAT = st.sampled_from([(m, f) for m, fmts in MODES.items() for f in fmts])
# Sizes up to 700 a side (and thin strips): beyond WORK_SIDE / 0.8, so the shrinking path runs too.
SIDES = st.tuples(st.integers(1, 700), st.integers(1, 700)) | st.sampled_from([(1, 700), (700, 1), (3, 650)])


def in_mode(base: np.ndarray, mode: str, raw: np.ndarray | None = None) -> Image.Image:
    """`base` (uint8) as an image of `mode`; `raw`, when given, is the full-range 16-bit or float content."""
    if mode == "I;16":
        values = raw.astype("<u2") if raw is not None else base.astype("<u2") * 257
        return Image.frombytes("I;16", (base.shape[1], base.shape[0]), values.tobytes())
    if mode == "F":
        return Image.fromarray(raw.astype(np.float32) if raw is not None else base.astype(np.float32) / 255, "F")
    if mode == "I":
        return Image.fromarray(base.astype(np.int32) * 1000 if raw is None else raw.astype(np.int32), "I")
    return Image.fromarray(base).convert(mode)


@st.composite
def images_of_any_mode(draw):
    mode, fmt = draw(MODE_AND_FORMAT)
    h, w = draw(SIDES)
    base = draw(arrays(np.uint8, (h, w), elements=st.integers(0, 255), fill=st.integers(0, 255)))
    raw = None
    if mode == "I;16" and draw(st.booleans()):
        raw = draw(arrays(np.uint16, (h, w), fill=st.integers(0, 65535)))
    elif mode == "F" and draw(st.booleans()):  # any float32 a TIFF can hold, NaN and infinities included
        raw = draw(arrays(np.float32, (h, w), elements=st.floats(width=32), fill=st.floats(width=32)))
    elif mode == "I" and draw(st.booleans()):
        raw = draw(arrays(np.int32, (h, w), fill=st.integers(-(2**31), 2**31 - 1)))
    buf = io.BytesIO()
    in_mode(base, mode, raw).save(buf, fmt)
    return mode, fmt, buf.getvalue()


def _float_tiff(values: np.ndarray) -> tuple[str, str, bytes]:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.float32), "F").save(buf, "TIFF")
    return "F", "TIFF", buf.getvalue()


_NAN_INK = np.full((40, 40), np.nan, np.float32)
_NAN_INK[8:32, 18:22] = np.inf


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(images_of_any_mode())
@example(_float_tiff(_NAN_INK))
@example(_float_tiff(np.array([[-np.inf, 3e38], [0.5, 1e-30]])))
def test_any_mode_and_bit_depth_decodes_to_a_small_image_or_a_clear_error(case):
    from preprocessing.decode import WORK_SIDE, decode, decoded_bytes

    mode, fmt, data = case
    result = check(data)
    assert result is not None, f"a valid {mode} {fmt} is never an error"
    decoded = decode(data, max_pixels=10**8)
    # Whatever the mode, everything after decoding works on one small float array.
    assert decoded.gray.dtype == np.float32 and max(decoded.gray.shape) <= WORK_SIDE / 0.8 + 1
    assert np.isfinite(decoded.gray).all() and decoded.gray.min() >= 0 and decoded.gray.max() <= 255
    # The admission estimate, read from the header, covers at least the pixels themselves.
    w, h = decoded.size
    assert decoded_bytes(data, max_pixels=10**8) >= w * h // 64  # JPEGs are decoded at up to 1/8 scale
    assert decoded_bytes(data, max_pixels=w * h - 1) is None  # over the limit: refused unread


@SETTINGS
@given(
    st.sampled_from(["GIF", "TIFF", "PNG", "WEBP"]),
    st.integers(2, 6),
    arrays(np.uint8, st.tuples(st.integers(8, 64), st.integers(8, 64))),
)
def test_multi_frame_files_read_their_first_frame(fmt, frames, pixels):
    first = Image.fromarray(pixels)
    rest = [Image.fromarray(255 - pixels) for _ in range(frames - 1)]
    buf = io.BytesIO()
    first.convert("RGB" if fmt == "WEBP" else "L").save(
        buf, fmt, save_all=True, append_images=[r.convert("RGB" if fmt == "WEBP" else "L") for r in rest]
    )
    assert check(buf.getvalue()) is not None
