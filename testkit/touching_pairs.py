"""Photos of two touching MNIST test digits that Read's segmentation leaves as one glyph and that a
checkpoint's several-digits head flags (model/gate.py), for the end-to-end tests of Predict's
SEVERAL_DIGITS and of Read cutting the glyph.

Chosen offline with the checkpoint itself (as `not_digits.refused_photos` chooses letters), so the
tests check what the server does with the head's answer, whatever the head's exact weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.shape import NOT_A_DIGIT_INDEX, SEVERAL_DIGITS_INDEX
from preprocessing import preprocess
from testkit.robustness_set import render_numbers


@dataclass(frozen=True)
class TouchingPair:
    text: str  # the two digits, e.g. "23"
    photo: bytes  # a phone photo of them, inks touching
    pixels: bytes  # the 784 bytes Predict's preprocessing makes of it (the merged glyph)


def flagged_pairs(
    model: Path, digits: np.ndarray, labels: np.ndarray, want: int = 4, tries: int = 80
) -> list[TouchingPair]:
    """Up to `want` touching pairs (the benchmark's "touching" style, seed 0) that Predict's preprocessing
    takes for one digit, that the not-a-digit gate passes and that the several-digits head flags."""
    loaded = load_checkpoint(model)
    if loaded.several is None or loaded.gate is None:
        raise AssertionError(f"{model} has no several-digits head or no not-a-digit gate")
    served = loaded.served()
    out = []
    for sample in render_numbers("touching", digits, labels, tries, 0):
        found = preprocess(sample.data)
        if not found.digit_found or found.several:
            continue
        with torch.no_grad():
            row = served(torch.from_numpy(found.pixels.copy()).float().div(255).view(1, 1, 28, 28))[0]
        if row[SEVERAL_DIGITS_INDEX] >= loaded.several.threshold and row[NOT_A_DIGIT_INDEX] < loaded.gate.threshold:
            out.append(TouchingPair(sample.text, sample.data, found.pixels.tobytes()))
            if len(out) == want:
                break
    return out


__all__ = ["TouchingPair", "flagged_pairs"]
