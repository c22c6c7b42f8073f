"""The checkpoint in models/ keeps the promises of its model card, on the official MNIST test set."""

import pytest

from model.checkpoint import load_checkpoint, read_metadata
from training.metrics import collect_logits, report


@pytest.fixture(scope="module")
def shipped_report(shipped_model_path, mnist_test):
    loaded = load_checkpoint(shipped_model_path)
    logits = collect_logits(loaded.model, mnist_test, batch_size=1000)
    return loaded, report(logits, mnist_test.labels, loaded.temperature)


def test_accuracy_and_loss(shipped_report):
    _, rep = shipped_report
    assert rep.accuracy >= 0.9940, f"test accuracy {rep.accuracy:.4%}"
    assert rep.loss <= 0.03, f"test loss {rep.loss:.4f}"
    assert min(rep.per_class_accuracy) >= 0.98


def test_confidence_is_calibrated(shipped_report):
    loaded, rep = shipped_report
    assert rep.ece <= 0.01, f"expected calibration error {rep.ece:.3%}"
    assert loaded.temperature != 1.0  # a temperature was actually fitted and stored


def test_metadata_describes_the_model(shipped_model_path, shipped_report):
    loaded, rep = shipped_report
    meta = read_metadata(shipped_model_path)
    assert loaded.version == meta["version"] and loaded.version.startswith("digits-encoder-")
    # the figures written into the file at export are the ones we measure now
    assert float(meta["test_accuracy"]) == pytest.approx(rep.accuracy, abs=1e-6)
    assert loaded.model.num_parameters() < 1_000_000

