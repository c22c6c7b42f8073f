"""Checkpoints rebuild the model from the file alone and refuse anything that does not check out."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from model.encoder import DigitEncoder, EncoderConfig


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = DigitEncoder(EncoderConfig(dim=32, depth=2, heads=2)).eval()
    path = tmp_path / "m.safetensors"
    version = save_checkpoint(path, model, temperature=1.3, version="test-1")
    return path, model, version


def test_round_trip_rebuilds_the_same_model(saved):
    path, model, version = saved
    loaded = load_checkpoint(path)
    assert version == "test-1" and loaded.version == "test-1"
    assert loaded.temperature == pytest.approx(1.3)
    assert loaded.config == model.cfg
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))


def test_tampered_weights_are_refused(saved):
    path, _, _ = saved
    state = load_file(str(path))
    meta = read_metadata(path)
    state["head.bias"] = state["head.bias"] + 0.5
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_checkpoint(path)


def test_configuration_that_does_not_fit_the_weights_is_refused(saved):
    path, _, _ = saved
    state = load_file(str(path))
    meta = read_metadata(path)
    cfg = json.loads(meta["config"])
    cfg["depth"] = 3
    meta["config"] = json.dumps(cfg)
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit the configuration"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a digits checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_corrupt_bytes_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_file_is_refused(saved):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
