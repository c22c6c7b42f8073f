"""The encoder's shapes, configuration options and determinism."""

import pytest
import torch

from model.encoder import DigitEncoder, EncoderConfig, sinusoidal_positions


@pytest.mark.parametrize(
    "cfg",
    [
        EncoderConfig(),
        EncoderConfig(patch_size=7, dim=32, depth=1, heads=1, pool="mean"),
        EncoderConfig(patch_size=2, dim=48, depth=2, heads=3, mlp_ratio=4.0, pos_embedding="sinusoidal"),
    ],
    ids=["default", "single-head-mean-pool", "sinusoidal"],
)
def test_logits_shape_for_both_input_layouts(cfg):
    model = DigitEncoder(cfg).eval()
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    assert out.shape == (5, 10)
    assert torch.allclose(out, model(x.squeeze(1)), atol=1e-6)


def test_default_is_the_small_reference_encoder():
    assert DigitEncoder(EncoderConfig()).num_parameters() == 139_018


def test_patchify_is_row_major_non_overlapping():
    model = DigitEncoder(EncoderConfig(patch_size=7))
    img = torch.arange(28 * 28, dtype=torch.float32).view(1, 28, 28)
    patches = model.patchify(img)
    assert patches.shape == (1, 16, 49)
    assert torch.equal(patches[0, 1], img[0, :7, 7:14].flatten())
    assert torch.equal(patches[0, 4], img[0, 7:14, :7].flatten())


def test_same_seed_same_model_and_output():
    torch.manual_seed(3)
    a = DigitEncoder(EncoderConfig()).eval()
    torch.manual_seed(3)
    b = DigitEncoder(EncoderConfig()).eval()
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(a(x), b(x))
    torch.manual_seed(4)
    c = DigitEncoder(EncoderConfig()).eval()
    assert not torch.equal(a(x), c(x))


def test_output_does_not_depend_on_batch_neighbours():
    model = DigitEncoder(EncoderConfig()).eval()
    x = torch.rand(8, 1, 28, 28)
    with torch.inference_mode():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(8)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_sinusoidal_table_matches_the_paper():
    table = sinusoidal_positions(10, 8)
    assert torch.allclose(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(table[3, 1], torch.cos(torch.tensor(3.0)))
    assert torch.allclose(table[5, 2], torch.sin(torch.tensor(5.0 / 10000 ** (2 / 8))))


@pytest.mark.parametrize(
    "kwargs",
    [{"patch_size": 5}, {"dim": 30, "heads": 4}, {"pool": "max"}, {"pos_embedding": "rotary"}],
)
def test_invalid_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        EncoderConfig(**kwargs)
