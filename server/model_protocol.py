"""What the server process and its model process say to each other, in one place (no torch here).

The parent (`server/inference_process.py`) starts a child with a `ModelSettings`; the child builds
a `ModelRunner` (`server/model_runner.py`) from it and reports `ModelInfo`. Then, per batch, the
parent sends the joined 784-byte images and the child answers with one reply: `encode_reply` packs
the runner's arrays, `rows` turns them into the batcher's per-request rows. Both modules import
this one and never each other.

To add a message (a model reload, say), add a kind here and handle it in the child's loop; the
batch message stays a bare byte string so the hot path costs no extra framing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.shape import SERVED_COLUMNS

# (digit, confidence, probabilities) for one request: the served row (model.shape.SERVED_COLUMNS): the 10
# calibrated digit probabilities, then P(not a digit) and P(several digits), which Read weighs its cuts by;
# only the first 10 go on the wire. For an image the not-a-digit gate refuses, digit is
# model.shape.NOT_A_DIGIT_INDEX and confidence P(not a digit); for one the several-digits head flags (and
# the gate passes), SEVERAL_DIGITS_INDEX and P(several digits).
Row = tuple[int, float, list[float]]

OK, ERROR = b"\x00", b"\x01"  # first byte of a reply

# A batch of 64 takes about 11 ms on the 2-core development machine (digits-eval's 5,697 images/s,
# README "Measured"); a model process that has not answered within this is hung (or the machine is
# too loaded to serve), and is replaced (`--model-timeout`).
DEFAULT_BATCH_TIMEOUT = 4.0


@dataclass(frozen=True)
class ModelSettings:
    """Everything the model process needs to build its runner; sent to the child once, at start."""

    path: Path | str | None = None  # None: model.checkpoint.DEFAULT_CHECKPOINT
    device: str = "auto"  # "auto", "cpu", "cuda"
    threads: int | None = None  # CPU intra-op threads; None: cores - 1
    graph: bool = True  # a frozen TorchScript graph when its logits equal eager's
    runtime: str = ""  # "onnx" / "onnx-int8": server/runtimes.py (falls back to `graph`); "": `graph` decides
    warm_to: int = 64  # warm every power-of-two batch size up to this one
    # Load at the lowest CPU priority: another model process is serving meanwhile (a reload), and the
    # seconds of importing torch and exporting the graph must not slow its answers down.
    background: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What the child reports once its model is loaded and warm."""

    version: str
    device: str
    runtime: str  # "onnx", "onnx-int8", "torchscript" or "eager"
    threads: int | None  # intra-op CPU threads; None on an accelerator


def rows(digits: np.ndarray, probs: np.ndarray) -> list[Row]:
    """The one place arrays become per-request rows: digits (n,) and probabilities (n, SERVED_COLUMNS)."""
    n = len(digits)
    conf = probs[np.arange(n), digits]
    return list(zip(digits.tolist(), conf.tolist(), probs.tolist(), strict=True))


def encode_reply(digits: np.ndarray, probs: np.ndarray) -> bytes:
    """A batch's answer as bytes for the pipe: OK, n digit bytes, n x 11 float32."""
    return OK + digits.astype(np.uint8).tobytes() + probs.astype(np.float32).tobytes()


def encode_error(exc: BaseException) -> bytes:
    return ERROR + f"{type(exc).__name__}: {exc}".encode()


def decode_reply(reply: bytes, n: int) -> list[Row]:
    """The rows of an OK reply; a RuntimeError with the child's message for an ERROR reply."""
    if reply[:1] == ERROR:
        raise RuntimeError(f"inference failed: {reply[1:].decode(errors='replace')}")
    digits = np.frombuffer(reply, dtype=np.uint8, count=n, offset=1)
    probs = np.frombuffer(reply, dtype=np.float32, offset=1 + n).reshape(n, SERVED_COLUMNS)
    return rows(digits, probs)
