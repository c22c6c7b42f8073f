"""The model behind the batcher: load a checkpoint on a device, warm it up, and turn one batch of
784-byte images into calibrated probabilities. Runs only on the single inference thread."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from training.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, resolve_device

log = logging.getLogger(__name__)

PIXELS_LEN = 28 * 28
Row = tuple[int, float, list[float]]  # (digit, confidence, probabilities)


class ModelRunner:
    """Owns the model. `predict` takes the concatenated bytes of n images (the batcher joins them)."""

    def __init__(self, path: Path | str = DEFAULT_CHECKPOINT, device: str = "auto", threads: int | None = None) -> None:
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            # One intra-op thread per spare core: the event loop and preprocessing workers need CPU too.
            torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))
        loaded = load_checkpoint(path, device=self.device)
        self.model = loaded.model.eval()
        self.version = loaded.version
        self.temperature = float(loaded.temperature)

    @torch.inference_mode()
    def predict(self, pixels: bytes, n: int) -> list[Row]:
        """Same arithmetic as the offline evaluation (uint8 -> float / 255), then softmax(logits / T)."""
        x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(n, 1, 28, 28)
        if self.device.type != "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.float().div_(255)
        probs = torch.softmax(self.model(x).float() / self.temperature, dim=1)
        conf, digit = probs.max(dim=1)
        return list(zip(digit.tolist(), conf.tolist(), probs.tolist(), strict=True))

    def warm_up(self, max_batch_size: int) -> None:
        """Run every power-of-two batch size once so the first real requests do not pay for allocation."""
        size = 1
        while True:
            self.predict(bytes(PIXELS_LEN * size), size)
            if size >= max_batch_size:
                break
            size = min(size * 2, max_batch_size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        log.debug("warmed up to batch %d", max_batch_size)
