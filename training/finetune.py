"""Fine-tuning from users' corrections: `digits-train --init-from CKPT --extra-data DIR [--extra-weight W]`.

Why mix rather than train on the corrections alone: a few hundred images of one kind of
handwriting would pull the model toward them and away from everything else. Every batch keeps
MNIST's variety and takes a fixed share (`--extra-weight`) from the corrections, so the model
learns the new style while rehearsing the old ones; the before/after figures on MNIST test and on
the held-out corrections show both effects side by side.

`DIR` is what `digits-feedback export` writes: MNIST IDX files (train-* to learn from, t10k-* held
out) and feedback-export.json, whose checksums go into the checkpoint's metadata so the model
names the data it saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.data import MnistFileError, Split, load_split
from training.metrics import collect_logits, report

MANIFEST = "feedback-export.json"


@dataclass
class ExtraData:
    directory: Path
    train: Split
    holdout: Split
    manifest: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """What goes into the checkpoint's metadata: where, how many, and the files' SHA-256."""
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(self.directory.glob("*-ubyte*"))}
        return {
            "dir": str(self.directory.resolve()),
            "train": len(self.train),
            "holdout": len(self.holdout),
            "files": files,
            "export": {k: v for k, v in self.manifest.items() if k != "files"},
        }


def load_extra(directory: Path) -> ExtraData:
    """The exported corrections; a folder with no t10k-* files has an empty held-out part."""
    train = load_split("train", directory, download=False, any_size=True)
    if len(train) == 0:
        raise MnistFileError(f"{directory}: the extra training data holds no images")
    try:
        holdout = load_split("test", directory, download=False, any_size=True)
    except MnistFileError:
        holdout = Split(train.images[:0], train.labels[:0])
    manifest_path = directory / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return ExtraData(directory, train, holdout, manifest)


def extra_count(batch: int, weight: float) -> int:
    """How many of a batch's images come from the corrections (at least one when weight > 0)."""
    return 0 if weight <= 0 else max(1, min(batch - 1, round(batch * weight)))


def mix(
    x: torch.Tensor, y: torch.Tensor, extra: Split, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the last `k` images of an MNIST batch (uint8 images, labels) with random corrections."""
    if k <= 0:
        return x, y
    idx = torch.randint(len(extra), (k,), generator=generator)
    return torch.cat([x[: len(x) - k], extra.images[idx]]), torch.cat([y[: len(y) - k], extra.labels[idx]])


def accuracies(model: torch.nn.Module, mnist_test: Split, extra: ExtraData, device) -> dict[str, float | None]:
    """MNIST test accuracy, held-out-correction accuracy and accuracy on the corrections trained on
    (None where there are none)."""
    model.eval()

    def accuracy(split: Split) -> float | None:
        return report(collect_logits(model, split, device=device), split.labels).accuracy if len(split) else None

    return {
        "mnist_test_accuracy": accuracy(mnist_test),
        "holdout_accuracy": accuracy(extra.holdout),
        "extra_train_accuracy": accuracy(extra.train),
    }


def format_comparison(before: dict, after: dict, holdout: int) -> str:
    def pct(v: float | None) -> str:
        return "   n/a " if v is None else f"{100 * v:6.2f}%"

    rows = [
        ("MNIST test", "mnist_test_accuracy"),
        (f"held-out corrections ({holdout})", "holdout_accuracy"),
        ("corrections trained on", "extra_train_accuracy"),
    ]
    lines = [f"{'accuracy':34s} {'before':>8s} {'after':>8s}"]
    lines += [f"{name:34s} {pct(before[key])} {pct(after[key])}" for name, key in rows]
    return "\n".join(lines)


__all__ = ["ExtraData", "accuracies", "extra_count", "format_comparison", "load_extra", "mix"]
