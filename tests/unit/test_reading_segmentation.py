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
