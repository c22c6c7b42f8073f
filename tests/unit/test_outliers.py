"""The non-digit generator (training/outliers.py), the outlier-exposure loss, and a tiny fine-tuning
run with `digits-train --outliers` that must make the shipped model less sure on held-out non-digits."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from model.checkpoint import read_metadata
from training import outliers
from training.outlier_exposure import uniform_loss
from training.train import parse_args, train


@pytest.fixture(scope="module")
def both_splits():
    return {split: outliers.generate(240, split, seed=3) for split in outliers.SPLITS}


def test_images_are_mnist_shaped_inked_and_centred(both_splits):
    for split, items in both_splits.items():
        assert {o.kind for o in items} == set(outliers.KINDS), split
        for o in items:
            assert o.image.shape == (28, 28) and o.image.dtype == np.uint8
            assert o.image.max() == 255 and (o.image > 128).sum() >= 12
            ys, xs = np.nonzero(o.image)
            assert ys.max() - ys.min() < 21 and xs.max() - xs.min() < 21  # fitted in MNIST's 20x20 box
            assert max(ys.max() - ys.min(), xs.max() - xs.min()) >= 19  # and filling it
            cy, cx = ndi.center_of_mass(o.image.astype(float))
            assert abs(cy - 14) < 3 and abs(cx - 14) < 3, (o.kind, o.text)


def test_no_digit_look_alikes_and_no_digits(both_splits):
    drawn = "".join(o.text for items in both_splits.values() for o in items if o.kind != "doodle")
    drawn += "".join(o.text for items in both_splits.values() for o in items if o.text not in outliers.DOODLES)
    assert drawn and not set(drawn) & outliers.EXCLUDED
    assert not any(c.isdigit() for c in drawn)
    assert set("OoDIliZzSsBbGgq") <= outliers.EXCLUDED  # the look-alikes the docstring names
    assert not set(outliers.LETTERS + outliers.FONT_SYMBOLS + outliers.HAND_SYMBOLS) & outliers.EXCLUDED


def test_train_and_heldout_share_no_source_and_no_image(both_splits):
    train_fonts, held_fonts = set(outliers.fonts("train")), set(outliers.fonts("heldout"))
    assert train_fonts and held_fonts and not train_fonts & held_fonts
    assert not set(outliers.hands("train")) & set(outliers.hands("heldout"))
    sources = {split: {o.source for o in items if o.kind != "doodle"} for split, items in both_splits.items()}
    assert not sources["train"] & sources["heldout"]
    digests = {
        split: {hashlib.sha256(o.image.tobytes()).digest() for o in items} for split, items in both_splits.items()
    }
    assert not digests["train"] & digests["heldout"]


def test_the_same_arguments_give_the_same_images():
    a, b = outliers.bank(40, "heldout", seed=7), outliers.bank(40, "heldout", seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, outliers.bank(40, "heldout", seed=8))
    with pytest.raises(ValueError):
        outliers.generate(1, "test")


def test_uniform_loss_is_least_on_flat_logits_and_pulls_confident_ones_flat():
    flat = torch.zeros(4, 10)
    assert uniform_loss(flat).item() == pytest.approx(math.log(10), abs=1e-6)
    peaked = torch.zeros(4, 10)
    peaked[:, 3] = 8.0
    assert uniform_loss(peaked).item() > math.log(10) + 0.5
    z = peaked.clone().requires_grad_(True)
    uniform_loss(z).backward()
    step = z - 0.5 * z.grad
    assert torch.softmax(step, 1).amax(1).max() < torch.softmax(peaked, 1).amax(1).min()
    # against one-hot cross-entropy: the uniform target is not the digit loss in disguise
    assert uniform_loss(peaked).item() != pytest.approx(
        torch.nn.functional.cross_entropy(peaked, torch.full((4,), 3)).item()
    )


def test_tiny_finetune_with_outliers_makes_the_model_unsure_on_heldout_non_digits(
    shipped_model_path, mnist_dir, tmp_path, capsys
):
    run_dir = tmp_path / "oe"
    summary = train(
        parse_args(
            [
                "--init-from", str(shipped_model_path),
                "--outliers", "--outlier-count", "400", "--outlier-weight", "1.0", "--outlier-ratio", "0.5",
                "--data-dir", str(mnist_dir),
                "--run-dir", str(run_dir),
                "--limit-train", "768",
                "--limit-eval", "500",
                "--epochs", "1",
                "--batch-size", "64",
                "--lr", "1e-3",
                "--warmup-epochs", "0.1",
                "--ema-decay", "0",
                "--no-augment",
                "--no-wandb",
            ]
        )
    )  # fmt: skip
    row = summary["finetune"]["outliers"]
    assert row["before_under_50"] < 0.2  # the shipped model is sure of itself on letters and doodles
    assert row["after_under_50"] > row["before_under_50"] + 0.2  # a few steps of outlier exposure change that
    assert row["after_at_least_90"] < row["before_at_least_90"]
    assert summary["finetune"]["after"]["mnist_test_accuracy"] > 0.97  # and digits are still read
    assert "held-out non-digits" in capsys.readouterr().out
    data = json.loads(read_metadata(run_dir / "digits-encoder.safetensors")["data"])
    assert data["outliers"]["count"] == 400 and data["outliers"]["split"] == "train"
    assert not set(data["outliers"]["fonts"]) & {f.rsplit("/", 1)[-1] for f in outliers.fonts("heldout")}
