"""Fixtures shared by every test module: the MNIST files, the shipped model, sample digits."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    from training.data import default_data_dir

    path = default_data_dir()
    if not (path / "t10k-images-idx3-ubyte.gz").exists() and not (path / "MNIST" / "raw").exists():
        pytest.fail(f"MNIST files not found at {path}: set MNIST_DIR (CI uses ../shared/data/mnist)")
    return path


@pytest.fixture(scope="session")
def shipped_model_path() -> Path:
    from model.checkpoint import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT.is_file(), f"shipped checkpoint missing: {DEFAULT_CHECKPOINT}"
    return DEFAULT_CHECKPOINT


@pytest.fixture(scope="session")
def digits_server(shipped_model_path):
    """A real digits server (`python -m server`) on a free loopback port, SERVING when yielded.

    `.target` is "127.0.0.1:PORT"; `.stop()` / `.start()` simulate an outage (same port);
    `.metrics_url`, `.log()`. See server/testing.py."""
    from testkit.server_process import ServerProcess

    server = ServerProcess(model=shipped_model_path, args=["--workers", "1"])
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    from training.data import load_split

    return load_split("test", mnist_dir, download=False)


@pytest.fixture(scope="session")
def digit_samples(mnist_test) -> dict[int, list]:
    """A few MNIST test images (28x28 uint8 numpy arrays) per digit, for end-to-end checks."""
    samples: dict[int, list] = {d: [] for d in range(10)}
    for img, label in zip(mnist_test.images[:500], mnist_test.labels[:500], strict=True):
        if len(samples[int(label)]) < 5:
            samples[int(label)].append(img.numpy())
    return samples


@pytest.fixture
def wandb_run_bytes() -> Callable[..., bytes]:
    """Reads a finished offline wandb run's `.wandb` file under a run directory.

    wandb's service writes that file on its own: `run.finish()` can return before the last records reach the disk
    (a run file once held only its 7-byte header when read straight away). So wait, up to `timeout` seconds, for
    every `needle` to appear, then return the bytes; the test's own asserts say what is missing."""

    def read(run_dir: Path, *needles: bytes, timeout: float = 60.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
            assert len(files) == 1, f"expected one offline wandb run under {run_dir}, found {files}"
            data = files[0].read_bytes()
            if all(n in data for n in needles) or time.monotonic() > deadline:
                return data
            time.sleep(0.2)

    return read
