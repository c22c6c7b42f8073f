"""preprocessing.reading without a model: which glyphs a number's picture holds, where the gaps are, and
that a pencil number under uneven light is read on the map that keeps its thin strokes.

Each case is one failure class the robustness benchmark showed (`benchmarks/preprocess_robustness.py
--show-errors`): a crumb of ink half-way up between two digits taken for a comma ("94 6491"), a 5's
detached top bar taken for a dash ("5 8"), a pencil number whose box spans the page's lighting gradient
sent to the marker map, where only its darkest digit survived ("477836" read "4")."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from preprocessing.reading import _glyphs, _Piece, read
from testkit import robustness_set as rs


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pair(digit_samples) -> np.ndarray:
    """ "12" as a strip (light ink on black, MNIST's convention) with a wide gap between the two digits."""
    return rs.compose([digit_samples[1][0], digit_samples[2][0]], [0.45], np.random.default_rng(0))


def _gap_column(strip: np.ndarray) -> int:
    cols = np.nonzero(strip.max(axis=0) > 40)[0]
    gaps = np.nonzero(np.diff(cols) > 3)[0]
    return int((cols[gaps[0]] + cols[gaps[0] + 1]) // 2)


@pytest.mark.parametrize(("row", "separator"), [(17, ""), (29, " ")])
def test_a_dot_between_digits_is_a_gap_only_on_the_baseline(pair, row, separator):
    """A period sits on the line's foot; a dot half-way up is a speck or a crumb of a stroke."""
    strip = pair.copy()
    x = _gap_column(strip)
    strip[row - 1 : row + 1, x - 1 : x + 1] = 255
    slots = read(png(255 - strip.repeat(5, 0).repeat(5, 1)), max_pixels=10**8)
    assert len(slots) == 2
    assert slots[1].separator == separator


def test_a_detached_flat_bar_across_a_digits_columns_is_part_of_it():
    """A 5's top bar drawn apart, overlapping the body's columns and height: one glyph, not a dash."""
    body = _Piece((256, 23, 301, 72), 170.0, 1)
    bar = _Piece((236, 63, 276, 76), 76.0, 2)
    other = _Piece((177, 33, 219, 92), 250.0, 3)  # the digit before it stays apart
    glyphs = _glyphs([body, bar, other])
    assert len(glyphs) == 2
    assert sorted(len(g.pieces) for g in glyphs) == [1, 2]


def test_a_pencil_number_under_a_lighting_gradient_keeps_every_digit(mnist_test):
    """A pencil "477836" on a page much darker at one end than the other (the benchmark's photo 11 of seed 0):
    each digit is measured against the paper around it, so the thin-stroke map is kept and all six are found
    (the whole number's box against one paper level called the strokes "hollow" and sent it to the marker
    map, where only the "4" was dark enough)."""
    digits, labels = mnist_test.images.numpy(), mnist_test.labels.numpy()
    sample = rs.render_numbers("photo", digits, labels, 12, 0)[11]
    assert sample.text == "477836" and sample.variant == "photo/pencil"
    assert len(read(sample.data, max_pixels=10**8)) == 6


def test_small_digits_of_a_block_of_lines_are_not_blobs(mnist_test):
    """Three short lines in a photo ("7311", "4", "77", the benchmark's lines sample 2 of seed 0): each digit
    is ~19 working pixels tall and its blurred fringe as wide as its strokes. Measured on the strokes' cores,
    none is a solid blob, so none is dropped (only "11" was read)."""
    digits, labels = mnist_test.images.numpy(), mnist_test.labels.numpy()
    sample = rs.render_numbers("lines", digits, labels, 3, 0)[2]
    assert sample.text == "7311\n4\n77"
    slots = read(sample.data, max_pixels=10**8)
    assert len(slots) == 7
    assert [s.separator for s in slots] == ["", "", "", "", "\n", "\n", ""]


def test_a_solid_dark_blob_on_a_photo_is_still_no_digit():
    """The blob test looks at the strokes' cores now: a glare-like solid disc must still be dropped."""
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gray = 130.0 + 100.0 * xx / w + np.random.default_rng(1).normal(0.0, 2.0, (h, w))  # not a flat page
    disc = np.hypot(yy - 120, xx - 160) < 9  # narrower than the background closing: solid on the thin-stroke map
    gray[disc] = 60.0
    assert read(png(np.clip(gray, 0, 255).astype(np.uint8)), max_pixels=10**8) == []


def test_a_narrow_digit_touching_a_wide_one_is_offered_its_own_cut():
    """A "1" joined by a thin bridge to a wide "0": the equal-width cut and the thinnest column near the
    middle both fall inside the 0; one alternative must cut at the bridge, where the 1 ends (the model then
    picks among them, server/reading.py)."""
    img = np.full((140, 180), 255, np.uint8)
    ys, xs = np.mgrid[:140, :180]
    img[20:120, 25:47] = 0  # the "1": 22 px wide, 100 tall
    ring = ((xs - 100) / 52.0) ** 2 + ((ys - 70) / 50.0) ** 2
    img[(ring <= 1.0) & (ring >= 0.62)] = 0  # the "0": x 48-152
    img[67:73, 46:50] = 0  # where they touch
    (slot,) = read(png(img), max_pixels=10**8)
    left = slot.options[0][0].box[0]
    cuts = [o[0].box[0] + o[0].box[2] - left for o in slot.options if len(o) == 2]
    assert any(abs(c - 22) <= 5 for c in cuts), cuts


@pytest.mark.parametrize(("index", "text"), [(5, "97800"), (8, "71")])
def test_digits_joined_to_the_frame_by_a_faint_grid_line_are_still_found(mnist_test, index, text):
    """Squared paper whose grid the line finder leaves faint traces of (the benchmark's photo-squared samples 5
    and 8 of seed 1): the trace joins the strokes to the paper's edge, and the whole group was dropped as a band
    along the frame ("97800" read "0", "71" read "1"). The band's faint pixels away from its strong ink are cut,
    and what comes off it at a digit's size, away from the frame, is ink again."""
    digits, labels = mnist_test.images.numpy(), mnist_test.labels.numpy()
    sample = rs.render_numbers("photo-squared", digits, labels, index + 1, 1)[index]
    assert sample.text == text
    assert len(read(sample.data, max_pixels=10**8)) == len(text)
