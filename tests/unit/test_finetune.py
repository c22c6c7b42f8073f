"""A tiny fine-tuning run: the shipped model, MNIST mixed with exported corrections of a style it
reads badly (upside-down digits), before/after figures, and the data named in the checkpoint."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from model.checkpoint import load_checkpoint, read_metadata
from server.feedback_cli import export
from server.feedback_store import FeedbackStore
from training.train import parse_args, train


@pytest.fixture(scope="module")
def corrections(tmp_path_factory, mnist_test):
    """80 upside-down MNIST test digits sent as corrections, exported with a 25% hold-out."""
    root = tmp_path_factory.mktemp("corrections")
    with FeedbackStore(root / "feedback.sqlite3") as store:
        for img, label in zip(mnist_test.images[-80:], mnist_test.labels[-80:], strict=True):
            flipped = np.ascontiguousarray(np.rot90(img.numpy(), 2))
            store.add(flipped.tobytes(), predicted=0, correct=int(label), model_version="shipped", user="u")
    manifest = export([root / "feedback.sqlite3"], root / "export", holdout=0.25)
    assert manifest["train"] > 40 and manifest["holdout"] > 5
    return root / "export"


def test_tiny_finetune_learns_the_corrections_and_names_its_data(
    corrections, shipped_model_path, mnist_dir, tmp_path, capsys, wandb_run_bytes
):
    os.environ["WANDB_MODE"] = "offline"
    run_dir = tmp_path / "ft"
    summary = train(
        parse_args(
            [
                "--init-from", str(shipped_model_path),
                "--extra-data", str(corrections),
                "--extra-weight", "0.5",
                "--data-dir", str(mnist_dir),
                "--run-dir", str(run_dir),
                "--limit-train", "1536",
                "--limit-eval", "500",
                "--epochs", "1",
                "--batch-size", "64",
                "--lr", "1e-3",
                "--warmup-epochs", "0.1",
                "--ema-decay", "0",
                "--no-augment",
            ]
        )
    )  # fmt: skip
    before, after = summary["finetune"]["before"], summary["finetune"]["after"]
    assert before["mnist_test_accuracy"] > 0.98  # the shipped model, on the first 500 test digits
    assert before["extra_train_accuracy"] < 0.6  # it reads upside-down digits badly
    assert after["extra_train_accuracy"] > before["extra_train_accuracy"] + 0.2  # it learnt them
    assert after["mnist_test_accuracy"] > 0.9  # without forgetting MNIST
    printed = capsys.readouterr().out
    assert "held-out corrections" in printed and "before" in printed

    checkpoint = run_dir / "digits-encoder.safetensors"
    meta = read_metadata(checkpoint)
    data = json.loads(meta["data"])
    shipped = read_metadata(shipped_model_path)
    assert data["init_from"]["version"] == shipped["version"] and data["init_from"]["sha256"] == shipped["sha256"]
    assert data["extra"]["dir"] == str(corrections.resolve())
    assert data["extra"]["files"]["train-images-idx3-ubyte.gz"] == json.loads(
        (corrections / "feedback-export.json").read_text()
    )["files"]["train-images-idx3-ubyte.gz"]
    assert json.loads(meta["finetune"])["after"] == after
    loaded = load_checkpoint(checkpoint)
    assert loaded.config == load_checkpoint(shipped_model_path).config
    # the shipped gate and several-digits head were checked on the new encoder: kept (re-bound) or dropped
    assert "held-out non-digits refused" in printed and "touching test pairs flagged" in printed
    heads = json.loads(meta["finetune"])["heads"]
    assert (loaded.gate is not None) == heads["gate_kept"] and (loaded.several is not None) == heads["several_kept"]
    assert b"finetune/after/holdout_accuracy" in wandb_run_bytes(run_dir, b"finetune/after/holdout_accuracy")
