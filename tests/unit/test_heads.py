"""Carrying the gate and the several-digits head through a fine-tune (training/heads.py): kept with new
thresholds when the encoder moved a little, dropped when it no longer gives the features they read."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint, tensors_digest
from training.data import load_split, train_val_split
from training.heads import MIN_SHARE, carry


@pytest.fixture(scope="module")
def start(shipped_model_path):
    return load_checkpoint(shipped_model_path)


@pytest.fixture(scope="module")
def val(mnist_dir):
    return train_val_split(load_split("train", mnist_dir, download=False))[1].subset(2000)


def _moved(encoder, noise: float, seed: int = 0):
    moved = copy.deepcopy(encoder)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moved.parameters():
            if p.numel() > 1:
                p.add_(noise * p.std() * torch.randn(p.shape, generator=g))
    return moved


def test_a_slightly_moved_encoder_keeps_both_heads_bound_to_its_weights(start, val, tmp_path):
    encoder = _moved(start.model, 0.02)
    carried = carry(start, encoder, start.temperature, val, heldout=300)
    assert carried.gate is not None and carried.several is not None, carried.report()
    sha = tensors_digest({k: v.detach() for k, v in encoder.state_dict().items()})
    assert carried.gate.encoder_sha256 == sha and carried.several.encoder_sha256 == sha
    assert carried.gate.encoder_sha256 != start.gate.encoder_sha256
    for key in ("gate", "several"):
        f = carried.figures[key]
        assert f["kept"] and f["after"] >= f["before"] - 0.05 and 0.5 <= f["threshold_after"] < 1.0
    # saved with the fine-tuned encoder, they load and serve (save_checkpoint drops heads bound to other weights)
    path = tmp_path / "ft.safetensors"
    save_checkpoint(path, encoder, start.temperature, gate=carried.gate, several=carried.several)
    loaded = load_checkpoint(path)
    assert loaded.gate is not None and loaded.several is not None
    assert loaded.gate.threshold == pytest.approx(carried.gate.threshold)
    assert "kept" in carried.report() and "DROPPED" not in carried.report()


def test_an_encoder_that_moved_far_loses_the_heads_with_the_command_to_train_them(start, val):
    carried = carry(start, _moved(start.model, 1.0), start.temperature, val, heldout=300)
    assert carried.gate is None and carried.several is None, carried.report()
    for key in ("gate", "several"):
        f = carried.figures[key]
        assert not f["kept"] and f["after"] < MIN_SHARE * f["before"]
    command = "(run digits-train-gate --heads gate --checkpoint runs/ft/x.safetensors)"
    assert command in carried.report("runs/ft/x.safetensors")


def test_realigning_a_head_brings_its_answers_on_the_moved_features_back_to_the_old_ones(start, val):
    """training.heads._realign: the carried gate, taught on unlabelled images to say on the moved encoder's
    features what it said on the old encoder's, agrees with its old answers better than before."""
    from training import outliers
    from training.gate import floats, outputs
    from training.heads import _realign

    images = floats(np.concatenate([val.images.numpy()[:1000], outliers.bank(1000, "train", seed=1)]))
    moved = _moved(start.model, 0.3)
    old = start.gate.eval()
    with torch.no_grad():
        target = torch.sigmoid(old(outputs(start.model, start.temperature, images, "old")[1]))
        features = outputs(moved, start.temperature, images, "new")[1]
        gap_before = (torch.sigmoid(old(features)) - target).abs().mean()
    new = copy.deepcopy(old)
    _realign(new, old, images, start.model, start.temperature, moved, start.temperature)
    with torch.no_grad():
        gap_after = (torch.sigmoid(new(features)) - target).abs().mean()
    assert gap_after < 0.5 * gap_before, (gap_before, gap_after)
