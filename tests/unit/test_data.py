"""The IDX loader on the shared MNIST files and on broken ones."""

import gzip
import struct

import pytest
import torch

from training.data import IMAGES_MAGIC, MnistFileError, load_split, read_idx, train_val_split


def test_loads_the_shared_files(mnist_dir):
    test = load_split("test", mnist_dir, download=False)
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == torch.uint8
    assert test.labels.shape == (10000,) and int(test.labels.min()) == 0 and int(test.labels.max()) == 9
    # the first MNIST test digit is a 7, a well-known fact of the original file
    assert int(test.labels[0]) == 7
    train = load_split("train", mnist_dir, download=False)
    assert len(train) == 60000
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 0.001


def test_validation_split_is_fixed_and_disjoint(mnist_dir):
    train = load_split("train", mnist_dir, download=False)
    a_train, a_val = train_val_split(train)
    b_train, b_val = train_val_split(train)
    assert len(a_val) == 5000 and len(a_train) == 55000
    assert torch.equal(a_val.labels, b_val.labels) and torch.equal(a_val.images, b_val.images)
    # no validation image is also a training image (compare by exact bytes)
    train_keys = {img.numpy().tobytes() for img in a_train.images[:20000]}
    assert not any(img.numpy().tobytes() in train_keys for img in a_val.images[:500])


def _write_idx(path, magic, dims, payload, compress=True):
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def test_reads_plain_idx(tmp_path):
    path = tmp_path / "images"
    _write_idx(path, IMAGES_MAGIC, (2, 28, 28), bytes(range(256)) * 6 + bytes(32), compress=False)
    assert read_idx(path, IMAGES_MAGIC).shape == (2, 28, 28)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("truncated", "truncated"),
        ("bad-magic", "bad magic"),
        ("wrong-count", "expected 10000"),
        ("not-gzip", "cannot read"),
        ("empty", "too short"),
    ],
)
def test_corrupt_files_name_the_path(tmp_path, case, expect):
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, 0x801, (10000,), bytes(10000))
    if case == "truncated":
        _write_idx(images, IMAGES_MAGIC, (10000, 28, 28), bytes(1000))
    elif case == "bad-magic":
        _write_idx(images, 0x1234, (10000, 28, 28), bytes(10))
    elif case == "wrong-count":
        _write_idx(images, IMAGES_MAGIC, (3, 28, 28), bytes(3 * 784))
    elif case == "not-gzip":
        images.write_bytes(b"this is not gzip at all")
    else:
        _write_idx(images, IMAGES_MAGIC, (), b"")
        images.write_bytes(gzip.compress(b""))
    with pytest.raises(MnistFileError) as err:
        load_split("test", tmp_path, download=False)
    assert str(images) in str(err.value) and expect in str(err.value)


def test_missing_files_say_where_to_point(tmp_path):
    with pytest.raises(MnistFileError, match="not found.*--data-dir"):
        load_split("test", tmp_path, download=False)
