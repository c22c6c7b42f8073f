"""Outlier exposure for `digits-train --outliers` (Hendrycks, Mazeika & Dietterich, ICLR 2019).

Every batch of digits gets `--outlier-ratio` as many non-digit images (training/outliers.py, the
training split only), augmented like the digits. On them the loss is the cross-entropy against the
uniform distribution over the 10 classes, `-mean_k log softmax(z / T)_k`, weighted by `--outlier-weight`
(0.5 in the paper), where T (`--outlier-temperature`) is the calibration temperature the model will be
given: with label smoothing the fitted temperature is below 1 and sharpens every softmax, so logits
that are flat only at T = 1 come back confident after calibration. The model learns to be unsure on
letters, symbols and doodles instead of naming the closest digit. The output stays 10 logits, so the
server, the contract and the calibration (temperature refitted on the MNIST validation split) are
unchanged; a letter simply comes back with a low confidence.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from training import outliers
from training.metrics import collect_logits

HELDOUT_EVAL = 2000  # held-out outliers measured before/after in `digits-train` (fixed seed)


def uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the cross-entropy between uniform and softmax(logits); log(10) at best."""
    if logits.numel() == 0:
        return logits.sum()
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


class OutlierExposure:
    """The bank of rendered outliers and how many go into each batch."""

    def __init__(self, images: np.ndarray, per_batch: int, seed: int, seconds: float = 0.0) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.per_batch = per_batch
        self.seed = seed
        self.seconds = seconds

    @classmethod
    def from_args(cls, args: argparse.Namespace, batch: int) -> OutlierExposure:
        if min(args.outlier_ratio, args.outlier_temperature) <= 0 or args.outlier_weight < 0 or args.outlier_count < 1:
            raise RuntimeError(
                "--outlier-weight must be >= 0, --outlier-ratio and --outlier-temperature > 0, --outlier-count >= 1"
            )
        t0 = time.time()
        images = outliers.bank(args.outlier_count, "train", seed=args.seed)
        return cls(images, max(1, round(batch * args.outlier_ratio)), args.seed, time.time() - t0)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """(per_batch, 28, 28) uint8 outliers, drawn with replacement."""
        return self.images[torch.randint(len(self.images), (self.per_batch,), generator=generator)]

    def describe(self) -> dict:
        """What goes into the checkpoint's metadata."""
        return {
            "generator": "training/outliers.py",
            "split": "train",
            "count": len(self.images),
            "seed": self.seed,
            "per_batch": self.per_batch,
            "fonts": [f.rsplit("/", 1)[-1] for f in outliers.fonts("train")],
            "hands": list(outliers.hands("train")),
        }


def share_unsure(model: torch.nn.Module, temperature: float, images: np.ndarray, device) -> dict[str, float]:
    """On outlier images: the share the model answers under 50% and at 90% or more (calibrated)."""
    from training.data import Split

    split = Split(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long))
    logits = collect_logits(model, split, device=device)
    conf = torch.softmax(logits.float() / temperature, dim=1).amax(1)
    return {"under_50": float((conf < 0.5).float().mean()), "at_least_90": float((conf >= 0.9).float().mean())}


def compare(args: argparse.Namespace, model: torch.nn.Module, temperature: float, device) -> dict[str, float]:
    """Held-out outliers (fonts and hands never trained on) before and after, as a flat row for the summary."""
    from model.checkpoint import load_checkpoint

    images = outliers.bank(HELDOUT_EVAL, "heldout", seed=0)
    after = share_unsure(model, temperature, images, device)
    row = {f"after_{k}": v for k, v in after.items()}
    if args.init_from:
        start = load_checkpoint(args.init_from, device=device)
        before = share_unsure(start.model, start.temperature, images, device)
        row.update({f"before_{k}": v for k, v in before.items()})
    print(
        f"held-out non-digits ({len(images)}) under 50%: "
        + (f"{row['before_under_50']:.1%} -> " if "before_under_50" in row else "")
        + f"{row['after_under_50']:.1%}; at >= 90%: "
        + (f"{row['before_at_least_90']:.1%} -> " if "before_at_least_90" in row else "")
        + f"{row['after_at_least_90']:.1%}"
    )
    return row


__all__ = ["HELDOUT_EVAL", "OutlierExposure", "compare", "share_unsure", "uniform_loss"]
