"""The ONNX Runtime model runtime against eager PyTorch on the whole MNIST test set, its disk
cache, and the fallback when a runtime's answers differ."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.gate import Served
from model.shape import SERVED_COLUMNS
from server import runtimes
from server.model_runner import ModelRunner

TOLERANCE = 1e-5  # largest |p_onnx - p_eager| accepted over the 10,000 test images (measured: ~3e-6)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh export cache for this module, so the first build really exports."""
    path = tmp_path_factory.mktemp("digits-cache")
    old = os.environ.get("DIGITS_CACHE_DIR")
    os.environ["DIGITS_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DIGITS_CACHE_DIR")
    else:
        os.environ["DIGITS_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def loaded(shipped_model_path):
    torch.set_num_threads(1)
    return load_checkpoint(shipped_model_path)


def in_chunks(predict, images: np.ndarray, size: int = 500) -> np.ndarray:
    return np.concatenate([predict(images[i : i + size]) for i in range(0, len(images), size)])


def test_onnx_matches_eager_on_the_whole_test_set(cache, loaded, mnist_test):
    onnx = runtimes.build("onnx", loaded.served(), threads=1)
    assert onnx is not None, "ONNX Runtime should be available and match eager on the probe"
    images = mnist_test.images.numpy().reshape(len(mnist_test.images), -1)
    got = in_chunks(onnx, images)
    want = in_chunks(runtimes.reference(loaded.served()), images)
    assert got.shape == want.shape == (10_000, SERVED_COLUMNS)  # the 10 digits, P(not a digit), P(several)
    got_digits, want_digits = got[:, :10].argmax(1), want[:, :10].argmax(1)
    assert np.array_equal(got_digits, want_digits), f"{(got_digits != want_digits).sum()} differ"
    assert float(np.abs(got - want).max()) <= TOLERANCE
    labels = mnist_test.labels.numpy()
    assert (got_digits == labels).sum() == (want_digits == labels).sum()
    assert list(cache.glob("digits-*.onnx")), "the export is cached for the next start"


def test_the_cached_export_is_reused_and_keyed_by_the_weights(cache, loaded):
    first = runtimes.export_onnx(loaded.served())
    files = set(cache.glob("digits-*.onnx"))
    assert runtimes.export_onnx(loaded.served()) == first and set(cache.glob("digits-*.onnx")) == files
    key = runtimes._model_key(loaded.served(), "onnx", "fp32")
    assert runtimes._model_key(Served(loaded.model, loaded.temperature * 2, loaded.gate), "onnx", "fp32") != key
    assert runtimes._model_key(Served(loaded.model, loaded.temperature, None), "onnx", "fp32") != key  # the gate too


def test_answers_beyond_the_tolerance_are_refused(cache, loaded):
    """int8 weights move probabilities far beyond the probe's tolerance: the check that keeps a
    runtime (fp32) would refuse them. int8 is built only when asked for, as not exact."""
    probe = runtimes._example(64).numpy()
    eager = runtimes.reference(loaded.served())(probe)
    fp32 = runtimes.build("onnx", loaded.served(), 1)
    int8 = runtimes.build("onnx", loaded.served(), 1, int8=True)
    assert fp32 is not None and int8 is not None
    assert runtimes.agrees(fp32(probe), eager)
    assert not runtimes.agrees(int8(probe), eager)
    assert not runtimes.agrees(eager[:, ::-1], eager) and not runtimes.agrees(eager[:10], eager)
    assert runtimes.build("no-such-runtime", loaded.served(), 1) is None


def test_the_runner_serves_onnx_and_falls_back(cache, shipped_model_path, mnist_test):
    images = mnist_test.images[:64].numpy()
    pixels = images.tobytes()
    onnx = ModelRunner(shipped_model_path, "cpu", threads=1, runtime="onnx")
    eager = ModelRunner(shipped_model_path, "cpu", threads=1)
    assert (onnx.runtime, eager.runtime) == ("onnx", "eager")
    (d1, p1), (d2, p2) = onnx.predict_arrays(pixels, 64), eager.predict_arrays(pixels, 64)
    assert np.array_equal(d1, d2) and np.abs(p1 - p2).max() <= TOLERANCE
    rows = onnx.predict(pixels, 64)
    assert [r[0] for r in rows] == d2.tolist() and all(abs(sum(r[2][:10]) - 1) < 1e-5 for r in rows)


def test_a_broken_onnx_model_falls_back_to_torchscript_or_eager(tmp_path, shipped_model_path, monkeypatch):
    """A cached export that ONNX Runtime cannot load (here: garbage) must not stop the server."""
    monkeypatch.setenv("DIGITS_CACHE_DIR", str(tmp_path))
    loaded = load_checkpoint(shipped_model_path)
    key = runtimes._model_key(loaded.served(), "onnx", "fp32")
    (tmp_path / f"digits-{key}.onnx").write_bytes(b"not an onnx model")
    assert ModelRunner(shipped_model_path, "cpu", threads=1, runtime="onnx").runtime == "eager"
    assert ModelRunner(shipped_model_path, "cpu", threads=1, graph=True, runtime="onnx").runtime == "torchscript"
