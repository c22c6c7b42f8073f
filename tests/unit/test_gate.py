"""The not-a-digit gate: its place in the checkpoint, the served columns, the model process's rows,
Read's choice, `digits-train-gate`, and what the shipped gate refuses."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, tensors_digest
from model.encoder import DigitEncoder, EncoderConfig
from model.gate import NotADigitGate, Served
from model.shape import NOT_A_DIGIT_INDEX, SERVED_COLUMNS, SEVERAL_DIGITS_INDEX
from server import reading
from server.model_protocol import decode_reply, encode_reply
from server.model_runner import ModelRunner
from training import gate as gate_training
from training import outliers

SMALL = EncoderConfig(dim=32, depth=1, heads=2)


def gated(threshold: float = 0.9) -> tuple[DigitEncoder, NotADigitGate]:
    torch.manual_seed(0)
    encoder = DigitEncoder(SMALL).eval()
    gate = NotADigitGate(SMALL.dim, hidden=16).eval()
    gate.threshold = threshold
    gate.encoder_sha256 = tensors_digest(encoder.state_dict())
    return encoder, gate


def test_a_gate_is_saved_with_its_encoder_and_served_as_an_eleventh_column(tmp_path):
    encoder, gate = gated(0.8)
    path = tmp_path / "gated.safetensors"
    save_checkpoint(path, encoder, 0.7, gate=gate)
    loaded = load_checkpoint(path)
    assert loaded.gate is not None and loaded.gate.threshold == pytest.approx(0.8)
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = Served(encoder, 0.7, gate)(images), loaded.served()(images)
    assert got.shape == (5, SERVED_COLUMNS) and torch.allclose(got, want)
    assert torch.allclose(got[:, :NOT_A_DIGIT_INDEX].sum(1), torch.ones(5))
    assert torch.allclose(got[:, :NOT_A_DIGIT_INDEX], torch.softmax(encoder(images) / 0.7, 1))  # digits untouched
    assert ((got[:, NOT_A_DIGIT_INDEX] > 0) & (got[:, NOT_A_DIGIT_INDEX] < 1)).all()


def test_a_gate_for_other_weights_is_not_saved_and_a_checkpoint_without_one_serves_zero(tmp_path, caplog):
    encoder, gate = gated()
    with torch.no_grad():
        encoder.head.bias.add_(0.1)  # a fine-tune moved the weights the gate was trained on
    path = tmp_path / "tuned.safetensors"
    with caplog.at_level(logging.WARNING, logger="model.checkpoint"):
        save_checkpoint(path, encoder, 1.0, gate=gate)
    assert "not saving the not-a-digit gate" in caplog.text
    loaded = load_checkpoint(path)
    assert loaded.gate is None and "gate" not in loaded.metadata
    with torch.no_grad():
        assert (loaded.served()(torch.rand(3, 1, 28, 28))[:, NOT_A_DIGIT_INDEX] == 0).all()


def test_a_gate_bound_to_other_weights_is_refused_on_load(tmp_path):
    encoder, gate = gated()
    path = tmp_path / "gated.safetensors"
    save_checkpoint(path, encoder, 1.0, gate=gate)
    with safe_open(str(path), framework="pt") as fh:
        meta, state = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    described = json.loads(meta["gate"])
    described["encoder_sha256"] = "0" * 64
    save_file(state, str(path), metadata={**meta, "gate": json.dumps(described)})  # tensors (and their sha256) intact
    with pytest.raises(CheckpointError, match="other encoder weights"):
        load_checkpoint(path)
    save_file(state, str(path), metadata={k: v for k, v in meta.items() if k != "gate"})
    with pytest.raises(CheckpointError, match="without their description"):
        load_checkpoint(path)


def test_the_model_process_answers_not_a_digit_above_the_threshold(tmp_path):
    encoder, gate = gated()
    images = (np.random.default_rng(0).random((16, 784)) * 255).astype(np.uint8)
    with torch.no_grad():
        scores = Served(encoder, 1.0, gate)(torch.from_numpy(images).float().div(255).view(-1, 1, 28, 28))
    gate.threshold = float(np.median(scores[:, NOT_A_DIGIT_INDEX].numpy()))  # half of them refused
    path = tmp_path / "gated.safetensors"
    save_checkpoint(path, encoder, 1.0, gate=gate)
    digits, probs = ModelRunner(path, "cpu", threads=1).predict_arrays(images.tobytes(), 16)
    refused = probs[:, NOT_A_DIGIT_INDEX] >= gate.threshold
    assert 0 < refused.sum() < 16
    assert (digits[refused] == NOT_A_DIGIT_INDEX).all() and (digits[~refused] < NOT_A_DIGIT_INDEX).all()
    rows = decode_reply(encode_reply(digits, probs), 16)  # as the rows cross the pipe to the batcher
    for (digit, confidence, probabilities), p, r in zip(rows, probs, refused, strict=True):
        assert len(probabilities) == SERVED_COLUMNS  # the whole served row; the wire gets the first 10
        assert confidence == pytest.approx(p[NOT_A_DIGIT_INDEX] if r else p[:10].max())
        assert (digit == NOT_A_DIGIT_INDEX) == r


def test_the_model_process_marks_several_digits_and_the_gate_comes_first(tmp_path):
    encoder, gate = gated()
    several = NotADigitGate(SMALL.dim, hidden=8).eval()
    several.encoder_sha256 = gate.encoder_sha256
    images = (np.random.default_rng(1).random((32, 784)) * 255).astype(np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(images).float().div(255).view(-1, 1, 28, 28)
        scores = Served(encoder, 1.0, gate, several)(x)
    gate.threshold = float(np.quantile(scores[:, NOT_A_DIGIT_INDEX].numpy(), 0.7))
    several.threshold = float(np.median(scores[:, SEVERAL_DIGITS_INDEX].numpy()))
    path = tmp_path / "both.safetensors"
    save_checkpoint(path, encoder, 1.0, gate=gate, several=several)
    digits, probs = ModelRunner(path, "cpu", threads=1).predict_arrays(images.tobytes(), 32)
    refused = probs[:, NOT_A_DIGIT_INDEX] >= gate.threshold
    flagged = (probs[:, SEVERAL_DIGITS_INDEX] >= several.threshold) & ~refused
    assert refused.any() and flagged.any() and (~refused & ~flagged).any()
    assert (digits[refused] == NOT_A_DIGIT_INDEX).all()
    assert (digits[flagged] == SEVERAL_DIGITS_INDEX).all()
    assert (digits[~refused & ~flagged] < NOT_A_DIGIT_INDEX).all()
    # Read takes a flagged glyph as its likeliest digit, not as refused: its cut alternatives decide
    row = reading.as_digit((SEVERAL_DIGITS_INDEX, 0.99, probs[flagged][0].tolist()))
    assert row[1] is False and row[0][0] == int(probs[flagged][0][:10].argmax())


def test_read_refuses_only_when_most_glyphs_are_no_digit():
    box = (0, 0, 10, 10)
    slots = [("", [[(px, box)]], [1.0]) for px in (b"a", b"b", b"c")]
    probs = [0.0] * 10
    probs[4], probs[1] = 0.9, 0.1
    letter, four = (NOT_A_DIGIT_INDEX, 0.99, probs), (4, 0.9, probs)
    assert reading.choose(slots[:2], [letter, letter]).refused
    assert reading.choose(slots, [letter, four, letter]).refused  # a word with one glyph like a digit
    mixed = reading.choose(slots[:2], [four, letter])
    assert not mixed.refused and mixed.text == "44"  # the refused glyph stays, as its likeliest digit
    assert mixed.digits[1][2][1] == pytest.approx(0.9 * 0.01)  # ... with P(digit) * P(it is a digit at all)
    assert mixed.raw_confidence == pytest.approx(0.9 * 0.9 * 0.01)
    assert not reading.choose(slots, [four, letter, four]).refused


def test_a_lone_digit_keeps_its_confidence_where_a_number_is_pulled_down():
    """Readings of one digit and of several are calibrated by separate maps (server/reading.py): the same
    raw product is a clear lone digit, or several digits each a little doubtful."""
    probs = [0.0] * 10
    probs[7] = 0.997
    seven = (b"7", (0, 0, 10, 10), (7, 0.997, probs))
    one, two = reading.Chosen("7", 0.997, [seven]), reading.Chosen("77", 0.997, [seven, seven])
    assert one.confidence == pytest.approx(reading.calibrated(0.997, reading.CALIBRATION_ONE))
    assert two.confidence == pytest.approx(reading.calibrated(0.997, reading.CALIBRATION))
    assert one.confidence > 0.98 > two.confidence
    assert reading.response(one, "v").confidence == pytest.approx(one.confidence)


def test_a_several_digits_head_is_saved_beside_the_gate_and_served_as_the_last_column(tmp_path, caplog):
    encoder, gate = gated(0.8)
    several = NotADigitGate(SMALL.dim, hidden=8).eval()
    several.threshold, several.encoder_sha256 = 0.7, gate.encoder_sha256
    path = tmp_path / "both.safetensors"
    save_checkpoint(path, encoder, 0.7, gate=gate, several=several)
    loaded = load_checkpoint(path)
    assert loaded.several is not None and loaded.several.threshold == pytest.approx(0.7)
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = loaded.served()(images)
        assert torch.allclose(got, Served(encoder, 0.7, gate, several)(images))
        assert torch.allclose(got[:, :NOT_A_DIGIT_INDEX], torch.softmax(encoder(images) / 0.7, 1))  # digits untouched
        assert ((got[:, SEVERAL_DIGITS_INDEX] > 0) & (got[:, SEVERAL_DIGITS_INDEX] < 1)).all()
        # without the head the column is 0, and the gate's column is the same as with it
        alone = Served(encoder, 0.7, gate)(images)
    assert (alone[:, SEVERAL_DIGITS_INDEX] == 0).all()
    assert torch.allclose(alone[:, :SEVERAL_DIGITS_INDEX], got[:, :SEVERAL_DIGITS_INDEX])
    with torch.no_grad():
        encoder.head.bias.add_(0.1)  # a fine-tune: both heads are dropped, each with its warning
    with caplog.at_level(logging.WARNING, logger="model.checkpoint"):
        save_checkpoint(path, encoder, 1.0, gate=gate, several=several)
    assert "not saving the several-digits head" in caplog.text and "not saving the not-a-digit gate" in caplog.text
    assert load_checkpoint(path).several is None


def test_read_cuts_a_glyph_that_the_several_digits_head_calls_two_digits():
    box = (0, 0, 10, 10)

    def row(digit: int, p: float, not_digit: float = 0.0, several: float = 0.0):
        probs = [(1.0 - p) / 9] * 10
        probs[digit] = p
        return digit, p, probs + [not_digit, several]

    # one glyph: read whole (a confident "8"), or cut into "1" and "3"; the whole is favoured by width
    slots = [("", [[(b"whole", box)], [(b"a", box), (b"b", box)]], [0.0, -2.0])]
    merged = [row(8, 0.99, several=0.98), row(1, 0.97), row(3, 0.95)]
    chosen = reading.choose(slots, merged)
    assert chosen.text == "13"
    assert chosen.digits[0][2][2][:10] == merged[1][2][:10]
    one = [row(8, 0.99, several=0.01), row(1, 0.97), row(3, 0.95)]
    assert reading.choose(slots, one).text == "8"  # a real 8 stays whole
    # without the head's column (an older model) the whole wins, as before
    old = [(d, c, p[:10]) for d, c, p in merged]
    assert reading.choose(slots, old).text == "8"


def test_a_correction_picks_the_cut_that_gives_the_users_digits():
    """Read with `expected` (server/reading.choose_expected): the pieces come from the cut that reads the
    user's digits best, whatever the model's own likeliest reading; a stray glyph can be left out; a
    count no cut can give is None."""
    box = (0, 0, 10, 10)

    def row(digit: int, p: float, not_digit: float = 0.0, several: float = 0.0):
        probs = [(1.0 - p) / 9] * 10
        probs[digit] = p
        return digit, p, probs + [not_digit, several]

    glyph = ("", [[(b"whole", box)], [(b"left", box), (b"right", box)]], [0.0, -2.0])
    rows = [row(7, 0.99), row(1, 0.6), row(2, 0.5)]  # read whole, a confident "7"
    assert reading.choose([glyph], rows).text == "7"
    cut = reading.choose_expected([glyph], rows, "17")
    assert [px for px, _, _ in cut.digits] == [b"left", b"right"]
    assert cut.text == "12" and [r[0] for _, _, r in cut.digits] == [1, 2]  # what the model reads in each piece
    assert [px for px, _, _ in reading.choose_expected([glyph], rows, "7").digits] == [b"whole"]
    assert reading.choose_expected([glyph], rows, "123") is None  # no cut gives three digits
    assert reading.choose_expected([glyph], rows, " ") is None

    # a second glyph on a new line, and a speck the gate calls no digit: "4" is matched without the speck
    line = ("\n", [[(b"four", box)]], [0.0])
    speck = (" ", [[(b"speck", box)]], [0.0])
    rows3 = [*rows, row(4, 0.98), row(1, 0.9, not_digit=0.95)]
    both = reading.choose_expected([glyph, line, speck], rows3, "7 4")
    assert both.text == "7\n4" and [px for px, _, _ in both.digits] == [b"whole", b"four"]
    # a line break of a left-out glyph is kept between the digits around it
    first = reading.choose_expected([glyph, ("\n", [[(b"speck", box)]], [0.0]), (" ", [[(b"four", box)]], [0.0])],
                                    [*rows, row(1, 0.9, not_digit=0.95), row(4, 0.98)], "74")  # fmt: skip
    assert first.text == "7\n4"


def test_choose_threshold_keeps_within_the_budget():
    scores = torch.tensor([0.1, 0.2, 0.95, 0.99, 0.999, 0.3, 0.97, 0.5, 0.6, 0.7])
    correct = torch.tensor([True] * 9 + [False])
    th = gate_training.choose_threshold(scores, correct, max_loss=0.1)  # 1 of 10 may go
    assert ((scores >= th) & correct).sum() <= 1 and th > 0.99
    assert gate_training.choose_threshold(scores, correct, max_loss=0.0) > 0.999


def test_digits_train_gate_adds_both_heads_and_leaves_the_digits_alone(
    tmp_path, shipped_model_path, mnist_dir, capsys, monkeypatch, wandb_run_bytes
):
    out = tmp_path / "gated.safetensors"
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["--checkpoint", str(shipped_model_path), "--out", str(out), "--data-dir", str(mnist_dir), "--no-download",
            "--digits", "3000", "--outliers", "1500", "--rendered", "30", "--epochs", "3", "--heldout", "200",
            "--pairs", "400", "--pairs-drawn", "9", "--workers", "1", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    assert gate_training.main(args) == 0
    printed = capsys.readouterr().out
    assert "MNIST test: accuracy" in printed and "held-out non-digits" in printed
    assert "touching pairs of test digits flagged" in printed
    keys = (b"gate/train_loss", b"gate/threshold", b"several/train_loss", b"gate/several_threshold")
    logged = wandb_run_bytes(tmp_path / "run", *keys)  # the offline Weights & Biases run
    for key in keys:
        assert key in logged, key
    before, after = load_checkpoint(shipped_model_path), load_checkpoint(out)
    assert after.gate is not None and 0.5 <= after.gate.threshold < 1.0 and "+gate-" in after.version
    assert after.several is not None and 0.5 <= after.several.threshold < 1.0
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(after.model(images), before.model(images))  # the encoder is exactly the same
    assert json.loads(after.metadata["gate_args"])["digits"] == "3000"
    assert after.metadata["test_accuracy"] == before.metadata["test_accuracy"]  # the model card's figures carried


def test_the_shipped_gate_refuses_non_digits_and_almost_no_digits(shipped_model_path, mnist_test):
    loaded = load_checkpoint(shipped_model_path)
    assert loaded.gate is not None, "the shipped checkpoint carries a not-a-digit gate"
    served = loaded.served()
    others = np.stack([o.image for o in outliers.generate(300, "heldout", seed=3)])
    with torch.no_grad():
        p_other = served(torch.from_numpy(others).float().div(255).unsqueeze(1))[:, NOT_A_DIGIT_INDEX]
        out = torch.cat([served(x.float().div(255).unsqueeze(1)) for x in mnist_test.images.split(2000)])
    refused = out[:, NOT_A_DIGIT_INDEX] >= loaded.gate.threshold
    right = out[:, :NOT_A_DIGIT_INDEX].argmax(1) == mnist_test.labels
    assert (p_other >= loaded.gate.threshold).float().mean() >= 0.75, "held-out letters, symbols and doodles"
    assert (right & ~refused).float().mean() >= 0.9938, "MNIST test, refusals counted as errors"
