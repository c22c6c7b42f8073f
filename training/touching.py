"""Touching pairs: two MNIST training digits run together, as the one glyph Read sees when their inks
meet. The several-digits head (model/gate.py) learns from them that a glyph is two digits, not one.

Two ways, as for the not-a-digit gate's outliers: framed like MNIST straight from the arrays, and drawn
as phone photos, scans and canvas sketches (testkit's number renderers, the same as the benchmark's
"touching" style) and segmented by Read's own pipeline, keeping the pair only where Read found one glyph
(where it parted the two digits by itself there is nothing to learn). Only MNIST *training* digits are
drawn: the benchmark composes its pairs from test digits.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from preprocessing.normalize import fit_and_center

# How far the second digit's ink runs into the first's, in digit heights (the benchmark's touching
# style draws -0.15..-0.05; a little wider on both sides so the head does not learn one spacing).
OVERLAP = (-0.2, -0.03)


def _strip(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from testkit.robustness_set import compose

    return compose([a, b], [float(rng.uniform(*OVERLAP))], rng)


def as_array(job: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    """The pair's ink framed like one MNIST digit (28x28 uint8)."""
    a, b, seed = job
    strip = _strip(a, b, np.random.default_rng(seed))
    ys, xs = np.nonzero(strip > 30)
    return fit_and_center(strip[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255.0)


def as_read(job: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray | None:
    """The pair drawn as a photo, scan or sketch, segmented by Read; the whole glyph's 28x28 image when
    Read found exactly one glyph, else None."""
    from preprocessing.errors import PreprocessError
    from preprocessing.reading import read
    from testkit.robustness_set import number_scan, number_sketch, photo

    a, b, seed = job
    rng = np.random.default_rng(seed)
    strip = _strip(a, b, rng)
    draw = (lambda s, r: photo(s, r, paper="plain"), number_scan, number_sketch)[seed % 3]
    try:
        slots = read(draw(strip, rng)[1], max_pixels=40_000_000)
    except PreprocessError:
        return None
    if len(slots) != 1 or not slots[0].options or len(slots[0].options[0]) != 1:
        return None
    return slots[0].options[0][0].pixels


def pairs(images: np.ndarray, arrays: int, drawn: int, seed: int, workers: int) -> np.ndarray:
    """`arrays` pairs framed from the arrays and up to `drawn` drawn and segmented; (m, 28, 28) uint8."""
    rng = np.random.default_rng([seed, 23])
    picks = rng.integers(0, len(images), (arrays + drawn, 2))
    jobs = [(images[i], images[j], seed * 1_000_003 + k) for k, (i, j) in enumerate(picks)]
    out = [as_array(job) for job in tqdm(jobs[:arrays], desc="touching pairs", unit="img", leave=False)]
    if drawn:
        with ProcessPoolExecutor(workers) as pool:
            done = pool.map(as_read, jobs[arrays:], chunksize=16)
            out += [x for x in tqdm(done, total=drawn, desc="touching pairs as photos", unit="img") if x is not None]
    return np.stack(out) if out else np.zeros((0, 28, 28), np.uint8)


__all__ = ["OVERLAP", "as_array", "as_read", "pairs"]
