"""Photos of non-digits that a checkpoint's not-a-digit gate refuses, for tests of what the server and
the bots do with a refusal.

Held-out letters, symbols and doodles (training/outliers.py) are drawn as phone photos; a photo is kept
when, through the server's own preprocessing and the checkpoint's served computation, both Predict's
one glyph and every glyph Read would consider are refused. How many the gate refuses overall is the
benchmark's business (benchmarks/not_a_digit.py); this only picks clear cases to test the plumbing with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.shape import NOT_A_DIGIT_INDEX
from preprocessing import DEFAULT_MAX_PIXELS, preprocess
from preprocessing.reading import read
from testkit.photos import phone_photo
from training.outliers import generate


@dataclass(frozen=True)
class NonDigit:
    text: str  # what was drawn: a letter, a symbol or a doodle's name
    photo: bytes  # the encoded phone photo
    pixels: bytes  # Predict's 28x28 view of it (784 bytes)


@functools.cache
def refused_photos(model_path: Path, n: int = 4, seed: int = 5) -> tuple[NonDigit, ...]:
    loaded = load_checkpoint(model_path)
    if loaded.gate is None:
        raise ValueError(f"{model_path} has no not-a-digit gate")
    served, threshold = loaded.served(), loaded.gate.threshold

    def refused(pixels: list[np.ndarray]) -> bool:
        x = torch.from_numpy(np.stack(pixels)).float().div(255).view(-1, 1, 28, 28)
        with torch.no_grad():
            return bool((served(x)[:, NOT_A_DIGIT_INDEX] >= threshold).all())

    picked: list[NonDigit] = []
    for i, other in enumerate(generate(12 * n, "heldout", seed=seed)):
        photo = phone_photo(other.image, rng=np.random.default_rng([seed, i]))
        one = preprocess(photo)
        if not one.digit_found or one.several or not refused([one.pixels]):
            continue
        slots = read(photo, max_pixels=DEFAULT_MAX_PIXELS)
        glyphs = [d.pixels for slot in slots for option in slot.options for d in option]
        if glyphs and refused(glyphs):
            picked.append(NonDigit(other.text, photo, one.pixels.astype(np.uint8).tobytes()))
        if len(picked) == n:
            return tuple(picked)
    raise AssertionError(f"only {len(picked)} of {12 * n} held-out non-digits are refused by {model_path}")


__all__ = ["NonDigit", "refused_photos"]
