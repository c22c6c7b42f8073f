"""MNIST from the standard IDX files, with a fixed validation split.

The files are read directly (gzip or plain) rather than through torchvision so that a machine
with no internet, given a directory of the four files, trains exactly like one that downloaded
them. torchvision's downloader is only the fallback when the files are missing.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.shape import IMAGE_SIZE

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
VAL_SIZE = 5000
SPLIT_SEED = 20240917  # fixed: the validation split must not move with the training seed

REPO_ROOT = Path(__file__).resolve().parent.parent


class MnistFileError(RuntimeError):
    """A missing, truncated or malformed MNIST file; the message names the path."""


@dataclass
class Split:
    images: torch.Tensor  # (n, 28, 28) uint8, 0 = background, 255 = ink
    labels: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> Split:
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n])


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """`--data-dir` and `--no-download`, the same for every command that reads MNIST."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the MNIST IDX files (default: $MNIST_DIR, data/mnist, or ../shared/data/mnist)",
    )
    parser.add_argument("--no-download", action="store_true", help="never download MNIST when files are missing")


def default_data_dir() -> Path:
    """`$MNIST_DIR`, else a `data/mnist` folder of the checkout, else the team's shared copy."""
    env = os.environ.get("MNIST_DIR")
    if env:
        return Path(env)
    for candidate in (REPO_ROOT / "data" / "mnist", REPO_ROOT.parent / "shared" / "data" / "mnist"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT / "data" / "mnist"


def _find(data_dir: Path, stem: str) -> Path | None:
    for base in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (base / name).is_file():
                return base / name
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise MnistFileError(f"{path}: cannot read MNIST file ({exc})") from exc


def read_idx(path: Path, magic: int, expected_count: int | None = None) -> np.ndarray:
    """Parse one IDX file, checking magic number, dimensions and length before trusting it."""
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistFileError(f"{path}: file is {len(raw)} bytes, too short for an IDX header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise MnistFileError(f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if expected_count is not None and dims[0] != expected_count:
        raise MnistFileError(f"{path}: holds {dims[0]} items, expected {expected_count}")
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistFileError(f"{path}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise MnistFileError(f"{path}: truncated or padded: {len(raw) - header} data bytes, expected {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _download(data_dir: Path) -> None:
    """Fetch MNIST through torchvision into `data_dir/MNIST/raw` (only used when files are missing)."""
    from torchvision.datasets import MNIST

    data_dir.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        MNIST(str(data_dir), train=train, download=True)


def load_split(
    name: str, data_dir: Path | str | None = None, download: bool = True, *, any_size: bool = False
) -> Split:
    """Load "train" or "test" from `data_dir` (see `default_data_dir`).

    `any_size`: the folder holds MNIST-format files of any length (e.g. `digits-feedback export`'s
    corrections), not MNIST itself: the 60,000 / 10,000 counts are not required."""
    if name not in FILES:
        raise ValueError(f"unknown MNIST split {name!r}; expected one of {sorted(FILES)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    image_stem, label_stem, count = FILES[name]
    paths = [_find(data_dir, image_stem), _find(data_dir, label_stem)]
    if None in paths and download:
        try:
            _download(data_dir)
        except Exception as exc:  # no internet, no torchvision mirror: say what is missing
            raise MnistFileError(
                f"{data_dir}: MNIST files {image_stem}[.gz] / {label_stem}[.gz] are missing and could not be "
                f"downloaded ({exc}). Pass --data-dir or set MNIST_DIR to a folder holding them."
            ) from exc
        paths = [_find(data_dir, image_stem), _find(data_dir, label_stem)]
    if None in paths:
        missing = image_stem if paths[0] is None else label_stem
        raise MnistFileError(f"{data_dir / missing}[.gz]: MNIST file not found (pass --data-dir or set MNIST_DIR)")
    images = read_idx(paths[0], IMAGES_MAGIC, None if any_size else count)
    labels = read_idx(paths[1], LABELS_MAGIC, None if any_size else count)
    if len(images) != len(labels):
        raise MnistFileError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise MnistFileError(f"{paths[1]}: labels outside 0..9")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def train_val_split(train: Split, val_size: int = VAL_SIZE) -> tuple[Split, Split]:
    """A fixed, seeded carve-out of the training set used for model selection and calibration."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(len(train), generator=g)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return (
        Split(train.images[train_idx], train.labels[train_idx]),
        Split(train.images[val_idx], train.labels[val_idx]),
    )
