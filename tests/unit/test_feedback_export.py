"""digits-feedback: stats and export from real SQLite files, read back by the training data loader."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from server.feedback_cli import in_holdout, main
from server.feedback_store import NOT_A_DIGIT, FeedbackRejected, FeedbackStore
from training.data import load_split


def image(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 784, dtype=np.uint8).tobytes()


@pytest.fixture
def two_replicas(tmp_path):
    """Two files, as two server replicas would write them: 40 distinct corrections, with duplicates
    (within and across files), 'not a digit' records and one image labelled two ways."""
    a, b = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    with FeedbackStore(a) as sa, FeedbackStore(b) as sb:
        for i in range(40):
            (sa if i % 2 else sb).add(image(i), predicted=(i + 1) % 10, correct=i % 10, model_version="v1", user="u1")
        for i in range(5):  # the same correction again: a retry, a copy on the other replica
            sb.add(image(i * 2 + 1), predicted=(i * 2 + 2) % 10, correct=(i * 2 + 1) % 10, model_version="v1")
            sa.add(image(i * 2 + 1), predicted=(i * 2 + 2) % 10, correct=(i * 2 + 1) % 10, model_version="v2")
        for i in range(3):
            sa.add(image(100 + i), predicted=4, correct=NOT_A_DIGIT, model_version="v2")
        sa.add(image(200), predicted=1, correct=1, model_version="v2")  # the model was right: a "right" tap
        sa.add(image(300), predicted=1, correct=7, model_version="v2")
        sb.add(image(300), predicted=1, correct=2, model_version="v2")  # the same image, another label
    return a, b


def test_export_is_read_back_by_load_split(two_replicas, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--db", str(two_replicas[0]), "--db", str(two_replicas[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "feedback-export.json").read_text())
    assert manifest["records"] == 40 + 10 + 3 + 1 + 2
    assert manifest["not_a_digit_left_out"] == 3 and "3 'not a digit'" in printed
    assert manifest["duplicates_dropped"] == 10
    assert manifest["conflicting_left_out"] == 2
    train = load_split("train", out, download=False, any_size=True)
    held = load_split("test", out, download=False, any_size=True)
    assert len(train) + len(held) == 41 == manifest["train"] + manifest["holdout"]
    assert 0 < len(held) < len(train)  # the default 20% hold-out, decided per image
    expected = {image(i): i % 10 for i in range(40)} | {image(200): 1}
    for split in (train, held):
        for img, label in zip(split.images, split.labels, strict=True):
            pixels = img.numpy().astype(np.uint8).tobytes()
            assert expected.pop(pixels) == int(label)  # each image once, with its label
    assert not expected
    assert all(in_holdout(img.numpy().tobytes(), 0.2) for img in held.images)
    # Gzip streams with no timestamp: the same records give the same bytes, and the manifest's checksums.
    first = {f.name: f.read_bytes() for f in out.glob("*.gz")}
    main(["export", "--db", str(two_replicas[0]), "--db", str(two_replicas[1]), "--out", str(out)])
    assert first == {f.name: f.read_bytes() for f in out.glob("*.gz")}
    with gzip.open(out / "train-labels-idx1-ubyte.gz") as fh:
        assert fh.read(8) == bytes.fromhex("00000801") + len(train).to_bytes(4, "big")


def test_no_holdout_and_empty_store(tmp_path):
    empty = tmp_path / "empty.sqlite3"
    FeedbackStore(empty).close()
    assert main(["export", "--db", str(empty), "--out", str(tmp_path / "e"), "--holdout", "0"]) == 0
    assert len(load_split("train", tmp_path / "e", download=False, any_size=True)) == 0
    with pytest.raises(SystemExit):
        main(["export", "--db", str(tmp_path / "missing.sqlite3"), "--out", str(tmp_path / "m")])
    with pytest.raises(SystemExit):
        main(["export", "--db", str(empty), "--out", str(tmp_path / "m"), "--holdout", "1.5"])


def test_stats(two_replicas, capsys):
    assert main(["stats", "--db", str(two_replicas[0]), "--db", str(two_replicas[1])]) == 0
    out = capsys.readouterr().out
    assert "56 records" in out
    assert "not a digit: 3" in out
    assert "v1: 45, 0.0% right" in out  # every v1 record was a correction of a wrong answer
    assert "v2: 11, 9.1% right" in out  # one "right" tap among 11
    assert "accuracy on all records: 1.8% (1/56)" in out


def test_store_refuses_bad_records(tmp_path):
    with FeedbackStore(tmp_path / "s.sqlite3") as store:
        for kwargs, reason in [
            ({"pixels": b"\x01" * 10}, "BAD_PIXELS"),
            ({"correct": 11}, "BAD_LABEL"),
            ({"predicted": -1}, "BAD_LABEL"),
            ({"user": "12345"}, "BAD_USER"),
        ]:
            with pytest.raises(FeedbackRejected) as info:
                store.add(**{"pixels": image(0), "predicted": 1, "correct": 2, **kwargs})
            assert info.value.reason == reason
        assert store.count() == 0
