"""Is it a digit at all? A small head that answers from the encoder's own features.

The encoder was trained on digits only, so a letter or a doodle still comes out as the closest
digit, often at 90% or more. Outlier exposure on the whole encoder (training/outlier_exposure.py)
flattened those answers only by giving up MNIST accuracy. This head leaves the encoder as it is
and learns, from its final token states and calibrated logits, "digit or not": the encoder's
answers on digits are untouched, and the head costs one 202x128 and one 128x1 matrix product per
image. It is trained by `digits-train-gate` (training/gate.py) and stored in the encoder's own
checkpoint (model/checkpoint.py), bound to the exact encoder weights it was trained on.

A second head of the same shape answers another question from the same features: is this one
digit, or two digits run together (a touching "23" that segmentation could not part)? The encoder,
trained on lone digits, reads a merged pair as one digit with full confidence; Read
(server/reading.py) weighs each way to cut a glyph by this head, so a cut that yields two clear
digits beats a "whole" that is really two. It is trained by `digits-train-gate` too.

`Served` is the whole served computation: images in, the 10 calibrated digit probabilities plus
P(not a digit) and P(several digits) out (`model.shape.SERVED_COLUMNS`); the server's runtimes
export exactly this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.encoder import DigitEncoder
from model.shape import NUM_CLASSES

DEFAULT_HIDDEN = 128


def gate_features(tokens: torch.Tensor, scaled_logits: torch.Tensor) -> torch.Tensor:
    """What the head sees: the class token, the mean and the max of the patch tokens (after the
    final norm), the temperature-scaled logits and the calibrated confidence."""
    confidence = torch.softmax(scaled_logits, dim=1).amax(dim=1, keepdim=True)
    patches = tokens[:, 1:]
    return torch.cat([tokens[:, 0], patches.mean(dim=1), patches.amax(dim=1), scaled_logits, confidence], dim=1)


def encoder_outputs(
    encoder: DigitEncoder, temperature: float, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(temperature-scaled logits, gate features) of `images` (floats in [0, 1])."""
    tokens = encoder.tokens(images)
    scaled = encoder.head(encoder.pool(tokens)).float() / temperature
    return scaled, gate_features(tokens.float(), scaled)


def feature_size(dim: int, classes: int = NUM_CLASSES) -> int:
    return 3 * dim + classes + 1


class NotADigitGate(nn.Module):
    """Standardized features -> MLP -> one logit, positive for "not a digit" (or, as the several-digits
    head, for "digits run together")."""

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        size = feature_size(dim, classes)
        self.dim, self.hidden, self.classes = dim, hidden, classes
        # Feature standardization, fitted on the training features; buffers, so they are saved with the weights.
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.net = nn.Sequential(nn.Linear(size, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "classes": self.classes}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std).squeeze(1)


class Served(nn.Module):
    """Images as floats in [0, 1] -> (n, 12): softmax(logits / T) for the 10 digits, then P(not a
    digit) from the gate and P(several digits) from the second head (0 where the checkpoint has none)."""

    def __init__(
        self,
        encoder: DigitEncoder,
        temperature: float,
        gate: NotADigitGate | None = None,
        several: NotADigitGate | None = None,
    ) -> None:
        super().__init__()
        if encoder.cfg.pool != "cls":
            gate = several = None  # the heads read the class token: a mean-pooled encoder is served without them
        self.encoder = encoder
        self.temperature = float(temperature)
        self.gate = gate
        self.several = several

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scaled, features = encoder_outputs(self.encoder, self.temperature, images)
        probs = torch.softmax(scaled, dim=1)
        heads = [
            torch.zeros_like(probs[:, :1]) if head is None else torch.sigmoid(head(features)).unsqueeze(1)
            for head in (self.gate, self.several)
        ]
        return torch.cat([probs, *heads], dim=1)


def gate_loss(logits: torch.Tensor, not_digit: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (F.binary_cross_entropy_with_logits(logits, not_digit, reduction="none") * weights).mean()


__all__ = ["NotADigitGate", "Served", "encoder_outputs", "feature_size", "gate_features", "gate_loss"]
